"""Stable fingerprints of weight files, memoised by (path, size, mtime) so large files hash once."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

from ..files import cache_root, file_sha256
from ..textsafe import key_bytes

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _memo_path() -> Path:
    return cache_root() / "fingerprints.json"


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a weight file's content (a Hugging Face cache blob is already named by it)."""
    real = Path(path).resolve()
    if _HEX64.match(real.name):  # huggingface_hub stores LFS files as blobs/<sha256>
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key not in memo:
        memo[key] = file_sha256(real)
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    return memo[key]


def files_fingerprint(paths: Sequence[Path]) -> str:
    """One digest over several weight files (e.g. sharded checkpoints), order-independent by name."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: Path(p).name):
        h.update(key_bytes(Path(p).name))
        h.update(file_fingerprint(Path(p)).encode())
    return h.hexdigest()
