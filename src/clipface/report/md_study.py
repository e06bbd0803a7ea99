"""Markdown reports of the study (the main job) and of a search-engine audit."""

from __future__ import annotations

from typing import Any

from . import study
from .tables import inert, md_table, skipped_section


def main_markdown(doc: dict[str, Any]) -> str:
    """``report.md`` of the study: models, zero-shot and identity inference, clean vs cloaked, protection."""
    d = doc["dataset"]
    lines = [
        "# clipface study",
        "",
        f"Dataset `{d['dataset']}`: {d['n_images']} images of {d['n_identities']} people ({d['n_skipped']} files "
        "skipped). "
        f"The same figures are in `report.html` with plots, and in `results.json`.",
        "",
    ]
    if not doc["models_run"]:
        lines += ["**No model could run on this machine.** See the reasons below.", ""]
    headers, rows = study.models_table(doc)
    lines += ["## Models", "", md_table(headers, rows), ""]
    headers, rows = study.zeroshot_table(doc)
    note = study.missing_clip_note(doc)
    if note:
        lines += ["## Zero-shot name identification and identity inference", "", note, ""]
    if rows:
        s = doc["settings"]
        lines += [
            "## Zero-shot name identification and identity inference",
            "",
            "The paper's prompt (\"a photo of {}.\") among the dataset's people and "
            + (
                f"{s['distractors']} distractor names; "
                if s["distractors"] is not None
                else "distractor names up to a pool of 1,000 names, offered in a seeded shuffle; "
            )
            + 'identity inference as in "Does CLIP Know My Face?" (21 prompts, per prompt the most frequent name '
            "over a person's images, a tied vote skipped, recognised when tau = 1 prompt names them; TPR over "
            "members, FPR over "
            f"non-members: {', '.join(s['non_members']) or 'none given'}).",
            "",
            md_table(headers, rows),
            "",
        ]
    names = study.cloak_names(doc)
    if names:
        headers, rows = study.cloak_table(doc)
        lines += [
            "## Clean and cloaked photos",
            "",
            study.cloak_protocol(doc),
            "",
            md_table(headers, rows),
            "",
            "Cloaks:",
            "",
        ]
        lines += [f"- `{c['name']}`: {study.cloak_line(c)}" for c in doc["cloaks"]]
        rows_, cols, cells = study.protection_cells(doc)
        lines += ["", study.PROTECTION_CAPTION, ""]
        lines += [
            md_table(["cloaks", *cols], [[r, *map(study.protection_label, v)] for r, v in zip(rows_, cells)]),
            "",
        ]
        notes = study.below_chance(doc)
        lines += [*(f"- {n}" for n in notes), *([""] if notes else [])]
    errors = [f"- **{e['model']}** failed: {e['error']}" for e in doc.get("errors", [])]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    lines += ["## Models not run", ""]
    lines += [f"- **{m['model']}**: {m['reason']}" for m in doc["models_skipped"]] or ["None."]
    skipped = [s for r in doc.get("results", [])[:1] for s in r.get("skipped", [])]
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines) + "\n"


def _rate_limited(waits: dict[str, Any]) -> str:
    """A sentence on the waits a rate-limited engine asked for (none: nothing)."""
    if not waits.get("waits"):
        return ""
    return f" The engine limited its rate: the audit waited {waits['waits']} times, {waits['seconds']:.0f} s in all."


def audit_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``clipface audit``: the exposure of one person by a search engine, per query kind."""
    rows = [
        [
            kind,
            q["queries"],
            q["answered"],
            q["n_errors"],
            q["precision_at_k"],
            q["images_found"],
            q["found_with_name_in_caption"],
        ]
        for kind, q in doc["queries"].items()
    ]
    lines = [
        f"# Audit of {doc['engine']} (index `{doc['indice']}`) for {doc['person']}",
        "",
        f"**Verdict: {doc.get('summary', doc['verdict'])}.** {len(doc['photos'])} photos of the person; each result "
        f"judged by {doc['model']} (a face whose median cosine to the person's photos reaches {doc['threshold']:.4f}, "
        f"its LFW threshold at FAR 1e-3); top {doc['k']} results per query; {doc.get('n_read', '?')} distinct "
        f"results read, {doc['n_unreadable']} whose image could not be read (precision is among those read)."
        + _rate_limited(doc.get("rate_limited") or {})
        + (f" Stopped early: {inert(doc['stopped_early'])}." if doc.get("stopped_early") else ""),
        "",
        md_table(
            [
                "query kind",
                "queries",
                "answered",
                "errors",
                f"precision at {doc['k']}",
                "distinct images of the person",
                "with the name in the caption",
            ],
            rows,
        ),
        "",
    ]
    for kind, q in doc["queries"].items():
        if q["examples"]:
            lines += [f"Examples ({kind} queries):", ""]
            lines += [
                md_table(
                    ["query", "rank", "id", "engine similarity", "face similarity", "caption"],
                    [
                        [inert(e["query"]), e["rank"], inert(e["id"]), e["similarity"], e["face_similarity"]]
                        + [inert(e["caption"])]
                        for e in q["examples"]
                    ],
                ),
                "",
            ]
        lines += [f"- {inert(e['query'])}: {inert(e['error'])}" for e in q["errors"]]
    return "\n".join(lines) + "\n"
