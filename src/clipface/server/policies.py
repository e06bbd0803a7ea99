"""Server policies: the opt-out list (applied to every answer) and a per-client rate limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable

from ..errors import ClipfaceError
from ..search.records import IndexedImage, identity_key

__all__ = ["OptOutList", "RateLimiter"]


class OptOutList:
    """People (identity names) and images (SHA-256) removed from every answer; the file is re-read when it changes."""

    def __init__(self, path: str | Path | None = None, entries: Iterable[str] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._fixed = list(entries)
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self.identities: set[str] = set()
        self.hashes: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (a missing file is an error at start only)."""
        lines = list(self._fixed)
        if self.path is not None:
            try:
                mtime = self.path.stat().st_mtime
            except OSError as exc:
                if self._mtime is None:
                    raise ClipfaceError(f"opt-out list {self.path}: cannot read ({exc.strerror or exc})") from None
                return  # keep the last good list
            if mtime == self._mtime:
                return
            lines += self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            self._mtime = mtime
        entries = [ln.split("#", 1)[0].strip() for ln in lines]
        entries = [e for e in entries if e]
        with self._lock:
            self.hashes = {e.lower() for e in entries if _is_sha256(e)}
            self.identities = {identity_key(e) for e in entries if not _is_sha256(e)}

    def blocks(self, image: IndexedImage) -> bool:
        """Whether ``image`` must not appear in answers."""
        return image.sha256 in self.hashes or (
            image.identity is not None and identity_key(image.identity) in self.identities
        )

    def __len__(self) -> int:
        return len(self.identities) + len(self.hashes)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests per minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: float, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.refill = float(per_minute) / 60.0
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Take one token for ``client``: 0 when allowed, else the seconds until the next token."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_clients:
                    self._forget_idle(now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.refill

    def _forget_idle(self, now: float) -> None:
        full = self.capacity / self.refill
        self._buckets = {c: (t, last) for c, (t, last) in self._buckets.items() if now - last < full}
