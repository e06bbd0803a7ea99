"""Table cells and Markdown tables shared by every report."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

__all__ = ["errors_lines", "fmt", "md_table", "model_cell", "params_m", "skipped_section"]


def params_m(n: int | None) -> str:
    """Parameter count in millions."""
    return "—" if not n else f"{n / 1e6:.1f}M"


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, None and NaN as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value).replace("|", "\\|")


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+!<>~])")  # | is escaped by fmt


def inert(value: Any, limit: int = 200) -> str:
    """Text from an untrusted source (an engine's caption, id or error) as Markdown shows it literally: one line,
    at most ``limit`` characters, every character Markdown gives a meaning to escaped."""
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", text)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def skipped_section(skipped: Sequence[dict[str, str]], limit: int = 50) -> str:
    """Markdown list of skipped files with reasons."""
    if not skipped:
        return "No files were skipped."
    lines = [f"- `{s['file']}`: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"- ... and {len(skipped) - limit} more (see results.json)")
    return "\n".join(lines)


def model_cell(r: dict[str, Any]) -> str:
    return r["model"] + (" (TEST MODEL, random weights)" if r.get("is_test_model") else "")


def errors_lines(doc: dict[str, Any]) -> list[str]:
    return [f"- **{e['model']}** not evaluated: {e['error']}" for e in doc.get("errors", [])]
