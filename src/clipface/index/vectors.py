"""An index's vectors: a memory-mapped float32 file, plus, for approximate kinds, a FAISS index of compressed codes.

* ``vectors.f32``: row ``i`` is image ``i``'s unit vector, ``dim`` float32 values, no header; the
  manifest's count says how many rows are committed (a row beyond it is left over from an
  interrupted write and is overwritten by the next one). Opened with ``np.memmap``, so a large
  index opens at once and only the pages a search touches are read.
* ``ann.faiss``: the codes of an approximate kind (:mod:`.ann.faiss_backend`), which propose
  ``k_factor x k`` candidates per query; the vectors re-rank them exactly (:mod:`.ann.approximate`).
  Exact (``flat``) indexes have none and are searched by :func:`~.exact.exact_search`.
* ``ann.ivfdata``: the inverted lists of codes merged on disk by a build in parts (:mod:`.parts`),
  mapped when the index is opened; ``ann.faiss`` then holds the quantisers and the lists' offsets.

Index folders of the first format kept everything in one FAISS file (``vectors.faiss``: a flat
index, IVF-PQ inside an ``IndexRefineFlat``, or ``IndexHNSWFlat``); they are read through the
same two parts (the flat vectors FAISS holds, and the codes) and written in this layout on the
next change.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .ann.approximate import approximate_search
from .ann.exact import exact_search
from .ann.faiss_backend import faiss_module, new_ann, read_faiss, set_search_params, train_sample
from .ann.probe import Prober
from .records import FaceIndexError
from .rows import append_rows, map_rows, read_rows, scattered_view

__all__ = ["ANN", "IVFDATA", "LEGACY", "VECTORS", "VectorStore"]

VECTORS, ANN, LEGACY, IVFDATA = "vectors.f32", "ann.faiss", "vectors.faiss", "ann.ivfdata"
#: Queries per FAISS call and re-ranking batch.
QUERY_CHUNK = 1024


def _flat_view(flat: Any) -> np.ndarray:
    """The ``(ntotal, d)`` float32 vectors a FAISS ``IndexFlat`` holds (a view, memory-mapped if the file is)."""
    faiss = faiss_module()
    flat = faiss.downcast_index(flat)
    n, d = int(flat.ntotal), int(flat.d)
    if n == 0:
        return np.zeros((0, d), np.float32)
    return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)


class VectorStore:
    """The vectors of one index folder and, for approximate kinds, their codes."""

    def __init__(self, folder: Path, dim: int, kind: str, params: dict[str, Any], vectors: np.ndarray, ann: Any):
        self.dir, self.dim, self.kind, self.params = Path(folder), dim, kind, params
        self.vectors = vectors
        self.ann = ann
        self._legacy: Any = None  # a first-format FAISS index whose memory the views point into
        self._ann_mapped = False  # codes read with IO_FLAG_MMAP_IFC point into the file: read-only
        self._upgraded = False
        self._prober: Prober | None = None
        self._scattered: tuple[np.ndarray, np.ndarray] | None = None  # (vectors, their MADV_RANDOM map)
        self._parts: Any = None  # a new index's codes built in parts (:class:`~.parts.PartsBuild`)
        if ann is not None:
            set_search_params(ann, params)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: Path, kind: str, dim: int, params: dict[str, Any], train: np.ndarray, parts: Any = None
    ) -> VectorStore:
        """An empty store of ``kind``, its codes trained on (a sample of) ``train``; ``parts``: a
        :class:`~.parts.PartsBuild` that trains them and adds the first rows in parts, where it applies."""
        parts = parts if parts is not None and parts.applies(kind) else None
        if kind == "flat":
            ann = None
        elif parts is not None:
            ann = parts.train(folder, kind, dim, params, train)
        else:
            ann = new_ann(kind, dim, train_sample(train, params), params)
        (Path(folder) / VECTORS).unlink(missing_ok=True)
        store = cls(folder, dim, kind, params, np.zeros((0, dim), np.float32), ann)
        store._parts = parts
        return store

    @classmethod
    def open(cls, folder: Path, dim: int, kind: str, params: dict[str, Any], count: int, mmap: bool = True):
        """The committed ``count`` vectors of an index folder (either format), memory-mapped if ``mmap``."""
        folder = Path(folder)
        if not (folder / VECTORS).is_file() and (folder / LEGACY).is_file():
            return cls._open_legacy(folder, dim, kind, params, mmap)
        vectors = read_rows(folder / VECTORS, count, dim, mmap, "vector")
        ann = None
        if kind != "flat":
            try:
                ann = read_faiss(folder / ANN, mmap=mmap)
            except RuntimeError as exc:  # FAISS reports a missing, cut or foreign file this way
                first = (str(exc).strip().splitlines() or ["unreadable"])[-1][:160]
                raise FaceIndexError(
                    f"{folder / ANN}: not a readable FAISS index ({first}); rebuild the index"
                ) from None
        store = cls(folder, dim, kind, params, vectors, ann)
        store._ann_mapped = mmap and ann is not None
        return store

    @classmethod
    def _open_legacy(cls, folder: Path, dim: int, kind: str, params: dict[str, Any], mmap: bool) -> VectorStore:
        faiss = faiss_module()
        try:
            index = read_faiss(folder / LEGACY, mmap=mmap)  # read_index gives the derived type (and owns it)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or ["unreadable"])[-1][:160]
            raise FaceIndexError(
                f"{folder / LEGACY}: not a readable FAISS index ({first}); rebuild the index"
            ) from None
        if isinstance(index, faiss.IndexRefine):  # the first release's IVF-PQ: codes + exact vectors
            vectors, ann = _flat_view(index.refine_index), faiss.downcast_index(index.base_index)
            params = {"k_factor": 4, **params}
        elif isinstance(index, faiss.IndexHNSWFlat):
            vectors, ann = _flat_view(index.storage), index
            params = {"k_factor": 1, **params}
        else:
            vectors, ann = _flat_view(index), None
        store = cls(folder, dim, kind, params, vectors, ann)
        store._legacy = index
        return store

    # -- searching -----------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` best rows, exact scores: ``(scores, ids)``, ``-1`` where there are fewer."""
        if self.ann is None:
            return exact_search(self.vectors, queries, k)
        fetch = max(k, int(k * self.params.get("k_factor", 1)))
        if hasattr(self.ann, "hnsw"):
            self.ann.hnsw.efSearch = max(int(self.params.get("ef_search", 16)), fetch)
        out_s, out_i = [], []
        for i in range(0, len(queries), QUERY_CHUNK):
            q = np.ascontiguousarray(queries[i : i + QUERY_CHUNK], dtype=np.float32)
            s, ids = approximate_search(self._probe(), self._for_rerank(), q, k, min(fetch, max(1, self.count)))
            out_s.append(s)
            out_i.append(ids)
        return np.concatenate(out_s), np.concatenate(out_i)

    def _for_rerank(self) -> np.ndarray:
        """The vectors mapped for scattered reads (:func:`~.rows.scattered_view`), made once per map."""
        if self._scattered is None or self._scattered[0] is not self.vectors:
            self._scattered = (self.vectors, scattered_view(self.vectors))
        return self._scattered[1]

    def _probe(self) -> Prober:
        """The codes' searcher (its copy of the centroids made once per FAISS object)."""
        if self._prober is None or self._prober.index is not self.ann:
            self._prober = Prober(self.ann)
        return self._prober

    # -- writing -------------------------------------------------------------------------------
    def append(self, new: np.ndarray) -> None:
        """Add ``new`` rows after the committed ones: to ``vectors.f32`` (written now) and to the codes (in memory).

        The manifest's count is what commits them; :meth:`write_ann` writes the codes.
        """
        new = np.ascontiguousarray(new, dtype=np.float32).reshape(-1, self.dim)
        if self._legacy is not None and not self._upgraded:  # first format: write this layout from now on
            self._write_all(np.asarray(self.vectors))
        elif self._ann_mapped:
            self.ann = read_faiss(self.dir / ANN, mmap=False)
            set_search_params(self.ann, self.params)
            self._ann_mapped = False
        self.vectors = append_rows(self.dir / VECTORS, self.count, new)
        if self.ann is not None and len(new) and self._parts is not None:  # a new index, added by workers
            self.ann = self._parts.add(self.dir, self.ann, self.count, self.dim, self.params)
            set_search_params(self.ann, self.params)
            self._parts = None
        elif self.ann is not None and len(new):
            self.ann.add(new)

    def check_appendable(self) -> None:
        """Refuse, in one line, to append to codes merged on disk (``ann.ivfdata``, :mod:`.parts`)."""
        if self.params.get("ivfdata"):
            raise FaceIndexError(
                f"{self.dir}: its codes were merged on disk ({self.params['ivfdata']}) by a build in parts and "
                "cannot be appended to; rebuild the index with the new images (index build --overwrite)"
            )

    def _write_all(self, vectors: np.ndarray) -> None:
        """First format to this one: the vectors to ``vectors.f32``, the codes from a writable (unmapped) read."""
        path = self.dir / VECTORS
        with open(path, "wb") as fh:
            for i in range(0, len(vectors), 65_536):
                fh.write(np.ascontiguousarray(vectors[i : i + 65_536], dtype=np.float32).tobytes())
        if self.ann is not None:
            owner = read_faiss(self.dir / LEGACY, mmap=False)
            self.ann = faiss_module().downcast_index(owner.base_index) if hasattr(owner, "base_index") else owner
            self._legacy = owner  # owns the codes now (IndexRefine's base index lives inside it)
            set_search_params(self.ann, self.params)
        else:
            self._legacy = None
        self.vectors = map_rows(path, len(vectors), self.dim)
        self._upgraded = True

    def write_ann(self) -> Path | None:
        """Write the codes to a temporary file beside ``ann.faiss`` and return it (``None`` for exact indexes)."""
        if self.ann is None:
            return None
        fd, tmp = tempfile.mkstemp(prefix=f".{ANN}.", suffix=".tmp", dir=self.dir)
        os.close(fd)
        faiss_module().write_index(self.ann, tmp)
        return Path(tmp)

    def finish_legacy_upgrade(self) -> None:
        """Remove the first format's file once the new files are committed."""
        (self.dir / LEGACY).unlink(missing_ok=True)
