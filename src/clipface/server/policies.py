"""Server policies: the opt-out list (applied to every answer) and a per-client rate limit."""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

from ..errors import ClipfaceError
from ..index.records import IndexedImage, identity_key

__all__ = ["OptOutList", "RateLimiter", "decode_text"]

log = logging.getLogger("clipface.server")


class OptOutList:
    """People (identity names) and images (SHA-256) removed from every answer; the file is re-read when it changes.

    The file is UTF-8, or any text with a byte-order mark (UTF-8, UTF-16, UTF-32); line ends may
    be LF or CRLF. A file that cannot be decoded is refused: at start with a
    :class:`~clipface.errors.ClipfaceError` (the server does not start), on a later reload by
    keeping the last good list and logging why, so a bad save never silently empties the list.
    """

    def __init__(self, path: str | Path | None = None, entries: Iterable[str] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._fixed = list(entries)
        self._mtime: float | None = None
        self._refused_mtime: float | None = None
        self._lock = threading.Lock()
        self.identities: set[str] = set()
        self.hashes: set[str] = set()
        #: ``(line number, kind, key)`` of each entry, in file order (fixed entries first, numbered 0).
        self.entries: list[tuple[int, str, str]] = []
        #: Bumped at every (re)load, so that work derived from the list can be redone.
        self.version = 0
        #: Why the last reload was refused (``None`` when the list in use is the file's current one).
        self.error: str | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (a missing or undecodable file is an error at start)."""
        lines = [(0, line) for line in self._fixed]
        if self.path is not None:
            mtime: float | None = None
            try:
                mtime = self.path.stat().st_mtime
                if mtime in (self._mtime, self._refused_mtime):
                    return
                text = decode_text(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                if self._mtime is None:
                    raise ClipfaceError(f"opt-out list {self.path}: cannot read ({reason})") from None
                if reason != self.error:  # once per problem, not once per request
                    log.error("opt-out list %s: cannot read (%s); keeping the last good list", self.path, reason)
                self.error, self._refused_mtime = reason, mtime
                return
            lines += list(enumerate(text.splitlines(), start=1))
            self._mtime = mtime
        entries = []
        for number, line in lines:
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append((number, "image", entry.lower()) if _is_sha256(entry) else (number, "person", entry))
        with self._lock:
            self.entries = entries
            self.hashes = {key for _, kind, key in entries if kind == "image"}
            self.identities = {identity_key(key) for _, kind, key in entries if kind == "person"}
            self.version += 1
            self.error = None

    def blocks(self, image: IndexedImage) -> bool:
        """Whether ``image`` must not appear in answers."""
        return image.sha256 in self.hashes or (
            image.identity is not None and identity_key(image.identity) in self.identities
        )

    def __len__(self) -> int:
        return len(self.identities) + len(self.hashes)


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: its mark begins with UTF-16's little-endian one
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """Text of a list file: the encoding its byte-order mark names, else strict UTF-8; else :class:`ValueError`."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"not valid {encoding.upper()} although it starts with its byte-order mark ({exc.reason} "
                    f"at byte {exc.start})"
                ) from None
    if b"\x00" in data:
        raise ValueError("it holds NUL bytes: UTF-16 or UTF-32 without a byte-order mark? save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests per minute, bursts up to ``per_minute``.

    At most ``max_clients`` buckets are kept, least recently seen first out, each step in
    constant time: a flood of new client addresses costs every request the same, and a client
    whose bucket was dropped starts again with a full one (never with less).
    """

    def __init__(self, per_minute: float, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.refill = float(per_minute) / 60.0
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Take one token for ``client``: 0 when allowed, else the seconds until the next token."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return 0.0 if allowed else (1.0 - tokens) / self.refill

    def __len__(self) -> int:
        return len(self._buckets)
