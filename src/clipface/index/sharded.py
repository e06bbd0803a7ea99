"""An index's vectors served as shards on Ray Serve: each shard a deployment over a slice of rows, queries fanned out.

``clipface serve --ray ADDRESS|local --shards N`` splits the ``count`` rows of an index's vector file
into N contiguous slices. Each slice is one Ray Serve deployment (:class:`ShardSearcher`, with
``replicas`` replicas), which maps its rows of ``vectors.f32`` from the index folder (memory-mapped,
never copied: every node must see the folder at the same path) and answers top-k searches with
global row ids. :class:`ShardedSearch` is what the server's :class:`~clipface.index.store.FaceIndex`
searches with instead of its own vectors: it sends each query batch to every shard at once, waits up
to ``timeout`` seconds, and merges the answers by score, so the server above it (its routes, opt-outs,
token and limits) is the single-process server unchanged. Over a flat index the merged answers are
the single server's. A shard of an approximate index searches codes of its own, over its rows
(:class:`ShardSearcher`).

A shard that fails (its replica killed, its node gone) is restarted by Ray Serve; until then the
answers come from the shards that answered, and say so: :func:`begin_report` gives the request's
:class:`ShardReport` (``{"answered": 2, "total": 3}``). No shard answering is :class:`ShardsDownError`.

The layout follows clip-retrieval's and autofaiss's practice for indices too large for one machine
(searched in parallel, merged by score); the serving is Ray Serve's (deployments, replicas, restarts).
"""

from __future__ import annotations

import contextvars
import json
import os
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ClipfaceError
from ..files import file_lock, write_json
from .ann.faiss_backend import FLAT_MAX, default_params, new_ann, read_faiss, train_sample
from .ann.tune import tune_nprobe
from .rows import read_rows, slices
from .vectors import ANN, VECTORS, VectorStore

__all__ = [
    "ShardReport",
    "ShardSearcher",
    "ShardedSearch",
    "ShardsDownError",
    "begin_report",
    "current_report",
    "deploy_shards",
    "slices",
]

#: The request's shard report, set by :func:`begin_report` (the server sets one per request).
_REPORT: contextvars.ContextVar[ShardReport | None] = contextvars.ContextVar("clipface_shards", default=None)


class ShardsDownError(ClipfaceError):
    """No shard answered a search."""


@dataclass
class ShardReport:
    """How many shards answered the searches of one request (the fewest over its searches)."""

    answered: int
    total: int

    def to_dict(self) -> dict[str, int]:
        return {"answered": self.answered, "total": self.total}


def begin_report() -> ShardReport | None:
    """A fresh report for this request (``None`` when no sharded search is running in this process)."""
    if ShardedSearch.active is None:
        return None
    report = ShardReport(ShardedSearch.active.total, ShardedSearch.active.total)
    _REPORT.set(report)
    return report


def current_report() -> ShardReport | None:
    return _REPORT.get()


class ShardSearcher:
    """One shard: rows ``[lo, hi)`` of an index's vectors, memory-mapped, and their search, with global row ids.

    A shard of an approximate index (``kind`` other than ``flat``) larger than ``FLAT_MAX`` rows keeps codes of its
    own: trained on its rows, its ``nprobe`` tuned on them (:mod:`.ann.tune`), candidates re-ranked exactly, as
    :class:`~clipface.index.vectors.VectorStore` searches a whole index. They are built by the first replica that
    starts and kept under ``INDEX/shards/`` for the next (one lock per shard); smaller shards are searched exactly.
    """

    def __init__(self, index_dir: str, count: int, dim: int, lo: int, hi: int, kind: str = "flat") -> None:
        self.lo, self.hi = lo, hi
        folder = Path(index_dir)
        rows = read_rows(folder / VECTORS, hi, dim, True, "vector", start=lo)
        if kind == "flat" or hi - lo <= FLAT_MAX:
            self.store = VectorStore(folder, dim, "flat", {}, rows, None)
        else:
            self.store = _shard_codes(folder / "shards" / f"rows-{lo}-{hi}-of-{count}", kind, rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.store.search(np.asarray(queries, np.float32), min(k, self.hi - self.lo))
        return scores, np.where(ids >= 0, ids + self.lo, -1)

    def describe(self) -> dict[str, Any]:
        """The shard's rows and search, and its process's resident memory in MB (Linux; mapped pages count once
        read)."""
        out: dict[str, Any] = {"rows": [self.lo, self.hi], "kind": self.store.kind}
        out["nprobe"] = self.store.params.get("nprobe")
        status = Path("/proc/self/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[f"{key}_mb"] = int(value.split()[0]) / 1024
        return out


def _shard_codes(folder: Path, kind: str, rows: np.ndarray) -> VectorStore:
    """The shard's codes and tuned parameters: read from ``folder``, or built, tuned and written there."""
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock", 3600, f"{folder}: another replica has been building these codes for an hour"):
        if (folder / ANN).is_file() and (folder / "params.json").is_file():
            params = json.loads((folder / "params.json").read_text())
            return VectorStore(folder, rows.shape[1], kind, params, rows, read_faiss(folder / ANN, mmap=True))
        params = default_params(kind, len(rows), rows.shape[1])
        ann = new_ann(kind, rows.shape[1], train_sample(rows, params), params)
        for i in range(0, len(rows), 65_536):
            ann.add(np.ascontiguousarray(rows[i : i + 65_536], dtype=np.float32))
        store = VectorStore(folder, rows.shape[1], kind, params, rows, ann)
        store.params = tune_nprobe(store)
        tmp = store.write_ann()
        assert tmp is not None
        os.replace(tmp, folder / ANN)
        write_json(folder / "params.json", store.params)
        return store


class ShardedSearch:
    """Fans a search out to the shards' deployment handles and merges the answers by score."""

    #: The sharded search of this process, if any (what :func:`begin_report` reports on).
    active: ShardedSearch | None = None

    def __init__(self, handles: list[Any], timeout: float, apps: list[str] | None = None) -> None:
        self.handles = handles
        self.apps = apps or []
        self.total = len(handles)
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max(1, self.total), thread_name_prefix="clipface-shard")
        ShardedSearch.active = self

    def _ask(self, handle: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return handle.search.remote(queries, k).result(timeout_s=self.timeout)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best rows over the shards that answer within the timeout: ``(scores, ids)``."""
        futures = [self._pool.submit(self._ask, h, queries, k) for h in self.handles]
        done, _ = wait(futures, timeout=self.timeout + 1)
        parts = []
        for f in futures:
            if f in done and f.exception() is None:
                parts.append(f.result())
        report = _REPORT.get()
        if report is not None:
            report.answered = min(report.answered, len(parts))
        if not parts:
            raise ShardsDownError(f"no shard of {self.total} answered within {self.timeout:g} s")
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_s, top_i = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        if top_s.shape[1] < k:  # fewer rows than k over the shards that answered
            pad = k - top_s.shape[1]
            top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=-np.inf)
            top_i = np.pad(top_i, ((0, 0), (0, pad)), constant_values=-1)
        return top_s, top_i

    def close(self) -> None:
        """Stop fanning out and delete the shards' Serve applications (Serve keeps them after the driver exits)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if ShardedSearch.active is self:
            ShardedSearch.active = None
        if self.apps:
            from ray import serve

            for name in self.apps:
                try:
                    serve.delete(name)
                except Exception:  # noqa: BLE001 - a cluster already gone has nothing left to delete
                    pass


def deploy_shards(
    index_dir: Path, count: int, dim: int, shards: int, replicas: int = 1, timeout: float = 10.0, kind: str = "flat"
) -> ShardedSearch:
    """Run ``shards`` Ray Serve deployments over the index's rows (Ray must be connected, see
    :func:`clipface.index.ray.ray_cluster`); their :class:`ShardedSearch`."""
    try:
        from ray import serve
    except ImportError:
        raise BackendUnavailableError('Ray Serve is not installed: pip install "clipface[ray]"') from None
    serve.start(proxy_location="Disabled")  # no HTTP proxy of Serve's: clipface's server is the ingress
    deployment = serve.deployment(ShardSearcher)
    handles, apps = [], []
    for i, (lo, hi) in enumerate(slices(count, shards)):
        shard = deployment.options(
            name=f"shard-{i}",
            num_replicas=replicas,
            ray_actor_options={"num_cpus": 0},  # a search is short; the cluster's CPUs are not reserved per shard
            health_check_period_s=2,
            health_check_timeout_s=10,
        )
        app = shard.bind(str(Path(index_dir).resolve()), count, dim, lo, hi, kind)
        apps.append(f"clipface-shard-{i}")
        handles.append(serve.run(app, name=apps[-1], route_prefix=None))
    return ShardedSearch(handles, timeout, apps)
