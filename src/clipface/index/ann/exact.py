"""Exact inner-product search at the speed of the matrix product, over vectors that may be memory-mapped.

Exact search is a matrix product and a top-k. The vectors are read in blocks of rows, handed out
in turn to one worker thread per core; each block's scores for all queries come from one BLAS
product on the worker's thread (numpy's ``matmul`` releases Python's lock), and each worker keeps
each query's best ``k`` by a running selection: a block whose best score for a query is below
that query's current ``k``-th best costs one maximum per row, and only the queries it can change
get an ``argpartition`` of the block. The workers' answers are merged at the end. A block of the
scores is at most :data:`BLOCK_BYTES`, so memory stays flat whatever the number of vectors, and
memory-mapped vectors are paged in once per search.

FAISS's ``IndexFlatIP`` does the same work with small tiles and a heap per query; on 100,000 x 512
vectors and 200 queries it ran at about 0.12 of the plain product here, this code at 0.8 to 0.95
(``benchmarks/index_speed.py`` measures both in one run).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ...models.backends.threads import inference_threads
from .faiss_backend import faiss_if_installed, faiss_threads_here

__all__ = ["BLOCK_BYTES", "by_query_slices", "exact_search", "one_blas_thread", "rerank", "top_k"]

_T = TypeVar("_T")

#: Largest block of scores (queries x rows, float32) computed at once.
BLOCK_BYTES = 32 << 20
#: Rows per block at most (a block of vectors is then at most 32 MB at 1,024 dimensions).
BLOCK_ROWS = 8192


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best ``scores`` (and their ``ids``), best first (equal scores by id once selected)."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, part, 1), np.take_along_axis(ids, part, 1)
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _scan(
    vectors: np.ndarray, q: np.ndarray, k: int, blocks: Iterator[int], rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k of one worker over the blocks it takes from ``blocks`` (shared by the workers)."""
    m = len(q)
    best_s = np.full((m, k), -np.inf, dtype=np.float32)
    best_i = np.full((m, k), -1, dtype=np.int64)
    for start in blocks:
        block = np.asarray(vectors[start : start + rows], dtype=np.float32)
        scores = q @ block.T
        busy = np.flatnonzero(scores.max(axis=1) > best_s[:, -1])  # queries this block can still change
        if len(busy) == 0:
            continue
        sub = scores[busy] if len(busy) < m else scores
        if sub.shape[1] > k:
            part = np.argpartition(sub, -k, axis=1)[:, -k:]
            cand_s, cand_i = np.take_along_axis(sub, part, 1), part + start
        else:
            cand_s = sub
            cand_i = np.broadcast_to(np.arange(start, start + len(block), dtype=np.int64), sub.shape)
        s, i = top_k(np.hstack([best_s[busy], cand_s]), np.hstack([best_i[busy], cand_i]), k)
        best_s[busy], best_i[busy] = s, i
    return best_s, best_i


class _Blocks:
    """Block starts handed out one at a time to the workers (so a slower core simply takes fewer)."""

    def __init__(self, n: int, rows: int) -> None:
        self._it = iter(range(0, n, rows))
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        with self._lock:
            return next(self._it)


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` with the largest inner product with each query: ``(scores, ids)``, best first.

    ``vectors`` is ``(n, d)`` float32 (a ``np.memmap`` is read block by block); ``queries`` is
    ``(m, d)``. Where ``k > n`` the missing places hold score ``-inf`` and id ``-1``, as FAISS's.
    Which of several rows with exactly the same score is kept at the ``k``-th place is not specified.
    ``threads`` workers (default: the physical cores) each take blocks in turn and run the BLAS
    product on one thread: a multi-threaded BLAS would meet at a barrier after every block, and
    stall whenever another process holds one of the cores. Where there are fewer blocks than
    workers (a few thousand rows, such as an inverted file's centroids), the workers share the
    queries instead.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    m, n = len(q), len(vectors)
    if m == 0 or n == 0 or k <= 0:
        k = max(k, 0)
        return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
    rows = int(max(min(BLOCK_ROWS, BLOCK_BYTES // (4 * m)), 2 * k, 256))
    cores = inference_threads(threads)
    n_blocks = -(-n // rows)
    if n_blocks < cores and m >= 2 * cores:  # too few blocks to share (an IVF's centroids): share the queries
        with one_blas_thread(True):
            parts = by_query_slices(m, cores, lambda a, b: _scan(vectors, q[a:b], k, iter(range(0, n, rows)), rows))
        best_s, best_i = top_k(np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts]), k)
        best_i[~np.isfinite(best_s)] = -1
        return best_s, best_i
    workers = max(1, min(cores, n_blocks))
    blocks = _Blocks(n, rows)
    with one_blas_thread(workers > 1):
        if workers == 1:
            parts = [_scan(vectors, q, k, blocks, rows)]
        else:
            with ThreadPoolExecutor(workers) as pool:  # a new pool: kept threads were no faster here (1.5-4% slower)
                parts = list(pool.map(lambda _: _scan(vectors, q, k, blocks, rows), range(workers)))
    best_s, best_i = top_k(np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts]), k)
    best_i[~np.isfinite(best_s)] = -1
    return best_s, best_i


def by_query_slices(m: int, workers: int, work: Callable[[int, int], _T]) -> list[_T]:
    """``work(start, stop)`` on ``workers`` consecutive slices of ``m`` queries, one thread each, in order.

    The threads are kept between calls (:func:`_workers`): at 1M vectors a batch of 200 approximate
    queries took 20.7 ms with a new pool per call and 17.1 ms on kept threads, which have their BLAS
    and OpenMP state already set up. A call made from one of those threads gets a pool of its own,
    so that it never waits for a slot its caller holds.
    """
    cuts = np.linspace(0, m, workers + 1).astype(int)
    slices = [(int(a), int(b)) for a, b in zip(cuts, cuts[1:])]
    if getattr(_IN_WORKER, "active", False):  # called from a kept thread
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda ab: work(*ab), slices))
    return list(_workers(workers).map(lambda ab: work(*ab), slices))


_IN_WORKER = threading.local()
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools() -> None:  # a forked child has none of its parent's threads
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def _workers(n: int) -> ThreadPoolExecutor:
    """The kept pool of ``n`` threads (made on first use)."""
    with _POOLS_LOCK:
        if n not in _POOLS:
            _POOLS[n] = ThreadPoolExecutor(n, f"clipface-search-{n}", initializer=_mark_kept_thread)
        return _POOLS[n]


def _mark_kept_thread() -> None:
    _IN_WORKER.active = True


@contextlib.contextmanager
def one_blas_thread(active: bool) -> Iterator[None]:
    """BLAS on one thread while the workers run (``threadpoolctl``; without it, BLAS keeps its own threads)."""
    controller = _blas_controller() if active else None
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


_CONTROLLER: list = [None, -1]  # threadpoolctl's controller, and len(sys.modules) when it was made


def _blas_controller() -> Any:
    """A kept ``ThreadpoolController``, made again after new imports (which may have loaded another BLAS).

    Making one scans the loaded libraries: ``threadpool_limits`` did so on every call, 0.4-0.6 ms
    here with torch loaded, against 0.03 ms for a limit set through a kept controller.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    if _CONTROLLER[0] is None or _CONTROLLER[1] != len(sys.modules):
        _CONTROLLER[:] = [ThreadpoolController(), len(sys.modules)]
    return _CONTROLLER[0]


def rerank(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of each query's ``candidates`` (ids, ``-1`` = none) from ``vectors``, and its ``k`` best.

    Each candidate row is read once from ``vectors`` (which may be memory-mapped) and scored where
    it lies, by FAISS's ``fvec_inner_products_by_idx`` (``faiss/utils/distances.h``) for float32
    rows: at 80 rows of 2 KB per query it ran 3.5x faster here than gathering the rows into a
    copy and scoring that by one batched product, which remains the path without FAISS (a few
    queries' rows at a time, :data:`RERANK_CHUNK_BYTES`, scored while they are still in the cache).
    Large batches are split among ``threads`` workers (default: the physical cores), since both
    paths release Python's lock.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    cand = np.asarray(candidates, dtype=np.int64).reshape(len(q), -1)
    workers = max(1, min(inference_threads(threads), cand.size // RERANK_ROWS_PER_WORKER))
    if workers == 1 or len(q) < 2:
        return _rerank(vectors, q, cand, k)

    def part(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        faiss_threads_here(1)  # this worker already has its core
        return _rerank(vectors, q[a:b], cand[a:b], k)

    parts = by_query_slices(len(q), workers, part)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


#: Candidate rows per re-ranking worker at least (below it one thread is faster).
RERANK_ROWS_PER_WORKER = 2048
#: Candidate rows gathered at once, at most (in bytes; one query's rows at least): gathering all of a batch's
#: rows first and scoring them after was 1.3x slower at 80 rows of 2 KB per query (the rows had left the cache).
RERANK_CHUNK_BYTES = 1 << 20


def _rerank(vectors: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(k, 1)
    cand = np.where((cand >= 0) & (cand < len(vectors)), cand, -1)  # a row beyond the vectors is no candidate
    if len(vectors) and cand.shape[1]:
        rows_of = vectors.view(np.ndarray) if isinstance(vectors, np.memmap) else vectors  # no memmap wrapping
        scores = _scores_in_place(rows_of, q, cand)
        if scores is None:
            scores = _scores_gathered(rows_of, q, cand)
    else:
        scores = np.full(cand.shape, -np.inf, np.float32)
    if cand.shape[1] < width:
        pad = width - cand.shape[1]
        scores = np.hstack([scores, np.full((len(q), pad), -np.inf, np.float32)])
        cand = np.hstack([cand, np.full((len(q), pad), -1, np.int64)])
    return top_k(scores, np.where(np.isfinite(scores), cand, -1), k)


def _scores_in_place(rows: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray | None:
    """``q[i] . rows[cand[i, j]]`` (``-inf`` where ``cand`` is -1) by FAISS, or ``None`` where it cannot run."""
    if rows.dtype != np.float32 or not rows.flags.c_contiguous or rows.shape[1] != q.shape[1]:
        return None
    faiss = faiss_if_installed()
    if faiss is None:
        return None
    out = np.full(cand.shape, -np.inf, np.float32)  # some FAISS versions leave the entries of id -1 unwritten
    ids = np.ascontiguousarray(cand)
    sp = faiss.swig_ptr
    faiss.fvec_inner_products_by_idx(sp(out), sp(q), sp(rows), sp(ids), q.shape[1], len(q), cand.shape[1])
    return out


def _scores_gathered(rows: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The same scores from a copy of a few queries' candidate rows at a time, scored by one batched product."""
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    scores = np.empty(cand.shape, np.float32)
    step = max(1, RERANK_CHUNK_BYTES // (cand.shape[1] * q.shape[1] * 4))
    for a in range(0, len(q), step):  # each chunk's rows are scored while they are still in the cache
        chunk = np.take(rows, safe[a : a + step], axis=0).astype(np.float32, copy=False)  # (s, c, d)
        scores[a : a + step] = np.matmul(chunk, q[a : a + step, :, None])[..., 0]
    scores[~valid] = -np.inf
    return scores
