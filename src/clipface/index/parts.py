"""A new index's codes built in parts by many workers, then merged: autofaiss's distributed build of LAION's indices.

As autofaiss does it, and FAISS's ``demo_ondisk_ivf.py``: the codes are trained once, on a sample
(:func:`~.ann.faiss_backend.train_sample`, :func:`~.ann.faiss_backend.new_ann`), and the empty trained
index is written to ``INDEX/ann.parts/trained-HASH.faiss`` (reused by a rerun over the same sample).
Each worker (a Ray task, :func:`clipface.index.ray.add_parts_on_ray`, or this process,
:func:`run_here`) reads it, memory-maps its slice of rows of ``vectors.f32`` (the folder must be at the
same path on every node), adds them with their row numbers as ids (``add_with_ids``) and writes a
part file named by its rows, the trained index and a hash of its rows' vectors: a rerun reuses the
parts already written and only the parts of this build are kept. The driver then merges the parts'
inverted lists:

* **on disk**, for the 8-bit codes (``ivfpq``, ``ivfsq8``): ``OnDiskInvertedLists.merge_from_multiple``,
  by FAISS's ``contrib/ondisk.py::merge_ondisk``, writes every list into ``INDEX/ann.ivfdata``;
  ``ann.faiss`` then holds the quantisers and the lists' offsets, and a served index maps its codes
  from ``ann.ivfdata``. FAISS writes that file's absolute path into ``ann.faiss``; it is read with
  ``IO_FLAG_ONDISK_SAME_DIR`` (:func:`~.ann.faiss_backend.read_faiss`), which looks for it beside
  ``ann.faiss``, so the folder can be moved (measured with FAISS 1.15.1: a moved folder opens with the
  flag, and fails without it; with ``IO_FLAG_MMAP`` added the index reads, then crashes at its first
  search, and ``IO_FLAG_MMAP_IFC`` cannot read it at all).

Not for fast-scan codes (``ivfpqfs``, the default kind), whose codes are still added by the driver,
in one process. Measured with FAISS 1.15.1: ``merge_from_multiple`` refuses them
(``il->code_size == code_size`` fails: fast-scan's ``BlockInvertedLists`` packs 32 codes into
interleaved blocks and reports no per-code size); ``IndexIVF.merge_from`` of fast-scan parts gave
FAISS's own answers on Gaussian vectors but corrupted the heap on clustered ones (glibc: "double free
or corruption"), as if packed blocks were appended to partly filled ones; and ``sa_encode`` on the
workers with ``add_sa_codes`` in the driver gave wrong answers (0.2% of the ids right).

An index whose codes were merged on disk is not appended to (``index add``): see
:meth:`~.vectors.VectorStore.check_appendable`.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .ann.faiss_backend import faiss_module, new_ann, read_faiss, set_search_params, train_sample
from .records import FaceIndexError
from .rows import read_rows, slices
from .vectors import IVFDATA, VECTORS

__all__ = ["PARTS", "ROWS_PER_PART", "PartJob", "PartResult", "PartsBuild", "add_part", "merge_parts", "run_here"]

#: The folder of the trained index and the parts, in the index folder.
PARTS = "ann.parts"
#: Most rows a part holds (a rerun redoes at most this many per part lost).
ROWS_PER_PART = 500_000
#: Rows read and added at a time.
CHUNK = 65_536


@dataclass(frozen=True)
class PartJob:
    """Rows ``[start, stop)`` of the index folder's vectors, to be added to the trained index at ``trained``."""

    folder: str
    trained: str
    start: int
    stop: int
    dim: int


@dataclass
class PartResult:
    """A part file, and whether this run wrote it (``False``: an earlier run's, reused)."""

    path: str
    start: int
    stop: int
    written: bool
    node: str = ""


def _atomic_write(index: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    faiss_module().write_index(index, str(tmp))
    os.replace(tmp, path)


def add_part(job: PartJob) -> PartResult:
    """Add one slice of rows (ids: their row numbers) to a copy of the trained index and write it as a part file;
    a part already written for the same trained index and vectors is reused."""
    folder = Path(job.folder)
    rows = read_rows(folder / VECTORS, job.stop, job.dim, True, "vector", start=job.start)
    h = hashlib.sha256(Path(job.trained).name.encode())
    for a in range(0, len(rows), CHUNK):
        h.update(np.ascontiguousarray(rows[a : a + CHUNK]).tobytes())
    path = folder / PARTS / f"part-{job.start:012d}-{job.stop:012d}-{h.hexdigest()[:16]}.faiss"
    if path.is_file():
        return PartResult(str(path), job.start, job.stop, False)
    index = faiss_module().read_index(job.trained)
    for a in range(0, len(rows), CHUNK):
        chunk = np.ascontiguousarray(rows[a : a + CHUNK], dtype=np.float32)
        index.add_with_ids(chunk, np.arange(job.start + a, job.start + a + len(chunk), dtype=np.int64))
    _atomic_write(index, path)
    return PartResult(str(path), job.start, job.stop, True)


def run_here(jobs: list[PartJob]) -> list[PartResult]:
    """The parts added one after another by this process."""
    return [add_part(j) for j in jobs]


def merge_parts(trained: Any, parts: list[str], ivfdata: Path) -> Any:
    """The parts' inverted lists merged on disk into ``ivfdata``, under ``trained`` (empty): the index."""
    from faiss.contrib.ondisk import merge_ondisk

    ivf = faiss_module().extract_index_ivf(trained)
    if ivf.invlists.code_size != ivf.code_size:  # fast-scan's BlockInvertedLists: see the module's docstring
        raise FaceIndexError(f"{ivfdata}: codes of this kind cannot be merged on disk")
    ivfdata.unlink(missing_ok=True)
    merge_ondisk(trained, parts, str(ivfdata))
    return trained


Runner = Callable[[list[PartJob]], list[PartResult]]


class PartsBuild:
    """Builds a new index's codes in parts, ``run`` adding them (on Ray, or :func:`run_here`), in at least
    ``workers`` parts of at most :data:`ROWS_PER_PART` rows; :attr:`report` says what the last build did."""

    KINDS = ("ivfsq8", "ivfpq")

    def __init__(self, run: Runner = run_here, workers: int = 1) -> None:
        self.run, self.workers = run, workers
        self.trained: Path | None = None
        self.report: dict[str, Any] = {}

    def applies(self, kind: str) -> bool:
        """Whether ``kind``'s codes are built in parts: 8-bit inverted files (fast-scan and HNSW: in one process)."""
        return kind in self.KINDS

    def train(self, folder: Path, kind: str, dim: int, params: dict[str, Any], vectors: np.ndarray) -> Any:
        """The empty index of ``kind`` trained on a sample of ``vectors``, written for the workers (or reused)."""
        sample = train_sample(vectors, params)
        key = hashlib.sha256(f"{params['factory']}|{dim}|".encode() + sample.tobytes()).hexdigest()[:16]
        (Path(folder) / PARTS).mkdir(exist_ok=True)
        self.trained = Path(folder) / PARTS / f"trained-{key}.faiss"
        if self.trained.is_file():
            ann = read_faiss(self.trained, mmap=False)
            set_search_params(ann, params)
            return ann
        ann = new_ann(kind, dim, sample, params)
        _atomic_write(ann, self.trained)
        return ann

    def add(self, folder: Path, trained: Any, count: int, dim: int, params: dict[str, Any]) -> Any:
        """The codes of the ``count`` rows of ``folder``'s vectors: added in parts, merged; ``params`` record how."""
        assert self.trained is not None and trained.ntotal == 0, "train() first, on a new index"
        n_parts = max(self.workers, math.ceil(count / ROWS_PER_PART))
        cuts = slices(count, min(n_parts, count))
        results = self.run([PartJob(str(folder), str(self.trained), a, b, dim) for a, b in cuts])
        merged = merge_parts(trained, [r.path for r in results], Path(folder) / IVFDATA)
        keep = {self.trained.name, *(Path(r.path).name for r in results)}
        for stale in (Path(folder) / PARTS).iterdir():  # other builds' parts and trained indexes
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        params["parts"] = {"count": len(results), "merged": "on disk"}
        params["ivfdata"] = IVFDATA
        written = sum(r.written for r in results)
        nodes = {r.node for r in results if r.written and r.node}
        self.report = {**params["parts"], "written": written, "reused": len(results) - written, "nodes": len(nodes)}
        return merged
