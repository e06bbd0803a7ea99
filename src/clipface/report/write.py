"""Write a run's outputs: ``results.json``, its Markdown report and the figures that go with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import write_json, write_text
from .html import render_html
from .markdown import render_markdown
from .plots import plot_roc

__all__ = ["write_results"]


def write_results(doc: dict[str, Any], out: str | Path, markdown_name: str = "results.md") -> list[Path]:
    """Write ``doc`` to ``out/results.json`` and its report to ``out/results.md`` (plus ``roc.png`` for verification).

    Returns the paths written. The JSON is written first, so a failing renderer never loses results.
    """
    out = Path(out)
    written = [write_json(out / "results.json", doc)]
    written.append(write_text(out / markdown_name, render_markdown(doc)))
    written.append(write_text(out / "report.html", render_html(doc)))
    if doc.get("task") == "verify":
        with_roc = [r for r in doc.get("results", []) if r.get("roc")]
        if with_roc:
            written.append(plot_roc(with_roc, out / "roc.png"))
    return written
