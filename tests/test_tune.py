"""Tuning nprobe: the fewest lists whose measured recall reaches the target, recorded with what was measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipface.search import tune
from clipface.search.exact import exact_search
from clipface.search.faiss_backend import set_search_params

pytest.importorskip("faiss")


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 50, 24)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, 24)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def store(tmp_path: Path):
    from clipface.search.vectors import VectorStore

    x = _clustered(12_000, 0)
    params = {"factory": "IVF64,PQ12x4fs", "nlist": 64, "nprobe": 1, "k_factor": 8}
    st = VectorStore.create(tmp_path, "ivfpqfs", 24, params, x)
    st.append(x)
    return st


def _recall(st, nprobe: int, rows: np.ndarray, k_factor: int = 8) -> float:
    """recall@10 at ``nprobe`` and ``k_factor``, computed here without the tuner (own row left out)."""
    params = {**st.params, "nprobe": nprobe, "k_factor": k_factor}
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


def test_the_fewest_candidates_that_keep_the_target_are_chosen_and_retuning_starts_from_the_own(store):
    params = tune.tune_nprobe(store, target=0.95, queries=100)
    tuned, nprobe = params["tuned"], params["nprobe"]
    factors = tuned["k_factor_recall_at_10"]
    assert tuned["k_factor_from"] == 8 and tuned["recall_at_10"][str(nprobe)] >= 0.95
    assert list(factors) == ["4", "6"]  # on these vectors 4 k falls short, so 6 k is tried
    assert factors["4"] < 0.95 <= factors["6"] and params["k_factor"] == 6
    assert factors["6"] >= tuned["recall_at_10"][str(nprobe)] - tune.K_FACTOR_MAX_LOSS
    rows = np.sort(np.random.default_rng(0).choice(12_000, 100, replace=False))
    for f, r in factors.items():  # each measured as the test measures it
        assert _recall(store, nprobe, rows, int(f)) == pytest.approx(r, abs=1e-4)
    store.params = {**params, "k_factor": 4}  # a later tuning measures the lists at the index's own 8 again
    again = tune.tune_nprobe(store, target=0.95, queries=100)
    assert again["tuned"]["k_factor_from"] == 8 and again["tuned"]["recall_at_10"] == tuned["recall_at_10"]
    assert tune.tune_nprobe(store, target=1.01, queries=50)["k_factor"] == 8  # unreachable: nothing fewer tried


def test_fewer_candidates_may_not_lose_more_than_the_allowed_recall(store):
    params = tune.tune_nprobe(store, target=0.9, queries=100)
    reached, factors = params["tuned"]["recall_at_10"][str(params["nprobe"])], params["tuned"]["k_factor_recall_at_10"]
    assert 0.9 <= factors["4"] < reached - tune.K_FACTOR_MAX_LOSS  # above the target, but too far below 8 k
    assert params["k_factor"] == 6 and factors["6"] >= reached - tune.K_FACTOR_MAX_LOSS


def test_an_unreachable_target_probes_every_list_and_growth_retunes(store):
    params = tune.tune_nprobe(store, target=1.01, queries=50)
    assert params["nprobe"] == 64 and list(params["tuned"]["recall_at_10"])[-1] == "64"
    assert params["tuned"]["recall_at_10"]["64"] > params["tuned"]["recall_at_10"]["8"]
    store.append(_clustered(12_000, 1))  # doubled: measured again at the next write
    assert tune.needs_tuning(store)


def test_exact_and_small_indexes_are_not_tuned(tmp_path: Path):
    from clipface.search.vectors import VectorStore

    x = _clustered(5_000, 2)
    (tmp_path / "f").mkdir()
    (tmp_path / "s").mkdir()
    flat = VectorStore.create(tmp_path / "f", "flat", 24, {}, x)
    flat.append(x)
    small = VectorStore.create(tmp_path / "s", "ivfpqfs", 24, {"factory": "IVF4,PQ12x4fs", "nprobe": 1}, x)
    small.append(x[:50])
    assert not tune.needs_tuning(flat) and not tune.needs_tuning(small)
