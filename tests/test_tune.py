"""Tuning nprobe: the fewest lists whose measured recall reaches the target, recorded with what was measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipface.index.ann import tune
from clipface.index.ann.exact import exact_search
from clipface.index.ann.faiss_backend import set_search_params

pytest.importorskip("faiss")


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 50, 24)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, 24)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def store(tmp_path: Path):
    from clipface.index.vectors import VectorStore

    x = _clustered(12_000, 0)
    params = {"factory": "IVF64,PQ12x4fs", "nlist": 64, "nprobe": 1, "k_factor": 8}
    st = VectorStore.create(tmp_path, "ivfpqfs", 24, params, x)
    st.append(x)
    return st


def _recall(st, nprobe: int, rows: np.ndarray) -> float:
    """recall@10 at ``nprobe``, computed here without the tuner (own row left out)."""
    params = {**st.params, "nprobe": nprobe}
    set_search_params(st.ann, params)
    st.params = params
    q = np.asarray(st.vectors[rows])
    _, truth = exact_search(st.vectors, q, 11)
    _, got = st.search(q, 11)
    hits = [len({*t[t != r][:10]} & {*g[g != r][:10]}) / 10 for t, g, r in zip(truth, got, rows)]
    return float(np.mean(hits))


def test_the_fewest_lists_that_reach_the_target_are_chosen(store):
    assert tune.needs_tuning(store)
    params = tune.tune_nprobe(store, target=0.98, queries=100)
    measured = params["tuned"]["recall_at_10"]
    tried = [int(p) for p in measured]
    assert tried == [p for p in tune.LADDER if p < 64][: len(tried)]  # the ladder, fewest first, until reached
    assert params["nprobe"] == tried[-1] and measured[str(tried[-1])] >= 0.98 and len(tried) >= 2
    assert all(r < 0.98 for r in list(measured.values())[:-1])
    assert params["tuned"]["count"] == 12_000 and params["tuned"]["queries"] == 100
    rows = np.sort(np.random.default_rng(0).choice(12_000, 100, replace=False))  # the tuner's seeded sample
    assert _recall(store, params["nprobe"], rows) == pytest.approx(measured[str(params["nprobe"])], abs=1e-4)
    assert not tune.needs_tuning(store)


def test_an_unreachable_target_probes_every_list_and_growth_retunes(store):
    params = tune.tune_nprobe(store, target=1.01, queries=50)
    assert params["nprobe"] == 64 and list(params["tuned"]["recall_at_10"])[-1] == "64"
    assert params["tuned"]["recall_at_10"]["64"] > params["tuned"]["recall_at_10"]["8"]
    store.append(_clustered(12_000, 1))  # doubled: measured again at the next write
    assert tune.needs_tuning(store)


def test_exact_and_small_indexes_are_not_tuned(tmp_path: Path):
    from clipface.index.vectors import VectorStore

    x = _clustered(5_000, 2)
    (tmp_path / "f").mkdir()
    (tmp_path / "s").mkdir()
    flat = VectorStore.create(tmp_path / "f", "flat", 24, {}, x)
    flat.append(x)
    small = VectorStore.create(tmp_path / "s", "ivfpqfs", 24, {"factory": "IVF4,PQ12x4fs", "nprobe": 1}, x)
    small.append(x[:50])
    assert not tune.needs_tuning(flat) and not tune.needs_tuning(small)
