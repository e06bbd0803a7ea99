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


def _model_cell(r: dict[str, Any]) -> str:
    return r["model"] + (" (TEST MODEL, random weights)" if r.get("is_test_model") else "")


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"- **{e['model']}** not evaluated: {e['error']}" for e in doc.get("errors", [])]


def verification_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval verify``: one row per model."""
    rows = [
        [
            _model_cell(r), params_m(r["encoder"]["n_params"]), r["encoder"]["pretraining"], r["n_pairs"], r["n_missing"],
            f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}", r["auc"], r["eer"],
            r["tar_at_far"].get("0.001"), r["tar_at_far"].get("0.01"),
        ]
        for r in doc["results"]
    ]
    headers = ["model", "params", "pretraining", "pairs", "pairs without embedding", "accuracy (mean ± std over folds)", "AUC", "EER", "TAR@FAR=1e-3", "TAR@FAR=1e-2"]
    skipped = doc["results"][0]["skipped"] if doc["results"] else []
    lines = [f"# LFW verification on {doc['dataset']}", "", md_table(headers, rows), "", *_errors(doc)]
    lines += ["", "ROC curves: `roc.png`.", "", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def search_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval search``: one row per model."""
    rows = []
    for r in doc["results"]:
        dirs = r.get("dir_at_far") or {}
        rows.append(
            [
                _model_cell(r), params_m(r["encoder"]["n_params"]), r["n_identities"], r["n_gallery"], r["n_probes"],
                r["n_unknown_probes"], r.get("rank1"), r.get("rank5"), r.get("map"), dirs.get("0.01"), dirs.get("0.1"),
            ]
        )
    headers = ["model", "params", "people", "gallery", "probes", "unknown probes", "rank-1", "rank-5", "mAP", "DIR@FAR=0.01", "DIR@FAR=0.1"]
    skipped = doc["results"][0]["skipped"] if doc["results"] else []
    lines = [f"# Gallery identification (search engine) on {doc['dataset']}", "", md_table(headers, rows), "", *_errors(doc)]
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)
