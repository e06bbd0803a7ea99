"""The shards' search and its merge (:mod:`clipface.index.sharded`) without a cluster: slices, merging by score against
numpy's full product, shards that fail, and a shard of an approximate index with codes of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipface.index.sharded import (
    ShardedSearch,
    ShardsDownError,
    ShardSearcher,
    begin_report,
    current_report,
    slices,
)

pytest.importorskip("faiss")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors around n / 50 centres, as face embeddings cluster by person."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((max(1, n // 50), dim)))
    return unit(centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim) * 4)


class _Reply:
    def __init__(self, value: object) -> None:
        self.value = value

    def result(self, timeout_s: float) -> object:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


class _Method:
    def __init__(self, shard: ShardSearcher | None) -> None:
        self.shard = shard

    def remote(self, q: np.ndarray, k: int) -> _Reply:
        return _Reply(RuntimeError("replica died") if self.shard is None else self.shard.search(q, k))


class _Handle:
    """What a Ray Serve deployment handle offers the fan-out: ``handle.search.remote(q, k).result(timeout_s=...)``."""

    def __init__(self, shard: ShardSearcher | None) -> None:
        self.search = _Method(shard)


def write_vectors(folder: Path, vectors: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vectors.f32").write_bytes(np.ascontiguousarray(vectors, np.float32).tobytes())
    return folder


def test_slices_cover_every_row_once() -> None:
    for count, n in ((10, 3), (100, 4), (7, 7), (1, 1)):
        parts = slices(count, n)
        assert parts[0][0] == 0 and parts[-1][1] == count and len(parts) == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert max(h - lo for lo, h in parts) - min(h - lo for lo, h in parts) <= 1


def test_merged_shards_give_numpys_top_k_and_a_dead_shard_is_reported(tmp_path: Path) -> None:
    vectors, queries = clustered(3000, 32, 0), clustered(20, 32, 1)
    folder = write_vectors(tmp_path / "index", vectors)
    parts = slices(len(vectors), 3)
    shards = [ShardSearcher(str(folder), len(vectors), 32, lo, hi) for lo, hi in parts]
    search = ShardedSearch([_Handle(s) for s in shards], timeout=5)
    try:
        scores, ids = search.search(queries, 10)
        truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]  # the oracle: every product
        assert (ids == truth).all() and np.allclose(
            scores, np.take_along_axis(queries @ vectors.T, truth, 1), atol=1e-5
        )
        assert current_report() is None  # outside a request nothing is reported

        search.handles[1] = _Handle(None)  # shard 1 down
        report = begin_report()
        assert report is not None and report.to_dict() == {"answered": 3, "total": 3}
        _, ids = search.search(queries, 10)
        lo, hi = parts[1]
        assert report.to_dict() == {"answered": 2, "total": 3} and not ((ids >= lo) & (ids < hi)).any()
        alive = np.r_[0:lo, hi : len(vectors)]
        want = alive[np.argsort(-(queries @ vectors[alive].T), axis=1, kind="stable")[:, :10]]
        assert (ids == want).all()  # the best of the shards that answered

        search.handles = [_Handle(None)] * 3
        with pytest.raises(ShardsDownError, match="no shard of 3 answered"):
            search.search(queries, 10)
    finally:
        search.close()
    assert begin_report() is None  # closed: no sharded search in this process


def test_a_shard_of_an_approximate_index_keeps_tuned_codes_of_its_own(tmp_path: Path) -> None:
    n, dim = 60_000, 32
    vectors = clustered(n, dim, 2)
    folder = write_vectors(tmp_path / "index", vectors)
    lo, hi = 1_000, n  # 59,000 rows: above the exact-search limit, so the shard trains its own inverted file
    shard = ShardSearcher(str(folder), n, dim, lo, hi, kind="ivfsq8")
    assert shard.describe()["kind"] == "ivfsq8" and shard.describe()["nprobe"] >= 1
    codes = next((folder / "shards").glob("rows-1000-60000-of-60000"))
    assert (codes / "ann.faiss").is_file() and (codes / "params.json").is_file()
    queries = clustered(50, dim, 3)
    _, ids = shard.search(queries, 10)
    truth = lo + np.argsort(-(queries @ vectors[lo:hi].T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    assert recall >= 0.9 and ids.min() >= lo  # global ids, tuned for recall@10 0.95 on stored vectors
    stamp = (codes / "ann.faiss").stat().st_mtime_ns
    again = ShardSearcher(str(folder), n, dim, lo, hi, kind="ivfsq8")  # a second replica reads them
    assert (codes / "ann.faiss").stat().st_mtime_ns == stamp and (again.search(queries, 10)[1] == ids).all()
    small = ShardSearcher(str(folder), n, dim, 0, 1_000, kind="ivfsq8")
    assert small.describe()["kind"] == "flat"  # a small shard is searched exactly
