"""Exact search over (memory-mapped) vectors: the same answer as a full sort, whatever the blocks and workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipface.index.ann import exact
from clipface.index.ann.exact import exact_search, rerank, top_k


def brute(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ x.T.astype(np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize(
    "n, m, k, threads", [(5000, 7, 10, 1), (5000, 7, 10, 3), (40, 3, 50, 2), (3000, 1, 1, 2), (200, 64, 5, 3)]
)
def test_exact_search_equals_a_full_sort(n, m, k, threads, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(exact, "BLOCK_ROWS", 256)  # many blocks, shared by the workers
    rng = np.random.default_rng(n + m)
    x = rng.standard_normal((n, 32)).astype(np.float32)
    q = rng.standard_normal((m, 32)).astype(np.float32)
    x.tofile(tmp_path / "v.f32")
    mapped = np.memmap(tmp_path / "v.f32", dtype=np.float32, mode="r", shape=x.shape)
    scores, ids = exact_search(mapped, q, k, threads=threads)
    want_s, want_i = brute(x, q, min(k, n))
    np.testing.assert_array_equal(ids[:, : min(k, n)], want_i)
    np.testing.assert_allclose(scores[:, : min(k, n)], want_s, rtol=1e-5, atol=1e-5)
    if k > n:  # missing places as FAISS fills them
        assert (ids[:, n:] == -1).all() and np.isneginf(scores[:, n:]).all()


def test_ties_are_answered_the_same_every_time_and_empty_inputs():
    x = np.ones((6, 4), np.float32)
    _, ids = exact_search(x, np.ones((2, 4), np.float32), 3)
    assert len(set(ids[0])) == 3 and ids.tolist() == exact_search(x, np.ones((2, 4), np.float32), 3)[1].tolist()
    s, i = exact_search(np.zeros((0, 4), np.float32), np.ones((2, 4), np.float32), 3)
    assert s.shape == i.shape == (2, 3) and (i == -1).all()
    assert exact_search(x, np.zeros((0, 4), np.float32), 3)[0].shape == (0, 3)
    s, i = top_k(np.array([[0.5, 0.9, 0.9]], np.float32), np.array([[7, 9, 8]]), 2)
    assert i.tolist() == [[8, 9]] and s.tolist() == [[pytest.approx(0.9), pytest.approx(0.9)]]


def test_rerank_scores_candidates_exactly_and_skips_missing_ones():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    cand = np.array([[5, 17, -1, 42], [-1, -1, -1, 3]])
    s, i = rerank(x, q, cand, 3)
    full = q @ x.T
    first = sorted([5, 17, 42], key=lambda j: -full[0, j])
    assert i[0].tolist() == first and np.allclose(s[0], full[0, first], atol=1e-5)
    assert i[1].tolist() == [3, -1, -1] and np.isneginf(s[1, 1:]).all()


@pytest.mark.parametrize("threads", [1, 3])
def test_rerank_in_parallel_equals_a_full_sort_of_the_candidates(threads, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(exact, "RERANK_ROWS_PER_WORKER", 16)  # several workers on a small batch
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((11, 16)).astype(np.float32)
    cand = np.stack([rng.choice(500, 20, replace=False) for _ in q])
    cand[3, 5:] = -1  # a query with few candidates
    s, i = rerank(x, q, cand, 8, threads=threads)
    for row in range(len(q)):
        ids = [j for j in cand[row] if j >= 0]
        want = sorted(ids, key=lambda j: -float(q[row] @ x[j]))[:8]
        assert i[row, : len(want)].tolist() == want
        np.testing.assert_allclose(s[row, : len(want)], [q[row] @ x[j] for j in want], atol=1e-5)
    assert (i[3, 5:] == -1).all() and np.isneginf(s[3, 5:]).all()


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x4fs", "IVF16,SQ8"])
def test_probing_by_blas_finds_what_faiss_finds(factory):
    faiss = pytest.importorskip("faiss")
    from clipface.index.ann.probe import Prober

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(32, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    faiss.extract_index_ivf(index).nprobe = 3
    prober = Prober(index)
    assert prober.blas_probing
    q = x[:25] + 0.05 * rng.standard_normal((25, 32)).astype(np.float32)
    want_s, want_i = index.search(q, 10)
    got_s, got_i = prober.search(q, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-4, atol=1e-4)


def test_an_hnsw_quantizer_is_left_to_faiss():
    faiss = pytest.importorskip("faiss")
    from clipface.index.ann.probe import Prober

    x = np.random.default_rng(2).standard_normal((500, 16)).astype(np.float32)
    index = faiss.index_factory(16, "IVF8_HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    prober = Prober(index)
    assert not prober.blas_probing
    np.testing.assert_array_equal(prober.search(x[:4], 5)[1], index.search(x[:4], 5)[1])


def test_the_scattered_view_reads_the_same_rows(tmp_path: Path):
    from clipface.index.rows import scattered_view

    x = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    x.tofile(tmp_path / "v.f32")
    mapped = np.memmap(tmp_path / "v.f32", dtype=np.float32, mode="r", shape=x.shape)
    view = scattered_view(mapped, min_bytes=0)
    assert isinstance(view, np.memmap) and view is not mapped
    np.testing.assert_array_equal(view[[5, 299, 0]], x[[5, 299, 0]])
    assert scattered_view(x, min_bytes=0) is x  # not a map: as is
    assert scattered_view(mapped) is mapped  # a small file: read-ahead is left on


def test_rerank_in_place_and_gathered_agree_whatever_the_rows(tmp_path):
    """FAISS's in-place scores (float32 rows) and the gathered product (any other rows) are the same scores."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    q = rng.standard_normal((9, 24)).astype(np.float32)
    cand = rng.integers(-1, 300, (9, 30))
    cand[2, :] = -1
    want = exact._scores_gathered(x, q, cand)
    got = exact._scores_in_place(x, q, cand)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.isneginf(got[cand < 0]).all() and np.isfinite(got[cand >= 0]).all()
    path = tmp_path / "rows.f32"
    x.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    np.testing.assert_allclose(exact._scores_in_place(mapped.view(np.ndarray), q, cand), want, atol=1e-5)
    assert exact._scores_in_place(x.astype(np.float16), q, cand) is None  # half precision: gathered instead
    assert exact._scores_in_place(x[:, ::2], q[:, ::2], cand) is None  # not contiguous: gathered instead
    s16, i16 = rerank(x.astype(np.float16), q, cand, 5)
    s32, i32 = rerank(mapped, q, cand, 5)
    np.testing.assert_array_equal(i16[:, 0], i32[:, 0])
    np.testing.assert_allclose(s16, s32, atol=2e-2)


def test_rerank_skips_candidates_beyond_the_vectors():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    q = rng.standard_normal((1, 8)).astype(np.float32)
    s, i = rerank(x, q, np.array([[3, 50, 10_000, 7]]), 4)  # 50 and 10,000 are no rows of x
    assert sorted(i[0, :2].tolist()) == [3, 7] and (i[0, 2:] == -1).all() and np.isneginf(s[0, 2:]).all()


def test_one_blas_thread_limits_blas_and_restores_it():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with exact.one_blas_thread(True):
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside and set(inside) == {1} and after == before
