"""On-disk embedding cache, keyed by model fingerprint, preprocessing and content hash.

One SQLite file (WAL mode) holds every vector. Each batch is written in one transaction, so a
run stopped at any point keeps every finished batch and the next run resumes from there; a
second identical run computes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..errors import ClipfaceError, UsageError
from ..files import cache_root
from ..sql import chunks
from ..textsafe import key_bytes

_SCHEMA = "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)"


def embedding_key(model_fingerprint: str, preprocess_id: str, content_sha256: str) -> str:
    """The cache key of one image under one model and one preparation."""
    return hashlib.sha256(key_bytes(f"img|{model_fingerprint}|{preprocess_id}|{content_sha256}")).hexdigest()


def text_key(model_fingerprint: str, text: str) -> str:
    """The cache key of one text under one model (``txt2``: texts cleaned as open_clip cleans them)."""
    return hashlib.sha256(key_bytes(f"txt2|{model_fingerprint}|{text}")).hexdigest()


ENV_VAR = "CLIPFACE_CACHE_DIR"


class CacheError(ClipfaceError):
    """A cache folder or database that cannot be used."""


class EmbeddingCache:
    """A persistent map from cache keys to float32 vectors."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        where = "cache_dir" if root is not None else f"${ENV_VAR}"
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(where, str(self.root), "is a file, not a folder (the embedding cache needs a folder)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(where, str(self.root), f"cannot create the cache folder ({exc.strerror or exc})") from None
        self.path = self.root / "embeddings.sqlite"
        self._local = threading.local()
        try:
            with self._conn() as conn:
                conn.execute(_SCHEMA)
                conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM emb LIMIT 1)").fetchone()
        except sqlite3.DatabaseError as exc:
            self._local.conn = None
            raise CacheError(
                f"{self.path}: not a usable embedding cache ({exc}); delete it (embeddings are recomputed) "
                "or choose another --cache-dir"
            ) from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """The vectors present for ``keys`` (missing keys are absent from the result).

        A row that does not decode to a finite float32 vector (of ``dim`` values, when given) is
        damaged: it is left out, so the caller recomputes it and the next write replaces it.
        """
        keys = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        conn = self._conn()
        for chunk in chunks(keys):
            rows = conn.execute(
                f"SELECT key, dim, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", list(chunk)
            ).fetchall()
            for key, n, blob in rows:
                if not (isinstance(blob, bytes) and isinstance(n, int) and n > 0 and len(blob) == 4 * n):
                    continue  # cut, of another type or another size
                vec = np.frombuffer(blob, dtype=np.float32)
                if (dim is None or n == dim) and np.isfinite(vec).all():
                    found[key] = vec
        return found

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors atomically (all of them or none)."""
        rows = [(k, int(v.size), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        conn = self._conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM emb").fetchone()[0])


class NullCache:
    """A cache that stores nothing (``--no-cache``)."""

    def get_many(self, keys: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        return {}

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        return None
