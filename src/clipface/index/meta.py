"""An index's metadata, ``meta.sqlite``: one row per image, with file names kept exact.

A path or folder name that is not valid UTF-8 (Linux file names are bytes) is stored as the
name's bytes (a BLOB in the same column, :func:`~clipface.sql.to_sql_text`) and read back as
the very string Python made of it, so the path stored opens the same file. Every other value
is plain text, so indexes written before this stay readable.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.dataset import IDENTITY_KEY_VERSION
from ..sql import from_sql_text, select_in, to_sql_text
from .records import FaceIndexError, ImageRecord, IndexedImage, identity_key

__all__ = ["MetaDB"]

log = logging.getLogger("clipface.index")
#: Largest list of skipped files read (about 2M entries).
SKIPPED_MAX_BYTES = 256 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, relpath TEXT NOT NULL, identity TEXT,
    identity_key TEXT, width INTEGER NOT NULL, height INTEGER NOT NULL, sha256 TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS images_identity ON images(identity_key);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL,
    y1 REAL NOT NULL, score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_image ON faces(image_id);
CREATE TABLE IF NOT EXISTS second_faces (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL, x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL,
    y1 REAL NOT NULL, score REAL NOT NULL
);
"""
#: The tables of face rows: the face model's (``faces``) and the second face model's (``second_faces``).
FACE_TABLES = ("faces", "second_faces")
_COLUMNS = "id, path, relpath, identity, width, height, sha256"
#: SQLite integers are signed 64-bit: an id outside this range cannot be in an index (and would overflow a query).
_MAX_ID = 2**63


class MetaDB:
    """An index's metadata: the ``images`` and ``faces`` tables (one connection per thread) and, where given, the
    list of files left out (``skipped.json``)."""

    def __init__(self, path: str | Path, skipped_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.skipped_path = Path(skipped_path) if skipped_path is not None else None
        self._local = threading.local()
        with self.conn() as db:
            db.executescript(_SCHEMA)
        self._rekey()

    def _rekey(self) -> None:
        """Store every identity's key by today's :func:`identity_key` rule where an older rule made it (once).

        An index built before the keys saw through Unicode forms keeps working: its names are
        re-keyed when it is first opened (a read-only index is searched with the keys it has).
        """
        db = self.conn()
        if db.execute("PRAGMA user_version").fetchone()[0] >= IDENTITY_KEY_VERSION:
            return
        try:
            with db:
                rows = db.execute("SELECT DISTINCT identity FROM images WHERE identity IS NOT NULL").fetchall()
                for (stored,) in rows:
                    key = to_sql_text(identity_key(from_sql_text(stored) or ""))
                    db.execute("UPDATE images SET identity_key = ? WHERE identity = ?", (key, stored))
                db.execute(f"PRAGMA user_version = {IDENTITY_KEY_VERSION}")
        except sqlite3.OperationalError as exc:  # a read-only copy of an index
            log.warning("%s: identity keys of an older rule kept (%s); rebuild the index to re-key it", self.path, exc)

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            self._local.conn = conn
        return conn

    def count(self) -> int:
        return int(self.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def insert(self, start: int, records: Sequence[ImageRecord]) -> None:
        """Add ``records`` as ids ``start, start + 1, ...`` (inside the caller's transaction)."""
        rows = [
            (
                start + i,
                to_sql_text(r.path),
                to_sql_text(r.relpath),
                to_sql_text(r.identity),
                to_sql_text(identity_key(r.identity)) if r.identity else None,
                r.width,
                r.height,
                r.sha256,
            )
            for i, r in enumerate(records)
        ]
        self.conn().executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def insert_faces(
        self, rows: Sequence[tuple[int, int, float, float, float, float, float]], table: str = "faces"
    ) -> None:
        """Add face rows ``(face id, image id, x0, y0, x1, y1, score)`` to ``table`` (:data:`FACE_TABLES`; inside the
        caller's transaction)."""
        self.conn().executemany(f"INSERT INTO {_face_table(table)} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def face_count(self, table: str = "faces") -> int:
        return int(self.conn().execute(f"SELECT COUNT(*) FROM {_face_table(table)}").fetchone()[0])

    def face_images(self, table: str = "faces") -> list[int]:
        """The image id of every face of ``table``, by face id."""
        sql = f"SELECT image_id FROM {_face_table(table)} ORDER BY id"
        return [int(r[0]) for r in self.conn().execute(sql)]

    def face_boxes(self, face_ids: Iterable[int]) -> dict[int, tuple[float, float, float, float]]:
        """The box of each of these faces."""
        valid = [int(i) for i in face_ids if 0 <= int(i) < _MAX_ID]
        sql = "SELECT id, x0, y0, x1, y1 FROM faces WHERE id IN ({})"
        return {int(r[0]): (r[1], r[2], r[3], r[4]) for r in select_in(self.conn(), sql, valid)}

    def images(self, ids: Iterable[int]) -> dict[int, IndexedImage]:
        """Metadata of the images with these ids (unknown and out-of-range ids are absent)."""
        valid = [int(i) for i in ids if 0 <= int(i) < _MAX_ID]
        sql = f"SELECT {_COLUMNS} FROM images WHERE id IN ({{}})"
        return {row[0]: _image(row) for row in select_in(self.conn(), sql, valid)}

    def image(self, image_id: int) -> IndexedImage | None:
        """Metadata of one image, or ``None``."""
        return self.images([image_id]).get(image_id)

    def skipped(self) -> list[dict[str, str]]:
        """Files left out of the index so far, with reasons (a damaged list is a :class:`FaceIndexError`)."""
        path = self.skipped_path
        if path is None or not path.is_file():
            return []
        try:
            entries = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size <= SKIPPED_MAX_BYTES else None
        except (OSError, ValueError) as exc:
            raise FaceIndexError(f"{path}: damaged list of skipped files ({exc})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise FaceIndexError(f"{path}: damaged list of skipped files (not a JSON list of objects)")
        return entries

    def skipped_or_set_aside(self) -> list[dict[str, str]]:
        """:meth:`skipped`; a damaged list is renamed ``skipped.json.damaged`` (kept, told) and a new one begun."""
        try:
            return self.skipped()
        except FaceIndexError as exc:
            assert self.skipped_path is not None
            aside = self.skipped_path.with_name(self.skipped_path.name + ".damaged")
            self.skipped_path.replace(aside)
            log.warning("%s; kept as %s, a new list begun", exc, aside.name)
            return []

    def images_of(self, identity: str) -> list[IndexedImage]:
        """Every image of a person (name matched with :func:`identity_key`), by id."""
        sql = f"SELECT {_COLUMNS} FROM images WHERE identity_key = ? ORDER BY id"
        return [_image(row) for row in self.conn().execute(sql, (to_sql_text(identity_key(identity)),))]

    def n_images_of(self, identity: str) -> int:
        """Number of images of a person."""
        sql = "SELECT COUNT(*) FROM images WHERE identity_key = ?"
        return int(self.conn().execute(sql, (to_sql_text(identity_key(identity)),)).fetchone()[0])

    def n_identities(self) -> int:
        """Number of distinct known identities."""
        return int(self.conn().execute("SELECT COUNT(DISTINCT identity_key) FROM images").fetchone()[0])

    def known(self, shas: Iterable[str]) -> set[str]:
        """Which of these SHA-256s are indexed."""
        return {r[0] for r in select_in(self.conn(), "SELECT sha256 FROM images WHERE sha256 IN ({})", shas)}


def _image(row: tuple[Any, ...]) -> IndexedImage:
    i, path, relpath, identity, width, height, sha = row
    return IndexedImage(
        path=from_sql_text(path) or "",
        relpath=from_sql_text(relpath) or "",
        identity=from_sql_text(identity),
        width=width,
        height=height,
        sha256=sha,
        id=i,
    )


def _face_table(table: str) -> str:
    """``table`` if it is one of :data:`FACE_TABLES` (the names are spliced into SQL)."""
    if table not in FACE_TABLES:
        raise ValueError(f"unknown face table {table!r}")
    return table
