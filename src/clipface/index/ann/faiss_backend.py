"""Which index for how many vectors, its FAISS codes and parameters, and memory-mapped reading.

Every kind keeps the exact vectors in a memory-mapped file of their own (:mod:`.vectors`); an
approximate kind adds a FAISS index of compressed codes that proposes ``k_factor x k``
candidates per query, which are then re-ranked exactly from the vectors (so scores are always
exact cosines, and only a true neighbour missing from the candidates costs recall):

* ``flat``: no codes, exact search at the matrix product's speed (:mod:`.exact`).
* ``ivfpqfs`` (the default above :data:`FLAT_MAX`): an inverted file over ``nlist`` k-means
  lists and product-quantiser codes of 4 bits per sub-vector searched by FAISS's SIMD "fast
  scan" (``IVF{nlist},PQ{m}x4fs``): 32 bytes per 512-d vector. Chosen by measurement
  (``benchmarks/index_speed.py``, 1M vectors): the fastest kind that reaches recall@10 >= 0.95
  after re-ranking, with the smallest codes.
* ``ivfsq8``: the same inverted file with 8-bit scalar codes (one byte per dimension).
* ``ivfpq``: the first release's IVF-PQ (8-bit codes, ``dim / 8`` sub-quantisers).
* ``hnsw``: an HNSW graph over 8-bit scalar codes (``HNSW32_SQ8``).

The number of lists grows as ``4 sqrt(n)`` up to :data:`NLIST_MAX` (k-means training on a few
cores stays at minutes), and the coarse quantiser is flat at every size: assigning vectors to
lists (at build) is then one BLAS product with top-1, and ranking them for a query (at search) one
BLAS product too (:mod:`.probe`). An HNSW graph over the centroids (autofaiss's choice at LAION
scale, with far more lists) was no cheaper at 4,096 centroids with the ``efSearch`` that recall
needs: adding 2M vectors through it took 355 s here. Indexes built with one still open and are
searched by FAISS. How many lists a query probes is measured when the index is built
(:mod:`.tune`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...errors import BackendUnavailableError
from ..records import STORED_KINDS, FaceIndexError

__all__ = [
    "APPROXIMATE",
    "FLAT_MAX",
    "KINDS",
    "Kind",
    "choose_kind",
    "default_params",
    "faiss_module",
    "new_ann",
    "read_faiss",
    "set_search_params",
    "train_sample",
]

Kind = Literal["auto", "flat", "ivfpqfs", "ivfsq8", "ivfpq", "hnsw"]
KINDS: tuple[str, ...] = ("auto", *STORED_KINDS)
APPROXIMATE: tuple[str, ...] = ("ivfpqfs", "ivfsq8", "ivfpq", "hnsw")
#: The approximate kind ``kind="auto"`` uses above :data:`FLAT_MAX` vectors.
DEFAULT_APPROXIMATE = "ivfpqfs"
#: ``kind="auto"`` uses exact search up to this many vectors.
FLAT_MAX = 50_000
#: Fewest vectors an inverted file or product quantiser can be trained on.
IVF_MIN = 64
#: Training sample: at most ``max(TRAIN_MIN, TRAIN_PER_LIST * nlist)`` vectors.
TRAIN_MIN, TRAIN_PER_LIST = 65_536, 64
#: Most inverted lists (k-means on a 2-core machine: about 4 minutes at 4,096 lists).
NLIST_MAX = 4096


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise BackendUnavailableError('faiss is not installed: pip install "clipface[search]"') from None
    return faiss


def faiss_if_installed() -> Any:
    """The ``faiss`` module, or ``None`` where it is not installed (for paths that have a fallback)."""
    try:
        return faiss_module()
    except BackendUnavailableError:
        return None


def faiss_threads_here(n: int) -> None:
    """FAISS's OpenMP threads for the parallel regions this thread starts (``omp_set_num_threads`` is a setting
    of the calling thread); nothing without FAISS."""
    faiss = faiss_if_installed()
    if faiss is not None:
        faiss.omp_set_num_threads(n)


def choose_kind(n: int, kind: str = "auto", flat_max: int = FLAT_MAX) -> str:
    """The kind for ``n`` vectors: ``kind`` itself unless ``"auto"`` (flat up to ``flat_max``, else the default)."""
    if kind not in KINDS:
        raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else DEFAULT_APPROXIMATE


def _nlist(n: int) -> int:
    """About ``4 sqrt(n)`` lists (a power of two, at most :data:`NLIST_MAX`), at least 39 training vectors each."""
    return max(1, min(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))), n // 39, NLIST_MAX))


def default_params(kind: str, n: int, dim: int) -> dict[str, Any]:
    """Parameters of ``kind`` for ``n`` vectors of ``dim``: the FAISS factory string and the query-time settings.

    Inverted files: about ``4 sqrt(n)`` lists, 8 probed until :mod:`.tune` measures how many are
    needed, ``k_factor x k`` candidates re-ranked exactly. ``ivfpqfs`` has ``dim / 16`` sub-quantisers
    of 4 bits and re-ranks 8 k (re-ranking 64 k gave the same recall at 2M and 10M vectors),
    ``ivfpq`` ``dim / 8`` of 8 bits (fewer bits on tiny sets). HNSW: 32 links per node,
    ``efConstruction`` 80, ``efSearch`` 128. Chosen by the sweeps of ``benchmarks/index_speed.py``.
    """
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"factory": "HNSW32_SQ8", "ef_construction": 80, "ef_search": 128, "k_factor": 4}
    nlist = _nlist(n)
    if kind == "ivfpqfs":
        m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        codes, k_factor = f"PQ{m}x4fs", 8
    elif kind == "ivfsq8":
        codes, k_factor = "SQ8", 4
    elif kind == "ivfpq":
        m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
        codes, k_factor = f"PQ{m}x{min(8, int(math.log2(max(2, n))))}np", 4  # np: no polysemous training
    else:
        raise FaceIndexError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS[1:])}")
    return {"factory": f"IVF{nlist},{codes}", "nlist": nlist, "nprobe": min(nlist, 8), "k_factor": k_factor}


def train_sample(vectors: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """A seeded sample of ``vectors`` big enough to train ``params``' index, as float32 in memory."""
    most = max(TRAIN_MIN, TRAIN_PER_LIST * int(params.get("nlist", 1)))
    if len(vectors) > most:
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), most, replace=False))
        return np.ascontiguousarray(vectors[rows], dtype=np.float32)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def new_ann(kind: str, dim: int, train: np.ndarray, params: dict[str, Any]) -> Any:
    """An empty FAISS index of ``kind``'s compressed codes (inner product), trained on ``train``."""
    faiss = faiss_module()
    if "factory" not in params:
        raise FaceIndexError(f"index kind {kind} has no FAISS codes")
    if kind != "hnsw" and len(train) < IVF_MIN:
        raise FaceIndexError(
            f"a {kind} index needs at least {IVF_MIN} images to train on, got {len(train)}: use --kind flat"
        )
    index = faiss.index_factory(dim, params["factory"], faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.min_points_per_centroid = 1  # no warnings on small sets; the size rule above applies
        pq = getattr(faiss.downcast_index(ivf), "pq", None)  # `index` keeps the object alive
        if pq is not None:
            pq.cp.min_points_per_centroid = 1
            pq.cp.max_points_per_centroid = 128  # codebooks from a smaller sample: twice as fast, as good here
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = params.get("ef_construction", 40)
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    set_search_params(index, params)
    return index


def set_search_params(index: Any, params: dict[str, Any]) -> None:
    """Apply the query-time parameters (``nprobe``, ``efSearch``) to a FAISS index."""
    faiss = faiss_module()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and "nprobe" in params:
        ivf.nprobe = int(params["nprobe"])
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efSearch = max(64, 2 * int(params["nprobe"]))
    if hasattr(index, "hnsw") and "ef_search" in params:
        index.hnsw.efSearch = int(params["ef_search"])


def read_faiss(path: Path, mmap: bool = True) -> Any:
    """Read a FAISS index, memory-mapped where this FAISS supports it.

    ``IO_FLAG_MMAP_IFC`` (FAISS >= 1.10) maps the codes of every kind used here without copying
    them, so a large index opens in a fraction of a second; older versions get ``IO_FLAG_MMAP``,
    then a plain read. An index whose lists were merged on disk (``ann.faiss`` beside
    ``ann.ivfdata``, :mod:`..parts`) maps them itself and is read with ``IO_FLAG_ONDISK_SAME_DIR``
    alone, which finds the ``.ivfdata`` file beside the index wherever the folder has moved. Measured
    with FAISS 1.15.1: ``IO_FLAG_MMAP_IFC`` cannot read such an index, and with ``IO_FLAG_MMAP`` it
    reads but its first search crashes the process (a segmentation fault).
    """
    faiss = faiss_module()
    if Path(path).with_suffix(".ivfdata").is_file():
        return faiss.read_index(str(path), getattr(faiss, "IO_FLAG_ONDISK_SAME_DIR", 0))
    flags = [getattr(faiss, "IO_FLAG_MMAP_IFC", None), getattr(faiss, "IO_FLAG_MMAP", None)] if mmap else []
    for flag in flags:
        if flag is not None:
            try:
                return faiss.read_index(str(path), flag)
            except RuntimeError:
                continue
    return faiss.read_index(str(path))
