"""Files written safely: atomic writes, JSON cleaning, hashes, writable-folder checks and inter-process locks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .textsafe import readable


def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


#: Permissions of files written atomically: what ``open`` would give under this process's umask.
FILE_MODE = _file_mode()


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
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes the file private; results are as readable as any file written
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
