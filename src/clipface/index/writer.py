"""Writing an index folder safely: one writer at a time, files replaced atomically under names of their own.

Every process that writes an index folder (``index build``, ``index add``, shards) holds its
lock file, ``.write.lock`` (``filelock``: ``fcntl`` on Linux, released by the kernel if the
process dies). A second writer waits up to :data:`WRITE_TIMEOUT` seconds, then stops with one
line. New vectors are appended to ``vectors.f32`` after the committed rows (the manifest's count
commits them; rows beyond it are overwritten by the next write); an approximate kind's codes
are written to a unique temporary name (``mkstemp``) and renamed over ``ann.faiss`` in the same
SQLite transaction that adds the metadata rows, so a failure at any point leaves the committed
index as it was and no temporary file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, Mapping, Sequence

import numpy as np

from ..files import FILE_MODE, file_lock
from .meta import MetaDB
from .records import FaceIndexError, ImageRecord
from .vectors import ANN, VectorStore

__all__ = ["LOCK", "WRITE_TIMEOUT", "commit_rows", "fresh_dir", "unique", "write_lock"]

LOCK = ".write.lock"
#: Longest wait for another process writing to the same index, in seconds.
WRITE_TIMEOUT = 600.0


def write_lock(index_dir: Path, timeout: float | None = None) -> ContextManager[None]:
    """The folder's writer lock; after ``timeout`` seconds (default :data:`WRITE_TIMEOUT`), a one-line error."""
    wait = WRITE_TIMEOUT if timeout is None else timeout
    return file_lock(
        Path(index_dir) / LOCK,
        wait,
        f"{index_dir}: another process has been writing to this index for over {wait:.0f} s; try again when it has "
        "finished",
    )


def commit_rows(
    store: VectorStore,
    meta: MetaDB,
    start: int,
    records: list[ImageRecord],
    faces: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
) -> None:
    """Add ``records`` (ids from ``start``) and their face rows (``faces``: by table) to ``meta`` and write
    ``store``'s codes (``ann.faiss``): all or none."""
    tmp = store.write_ann()
    try:
        if tmp is not None:
            os.chmod(tmp, FILE_MODE)  # mkstemp's file is private; the index is as readable as its other files
        with meta.conn():
            meta.insert(start, records)
            for table, rows in (faces or {}).items():
                if rows:
                    meta.insert_faces(rows, table)
            if tmp is not None:
                os.replace(tmp, store.dir / ANN)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def unique(
    records: list[ImageRecord], vectors: np.ndarray, known: set[str]
) -> tuple[list[ImageRecord], np.ndarray, int]:
    """``records`` (and their vectors) less those whose SHA-256 is ``known`` or repeats; and how many were dropped."""
    keep = []
    for i, r in enumerate(records):
        if r.sha256 not in known:
            known.add(r.sha256)
            keep.append(i)
    return [records[i] for i in keep], vectors[keep], len(records) - len(keep)


def fresh_dir(index_dir: str | Path, overwrite: bool, manifest: str) -> Path:
    """``index_dir``, made if need be; an index already in it is an error unless ``overwrite``."""
    path = Path(index_dir)
    if (path / manifest).exists() and not overwrite:
        raise FaceIndexError(
            f"{path} already holds an index: add images with `clipface index add`, or rebuild with --overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
