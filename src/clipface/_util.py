"""Small helpers shared by every stage: atomic writes, JSON cleaning, file names as text, chunked SQL ``IN``, hashes,
1-NN.

Nothing here imports another clipface module except :mod:`clipface.errors`, so any stage may use it.

File names on Linux are bytes. Python hands a name that is not valid UTF-8 over as a string
holding surrogate escapes (``b"uniq\\xff.jpg"`` becomes ``"uniq\\udcff.jpg"``), which opens the
same file again but cannot be encoded as UTF-8. Such strings are kept exact wherever they are
read back (:func:`to_sql_text` stores their bytes in SQLite) and shown as :func:`readable` text
(``uniq\\xff.jpg``) in JSON, Markdown, HTML and on the terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import sqlite3
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

#: Distributions whose versions every ``results.json`` records.
MAIN_DEPENDENCIES = ("torch", "transformers", "numpy", "Pillow", "dlib-bin", "onnxruntime", "faiss-cpu", "protobuf")
#: Rows per ``IN (...)`` clause: well under SQLite's limit on bound parameters.
SQL_CHUNK = 500


# -- file names as text ------------------------------------------------------------------------
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def readable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name shown as ``\\xNN`` (printable, valid UTF-8).

    Strings without surrogate escapes come back unchanged.
    """
    return text if text.isascii() or not _SURROGATE.search(text) else _SURROGATE.sub(_escape, text)


def key_bytes(text: str) -> bytes:
    """UTF-8 bytes of ``text`` for hashing: a string made from an undecodable file name still has one stable key."""
    return text.encode("utf-8", errors="surrogatepass")


def to_sql_text(text: str | None) -> str | bytes | None:
    """A string as SQLite stores it: itself when it is valid UTF-8, else the file name's bytes (a BLOB).

    :func:`from_sql_text` turns either back into the very same string, so a stored path opens
    the same file.
    """
    if text is None or text.isascii() or not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to: keep a readable form
        return readable(text)


def from_sql_text(value: str | bytes | None) -> str | None:
    """The string stored by :func:`to_sql_text`."""
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


#: Permissions of files written atomically: what ``open`` would give under this process's umask.
FILE_MODE = _file_mode()


# -- files --------------------------------------------------------------------------------------
def cache_root() -> Path:
    """clipface's cache folder: ``$CLIPFACE_CACHE_DIR`` or ``~/.cache/clipface``."""
    return Path(os.environ.get("CLIPFACE_CACHE_DIR") or Path.home() / ".cache" / "clipface")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a unique temporary file beside it, then a rename.

    The temporary name is unique per call (not only per process), so concurrent writers never
    share one, and a failed write leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are as readable as any written file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes the file private; results are as readable as any file written
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8; unencodable characters, such as undecodable file-name bytes, escaped) atomically."""
    return atomic_write_bytes(path, readable(text).encode("utf-8", errors="backslashreplace"))


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf as ``None``, paths and numpy scalars as plain values, keys as (:func:`readable`) strings."""
    if isinstance(obj, str):
        return readable(obj)
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {readable(str(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return readable(str(obj))
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return jsonable(obj.item())
    return obj


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (NaN becomes null)."""
    return write_text(path, json.dumps(jsonable(payload), indent=2, ensure_ascii=False) + "\n")


def check_writable_dir(path: str | Path) -> Path:
    """``path`` as a folder that exists or can be made, and can be written; else :class:`OSError`-style reason.

    Used before a run starts, so that results are never computed only to be lost at the end.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"{probe} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=path)
    os.close(fd)
    os.unlink(tmp)
    return path


@contextlib.contextmanager
def file_lock(path: str | Path, timeout: float, busy_message: str) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (``filelock``); after ``timeout`` seconds, a one-line error."""
    from filelock import FileLock, Timeout

    from .errors import ClipfaceError

    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise ClipfaceError(busy_message) from None
    try:
        yield
    finally:
        lock.release()


# -- SQLite -------------------------------------------------------------------------------------
def chunks(items: Sequence[T], size: int = SQL_CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` (which holds one ``{}`` where the ``IN`` list goes) for every value, in chunks."""
    values = list(values)
    for part in chunks(values):
        yield from conn.execute(sql.format(",".join("?" * len(part))), list(part))


# -- provenance ---------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of Python, clipface and its main dependencies (installed ones only)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("clipface", *MAIN_DEPENDENCIES):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


# -- nearest neighbours -------------------------------------------------------------------------
def nearest(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query's nearest gallery row by inner product (cosine for unit rows; first on ties)."""
    return np.argmax(np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T, axis=1)
