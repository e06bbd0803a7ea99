"""Markdown reports (``results.md``, ``report.md``) rendered from ``results.json`` documents alone.

Every renderer takes the saved document, so ``clipface report RESULTS.json`` can re-render it:
:mod:`.md_tasks` (verify, search, zeroshot), :mod:`.md_cloaks` (protection, poisoning),
:mod:`.md_study` (the study, audits); cells and tables come from :mod:`.tables`.
"""

from __future__ import annotations

from typing import Any, Callable

from .md_cloaks import poisoning_markdown, protection_markdown
from .md_study import audit_markdown, main_markdown
from .md_tasks import search_markdown, verification_markdown, zeroshot_markdown
from .tables import fmt, md_table, params_m, skipped_section

__all__ = [
    "audit_markdown",
    "fmt",
    "main_markdown",
    "md_table",
    "params_m",
    "poisoning_markdown",
    "protection_markdown",
    "render_markdown",
    "search_markdown",
    "skipped_section",
    "verification_markdown",
    "zeroshot_markdown",
]

RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "zeroshot": zeroshot_markdown,
    "verify": verification_markdown,
    "search": search_markdown,
    "protection": protection_markdown,
    "poisoning": poisoning_markdown,
    "main": main_markdown,
    "audit": audit_markdown,
}


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of any ``results.json`` document, chosen by its ``task``."""
    renderer = RENDERERS.get(str(doc.get("task")))
    if renderer is None:
        raise ValueError(f"no Markdown report for task {doc.get('task')!r}")
    return renderer(doc)
