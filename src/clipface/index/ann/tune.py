"""How many inverted lists to probe, chosen by measurement on the index's own vectors.

How many lists a query must probe to find its true neighbours depends on the data, not only on
its size: on the synthetic vectors of ``benchmarks/index_speed.py`` with 4,096 lists, recall@10
was 0.98 probing 8 lists at 1M vectors, 0.96 only from 64 lists at 2M, and 0.90 at 64 lists at
10M. So, as autofaiss tunes an index to a target recall, the build measures it: a seeded sample of
the stored vectors is searched exactly and then with 1, 2, 4, 8, ... lists probed, and the fewest
lists that reach :data:`TARGET_RECALL` (each query's own row left out of both answers) become the
index's ``nprobe`` (each rung costs one search of the sample, a fraction of a second at 1M
vectors). The index is tuned again whenever it has doubled in size since, so the cost stays a
fraction of the builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .exact import exact_search
from .faiss_backend import faiss_module, set_search_params

if TYPE_CHECKING:
    from ..vectors import VectorStore

__all__ = ["LADDER", "TARGET_RECALL", "TUNE_QUERIES", "needs_tuning", "tune_nprobe"]

#: Recall@10 against exact search that ``nprobe`` is chosen to reach.
TARGET_RECALL = 0.95
#: The ``nprobe`` values tried, fewest first.
LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Stored vectors searched as queries (at most a tenth of the index).
TUNE_QUERIES = 200
K = 10


def _ivf(store: VectorStore) -> Any:
    return None if store.ann is None else faiss_module().try_extract_index_ivf(store.ann)


def needs_tuning(store: VectorStore) -> bool:
    """Whether ``store`` is an inverted file never tuned, or twice the size it was tuned at."""
    if _ivf(store) is None or store.count < 10 * K:
        return False
    tuned = store.params.get("tuned") or {}
    return store.count >= 2 * int(tuned.get("count", 0))


def tune_nprobe(store: VectorStore, target: float = TARGET_RECALL, queries: int = TUNE_QUERIES) -> dict[str, Any]:
    """``store``'s parameters with the fewest ``nprobe`` of :data:`LADDER` whose recall@10 reaches ``target``
    (the largest tried if none does), and what was measured under ``"tuned"``; the store is set to them."""
    ivf = _ivf(store)
    n = store.count
    m = max(1, min(queries, n // 10))
    rows = np.sort(np.random.default_rng(0).choice(n, m, replace=False))
    q = np.ascontiguousarray(store.vectors[rows], dtype=np.float32)
    _, truth = exact_search(store.vectors, q, K + 1)
    want = [set(_others(t, r)) for t, r in zip(truth, rows)]
    measured: dict[str, float] = {}
    params = store.params = dict(store.params)  # the store searches with these as they change
    for nprobe in [p for p in LADDER if p < ivf.nlist] + [int(ivf.nlist)]:
        params["nprobe"] = nprobe
        set_search_params(store.ann, params)
        _, got = store.search(q, K + 1)
        recall = float(np.mean([len(set(_others(g, r)) & w) / max(1, len(w)) for g, r, w in zip(got, rows, want)]))
        measured[str(nprobe)] = round(recall, 4)
        if recall >= target:
            break
    params["tuned"] = {"count": n, "queries": m, "target": target, "recall_at_10": measured}
    return params


def _others(ids: np.ndarray, own: int) -> list[int]:
    """An answer's ids without the query's own row, the first :data:`K`."""
    return [int(i) for i in ids if i >= 0 and i != own][:K]
