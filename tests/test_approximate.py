"""Approximate search: each worker's chain (rank lists, scan codes, re-rank) gives what one thread gives."""

from __future__ import annotations

import numpy as np
import pytest

from clipface.index.ann import approximate
from clipface.index.ann.exact import exact_search, rerank

faiss = pytest.importorskip("faiss")


def _index(factory: str, x: np.ndarray):
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    faiss.extract_index_ivf(index).nprobe = 4
    return index


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:37] + 0.1 * rng.standard_normal((37, 32)).astype(np.float32)
    return x, q


@pytest.mark.parametrize("factory", ["IVF32,PQ8x4fs", "IVF32,SQ8", "IVF16_HNSW32,Flat"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_worker_count_gives_the_one_thread_answer(factory, threads, data, monkeypatch: pytest.MonkeyPatch):
    from clipface.index.ann.probe import Prober

    monkeypatch.setattr(approximate, "MIN_QUERIES_PER_WORKER", 4)  # 37 queries: several workers
    x, q = data
    prober = Prober(_index(factory, x))
    _, cand = prober.search(q, 40)
    want_s, want_i = rerank(x, q, cand, 10, threads=1)
    got_s, got_i = approximate.approximate_search(prober, x, q, 10, 40, threads=threads)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, atol=1e-6)
    # re-ranked scores are exact inner products
    np.testing.assert_allclose(got_s[:, 0], np.einsum("md,md->m", q, x[got_i[:, 0]]), atol=1e-5)


def test_lists_are_ranked_as_a_full_sort_of_the_centroid_scores(data, monkeypatch: pytest.MonkeyPatch):
    from clipface.index.ann import probe

    x, q = data
    prober = probe.Prober(_index("IVF32,Flat", x))
    monkeypatch.setattr(probe, "BLOCK_BYTES", 4 * 32 * 5)  # blocks of 5 queries
    s, i = prober.rank_lists(q, 6)
    want_s, want_i = exact_search(np.ascontiguousarray(prober._centroids_t.T), q, 6)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, atol=1e-6)
    s, i = prober.rank_lists(q, 100)  # more than there are lists: all of them, best first
    assert i.shape == (37, 32) and (np.sort(i, axis=1) == np.arange(32)).all()
    assert (np.diff(s, axis=1) <= 0).all()


def test_a_worker_sets_faiss_threads_for_itself_only():
    import threading

    from clipface.index.ann.faiss_backend import faiss_threads_here

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)  # this thread's setting, which the worker must leave alone
    seen: list[int] = []

    def work() -> None:
        faiss_threads_here(1)
        seen.append(faiss.omp_get_max_threads())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    try:
        assert seen == [1] and faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


def test_query_slices_run_on_kept_threads_and_a_nested_call_does_not_wait_on_its_caller():
    import threading

    from clipface.index.ann.exact import by_query_slices

    def names(a: int, b: int) -> tuple[int, int, int]:
        return a, b, threading.get_ident()

    first, second = by_query_slices(10, 2, names), by_query_slices(10, 2, names)
    assert [(a, b) for a, b, _ in first] == [(0, 5), (5, 10)]
    kept = {t.ident for t in threading.enumerate() if t.name.startswith("clipface-search-2")}
    assert {t for *_, t in first + second} <= kept and threading.get_ident() not in kept

    def outer(a: int, b: int) -> list[tuple[int, int]]:  # both kept threads busy, each asking for two more
        return [(c, d) for c, d, _ in by_query_slices(b - a, 2, names)]

    assert by_query_slices(8, 2, outer) == [[(0, 2), (2, 4)], [(0, 2), (2, 4)]]


def test_a_forked_child_makes_its_own_kept_threads():
    import multiprocessing

    from clipface.index.ann.exact import by_query_slices

    by_query_slices(4, 2, _width)  # the parent's kept pool exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_in_child).get(timeout=60) == (0, [2, 2])


def _in_child() -> tuple[int, list[int]]:
    """How many of the parent's kept pools the child sees (none: their threads did not fork), then a call."""
    from clipface.index.ann import exact

    return len(exact._POOLS), exact.by_query_slices(4, 2, _width)


def _width(a: int, b: int) -> int:
    return b - a
