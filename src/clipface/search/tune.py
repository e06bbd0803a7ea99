"""How many inverted lists to probe, chosen by measurement on the index's own vectors.

How many lists a query must probe to find its true neighbours depends on the data, not only on
its size: on the synthetic vectors of ``benchmarks/index_speed.py`` with 4,096 lists, recall@10
was 0.98 probing 8 lists at 1M vectors, 0.96 only from 64 lists at 2M, and 0.90 at 64 lists at
10M. So, as autofaiss tunes an index to a target recall, the build measures it: a seeded sample of
the stored vectors is searched exactly and then with 8, 16, 32, ... lists probed, and the fewest
lists that reach :data:`TARGET_RECALL` (each query's own row left out of both answers) become the
index's ``nprobe``. Then, at that ``nprobe``, the fewest candidates re-ranked per result
(``k_factor``, from :data:`K_FACTORS` below the index's own) that still reach the target and lose
at most :data:`K_FACTOR_MAX_LOSS` of the recall the index's own reached: at 1M
vectors re-ranking 6 k instead of 8 k kept recall@10 at 0.974 (0.983) and answered a batch 1.1x
faster, while 4 k fell to 0.927. The index is tuned again whenever it has doubled in size since,
so the cost stays a fraction of the builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .exact import exact_search
from .faiss_backend import faiss_module, set_search_params

if TYPE_CHECKING:
    from .vectors import VectorStore

__all__ = ["K_FACTORS", "K_FACTOR_MAX_LOSS", "LADDER", "TARGET_RECALL", "TUNE_QUERIES", "needs_tuning", "tune_nprobe"]

#: Recall@10 against exact search that ``nprobe`` is chosen to reach.
TARGET_RECALL = 0.95
#: The ``nprobe`` values tried, fewest first.
LADDER = (8, 16, 32, 64, 128, 256, 512, 1024)
#: The ``k_factor`` values tried below the index's own, fewest first.
K_FACTORS = (4, 6)
#: Recall@10 a smaller ``k_factor`` may lose against the index's own, at most (about two standard errors of
#: recall@10 over 200 queries): at 100k vectors 4 k reached 0.956 where 8 k reached 1.000, too near the target.
K_FACTOR_MAX_LOSS = 0.01
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
    (the largest tried if none does), then the fewest ``k_factor`` of :data:`K_FACTORS` that keeps it there
    (within :data:`K_FACTOR_MAX_LOSS`), and what was measured under ``"tuned"``; the store is set to them."""
    ivf = _ivf(store)
    n = store.count
    m = max(1, min(queries, n // 10))
    rows = np.sort(np.random.default_rng(0).choice(n, m, replace=False))
    q = np.ascontiguousarray(store.vectors[rows], dtype=np.float32)
    _, truth = exact_search(store.vectors, q, K + 1)
    want = [set(_others(t, r)) for t, r in zip(truth, rows)]
    measured: dict[str, float] = {}
    params = store.params = dict(store.params)  # the store searches with these as they change
    own = (params.get("tuned") or {}).get("k_factor_from", params.get("k_factor"))  # before any earlier tuning
    if own is not None:
        params["k_factor"] = own

    def recall() -> float:
        set_search_params(store.ann, params)
        _, got = store.search(q, K + 1)
        return float(np.mean([len(set(_others(g, r)) & w) / max(1, len(w)) for g, r, w in zip(got, rows, want)]))

    for nprobe in [p for p in LADDER if p < ivf.nlist] + [int(ivf.nlist)]:
        params["nprobe"] = nprobe
        measured[str(nprobe)] = round(recall(), 4)
        if measured[str(nprobe)] >= target:
            break
    factors: dict[str, float] = {}
    reached = measured[str(params["nprobe"])]
    if own is not None and reached >= target:
        for k_factor in [f for f in K_FACTORS if f < own]:
            params["k_factor"] = k_factor
            factors[str(k_factor)] = round(recall(), 4)
            if factors[str(k_factor)] >= max(target, reached - K_FACTOR_MAX_LOSS):
                break
        else:
            params["k_factor"] = own
    params["tuned"] = {"count": n, "queries": m, "target": target, "recall_at_10": measured}
    if own is not None:
        params["tuned"] |= {"k_factor_from": own, "k_factor_recall_at_10": factors}
    return params


def _others(ids: np.ndarray, own: int) -> list[int]:
    """An answer's ids without the query's own row, the first :data:`K`."""
    return [int(i) for i in ids if i >= 0 and i != own][:K]
