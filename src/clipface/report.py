"""Reports: ``results.json`` (machine-readable) and ``results.md`` (tables for people)."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

MAIN_DEPENDENCIES = ("torch", "transformers", "numpy", "Pillow", "dlib-bin", "onnxruntime", "faiss-cpu", "protobuf")


def versions() -> dict[str, str]:
    """Versions of Python, clipface and its main dependencies (installed ones only)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("clipface", *MAIN_DEPENDENCIES):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as JSON atomically (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, None and NaN as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def params_m(n: int | None) -> str:
    """Parameter count in millions."""
    return "—" if not n else f"{n / 1e6:.1f}M"


def skipped_section(skipped: Sequence[dict[str, str]], limit: int = 50) -> str:
    """Markdown list of skipped files with reasons."""
    if not skipped:
        return "No files were skipped."
    lines = [f"- `{s['file']}`: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"- ... and {len(skipped) - limit} more (see results.json)")
    return "\n".join(lines)
