"""The Wilson interval against SciPy's (an independent implementation)."""

from __future__ import annotations

import pytest

from clipface.eval.metrics.intervals import wilson_interval

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (43, 80), (1, 3), (29, 30), (0, 1), (500, 1000)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
