"""The metadata half of an index folder: ``meta.sqlite``, one row per image (id, paths, identity, size, SHA-256)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._util import select_in
from .records import ImageRecord, IndexedImage, identity_key

__all__ = ["META", "SCHEMA", "Metadata", "insert_rows", "unique_records"]

META = "meta.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, relpath TEXT NOT NULL, identity TEXT,
    identity_key TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS images_identity ON images(identity_key);
"""
COLUMNS = "id, path, relpath, identity, width, height, sha256"


class Metadata:
    """Reading an index folder's ``meta.sqlite`` (one connection per thread); needs ``dir`` and ``_local``."""

    dir: Path
    _local: threading.local

    # -- metadata ----------------------------------------------------------------------
    def images(self, ids: Iterable[int]) -> dict[int, IndexedImage]:
        """Metadata of the images with these ids (unknown ids are absent)."""
        # ids outside SQLite's 64-bit range cannot be in the index (and would overflow the query)
        valid = [int(i) for i in ids if 0 <= int(i) < 2**63]
        sql = f"SELECT {COLUMNS} FROM images WHERE id IN ({{}})"
        return {row[0]: _image(row) for row in select_in(self._db(), sql, valid)}

    def image(self, image_id: int) -> IndexedImage | None:
        """Metadata of one image, or ``None``."""
        return self.images([image_id]).get(image_id)

    def images_of(self, identity: str) -> list[IndexedImage]:
        """Every image of a person (name matched with :func:`identity_key`)."""
        sql = f"SELECT {COLUMNS} FROM images WHERE identity_key = ? ORDER BY id"
        return [_image(row) for row in self._db().execute(sql, (identity_key(identity),))]

    def n_identities(self) -> int:
        """Number of distinct known identities."""
        return int(self._db().execute("SELECT COUNT(DISTINCT identity_key) FROM images").fetchone()[0])

    def _known(self, shas: list[str]) -> set[str]:
        found: set[str] = {r[0] for r in select_in(self._db(), "SELECT sha256 FROM images WHERE sha256 IN ({})", shas)}
        return found

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.dir / META, timeout=60)
            self._local.conn = conn
        return conn


def _image(row: tuple[Any, ...]) -> IndexedImage:
    i, path, relpath, identity, width, height, sha = row
    return IndexedImage(path=path, relpath=relpath, identity=identity, width=width, height=height, sha256=sha, id=i)


def insert_rows(db: sqlite3.Connection, records: list[ImageRecord], start: int) -> None:
    """Insert ``records`` as images ``start``, ``start + 1``, ... (inside the caller's transaction)."""
    rows = [
        (start + i, r.path, r.relpath, r.identity, identity_key(r.identity) if r.identity else None, r.width, r.height)
        + (r.sha256,)
        for i, r in enumerate(records)
    ]
    db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def unique_records(
    records: list[ImageRecord], vectors: np.ndarray, known: set[str]
) -> tuple[list[ImageRecord], np.ndarray, int]:
    """``records`` (and their ``vectors``) whose SHA-256 is not in ``known`` nor earlier in the list; how many were
    dropped."""
    keep = []
    for i, r in enumerate(records):
        if r.sha256 not in known:
            known.add(r.sha256)
            keep.append(i)
    return [records[i] for i in keep], vectors[keep], len(records) - len(keep)
