"""Headerless float32 row files (``vectors.f32``, ``faces.f32``): row ``i`` is ``dim`` values.

The manifest's count says how many rows are committed; a row beyond it is left over from an
interrupted write and is overwritten by the next append. Opened with ``np.memmap``, so a large
file opens at once and only the pages a search touches are read.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from .records import FaceIndexError

__all__ = ["append_rows", "map_rows", "read_rows", "scattered_view", "slices"]


def read_rows(path: Path, count: int, dim: int, mmap: bool, noun: str, start: int = 0) -> np.ndarray:
    """Rows ``start`` to ``count`` of ``path`` (memory-mapped if ``mmap``); a short or missing file names the
    ``noun``."""
    need = count * dim * 4
    size = path.stat().st_size if path.is_file() else -1
    if size < need:
        found = "is missing" if size < 0 else f"holds {size} bytes"
        raise FaceIndexError(f"{path}: not a readable {noun} file ({found}, {count} {noun}s need {need}); rebuild")
    if count == start:
        return np.zeros((0, dim), np.float32)
    offset = start * dim * 4
    if mmap:
        return np.memmap(path, dtype=np.float32, mode="r", shape=(count - start, dim), offset=offset)
    return np.fromfile(path, dtype=np.float32, count=(count - start) * dim, offset=offset).reshape(-1, dim)


def slices(count: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``[lo, hi)`` row ranges covering ``count`` rows, sizes differing by at most one."""
    edges = np.linspace(0, count, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def map_rows(path: Path, count: int, dim: int) -> np.ndarray:
    """A read-only memory map of the first ``count`` rows (an empty array for none)."""
    if count == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim))


def append_rows(path: Path, before: int, new: np.ndarray) -> np.ndarray:
    """Write ``new`` after the ``before`` committed rows (dropping rows of an interrupted write), synced to disk;
    the map of all rows."""
    dim = new.shape[1]
    with open(path, "r+b" if path.exists() else "w+b") as fh:
        fh.truncate(before * dim * 4)
        fh.seek(0, os.SEEK_END)
        fh.write(np.ascontiguousarray(new, dtype=np.float32).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    return map_rows(path, before + len(new), dim)


#: Smallest row file re-ranked through a ``MADV_RANDOM`` map (``benchmarks/cold_rerank.py``: on a cold 100 MB file,
#: 16,000 rows touch most pages and read-ahead wins; on a cold 2 GB file it reads 30x the bytes needed).
SCATTERED_MIN_BYTES = 512 << 20


def scattered_view(rows: np.ndarray, min_bytes: int = SCATTERED_MIN_BYTES) -> np.ndarray:
    """A second map of a memory-mapped row file, for scattered reads (re-ranking candidates).

    By default the kernel reads ahead around every page fault (128 KB here), which suits the
    sequential pass of exact search; re-ranking touches a few rows of 2 KB at random, so on a file
    that is not in the page cache each row would cost a whole read-ahead window. This map is marked
    ``MADV_RANDOM``, which only affects this mapping. A map smaller than ``min_bytes``, where a batch
    touches most pages anyway, and anything that is not a memory map come back as they are.
    """
    name = getattr(rows, "filename", None)
    if not isinstance(rows, np.memmap) or name is None or len(rows) == 0 or rows.nbytes < min_bytes:
        return rows
    view = np.memmap(name, dtype=rows.dtype, mode="r", shape=rows.shape, offset=rows.offset)
    raw = getattr(view, "_mmap", None)  # numpy keeps the mmap object here
    if raw is not None and hasattr(raw, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)
    return view
