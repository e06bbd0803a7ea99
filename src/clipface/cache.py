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

from .encoders.fingerprint import cache_root

_SCHEMA = "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)"


def embedding_key(model_fingerprint: str, preprocess_id: str, content_sha256: str) -> str:
    """The cache key of one image under one model and one preparation."""
    return hashlib.sha256(f"img|{model_fingerprint}|{preprocess_id}|{content_sha256}".encode()).hexdigest()


def text_key(model_fingerprint: str, text: str) -> str:
    """The cache key of one text under one model."""
    return hashlib.sha256(f"txt|{model_fingerprint}|{text}".encode()).hexdigest()


class EmbeddingCache:
    """A persistent map from cache keys to float32 vectors."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "embeddings.sqlite"
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The vectors present for ``keys`` (missing keys are absent from the result)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = conn.execute(
                f"SELECT key, dim, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == dim:  # a damaged row is treated as missing and recomputed
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

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        return {}

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        return None
