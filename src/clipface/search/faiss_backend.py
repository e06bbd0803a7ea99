"""FAISS indexes for unit vectors: which kind for how many vectors, their parameters, memory-mapped reading."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import BackendUnavailableError
from .records import FaceIndexError

__all__ = [
    "FLAT_MAX",
    "KINDS",
    "Kind",
    "choose_kind",
    "default_params",
    "faiss_module",
    "new_faiss_index",
    "read_faiss",
    "set_search_params",
]

Kind = Literal["auto", "flat", "ivfpq", "hnsw"]
KINDS: tuple[str, ...] = ("auto", "flat", "ivfpq", "hnsw")
#: ``kind="auto"`` uses exact search up to this many vectors, IVF-PQ above.
FLAT_MAX = 50_000
#: Fewest vectors IVF-PQ can be trained on (its codebooks need examples).
IVFPQ_MIN = 64
#: IVF-PQ training sample: at most ``max(TRAIN_MIN, TRAIN_PER_LIST * nlist)`` vectors.
TRAIN_MIN, TRAIN_PER_LIST = 65_536, 64


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise BackendUnavailableError('faiss is not installed: pip install "clipface[search]"') from None
    return faiss


def choose_kind(n: int, kind: str = "auto", flat_max: int = FLAT_MAX) -> str:
    """The FAISS kind for ``n`` vectors: ``kind`` itself unless ``"auto"`` (flat up to ``flat_max``, else IVF-PQ)."""
    if kind not in KINDS:
        raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else "ivfpq"


def default_params(kind: str, n: int, dim: int) -> dict[str, int]:
    """FAISS parameters for ``n`` vectors of ``dim``.

    IVF-PQ: about ``sqrt(n) / 2`` lists (at least 39 training vectors each, FAISS's minimum),
    ``dim / 8`` sub-quantisers of 8 bits (fewer bits on tiny sets), 16 lists probed, and the
    ``4 k`` best candidates re-ranked exactly (``k_factor``).
    IVF-PQ trains on a seeded sample of at most ``max(65536, 64 * nlist)`` vectors.
    HNSW: 32 links per node, ``efConstruction`` 40, ``efSearch`` 128.
    """
    if kind == "ivfpq":
        nlist = max(1, min(2 ** round(math.log2(max(1.0, math.sqrt(n) / 2))), n // 39))
        m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        nbits = min(8, int(math.log2(max(2, n))))
        return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": min(nlist, 16), "k_factor": 4}
    if kind == "hnsw":
        return {"M": 32, "ef_construction": 40, "ef_search": 128}
    return {}


def new_faiss_index(
    kind: str, dim: int, train: np.ndarray, params: dict[str, int] | None = None
) -> tuple[Any, dict[str, int]]:
    """An empty FAISS index of ``kind`` (inner product), trained on ``train`` where needed, and its parameters.

    ``ivfpq`` is an ``IndexRefineFlat`` over an ``IndexIVFPQ``: the compact PQ codes find
    candidates, the exact vectors (memory-mapped by :func:`read_faiss`, so they stay on disk
    until touched) re-rank them and give exact scores.
    """
    faiss = faiss_module()
    params = dict(params or default_params(kind, len(train), dim))
    if kind == "flat":
        return faiss.IndexFlatIP(dim), params
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index, params
    if kind == "ivfpq":
        if len(train) < IVFPQ_MIN:
            raise FaceIndexError(
                f"an IVF-PQ index needs at least {IVFPQ_MIN} images to train on, got {len(train)}: use --kind flat"
            )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT
        )
        index.cp.min_points_per_centroid = 1  # no warnings on small sets; the size rule above applies
        index.pq.cp.min_points_per_centroid = 1
        index.pq.cp.max_points_per_centroid = 128  # codebooks from 32k vectors: half FAISS's default, 2x faster
        most = max(TRAIN_MIN, TRAIN_PER_LIST * params["nlist"])
        if len(train) > most:
            train = train[np.sort(np.random.default_rng(0).choice(len(train), most, replace=False))]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        refine = faiss.IndexRefineFlat(index)
        set_search_params(refine, params)
        return refine, params
    raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS[1:])}")


def set_search_params(index: Any, params: dict[str, int]) -> None:
    """Apply the query-time parameters (``nprobe``, ``k_factor``, ``efSearch``) to a FAISS index."""
    base = faiss_module().downcast_index(index.base_index) if hasattr(index, "base_index") else index
    if "k_factor" in params and hasattr(index, "k_factor"):
        index.k_factor = params["k_factor"]
    if "nprobe" in params and hasattr(base, "nprobe"):
        base.nprobe = params["nprobe"]
    if "ef_search" in params and hasattr(base, "hnsw"):
        base.hnsw.efSearch = params["ef_search"]


def read_faiss(path: Path, mmap: bool = True) -> Any:
    """Read a FAISS index, memory-mapped where this FAISS supports it.

    ``IO_FLAG_MMAP_IFC`` (FAISS >= 1.10) maps the vectors and codes of every kind used here
    without copying them, so a large index opens in a fraction of a second; older versions
    get ``IO_FLAG_MMAP``, then a plain read.
    """
    faiss = faiss_module()
    flags = [getattr(faiss, "IO_FLAG_MMAP_IFC", None), getattr(faiss, "IO_FLAG_MMAP", None)] if mmap else []
    for flag in flags:
        if flag is not None:
            try:
                return faiss.read_index(str(path), flag)
            except RuntimeError:
                continue
    return faiss.read_index(str(path))
