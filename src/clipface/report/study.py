"""The study's tables, derived from its ``results.json`` document alone (shared by the Markdown and HTML reports)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "cloak_names",
    "cloak_table",
    "gallery_value",
    "idia_curves",
    "models_table",
    "per_person_table",
    "protection_matrix",
    "zeroshot_points",
    "zeroshot_table",
]


def _model(r: dict[str, Any]) -> str:
    return r["model"] + (" (TEST MODEL, random weights)" if r.get("is_test_model") else "")


def _params(r: dict[str, Any]) -> int | None:
    return (r.get("encoder") or {}).get("n_params")


def _pretraining(r: dict[str, Any]) -> str:
    return str((r.get("encoder") or {}).get("pretraining", "?"))


def cloak_names(doc: dict[str, Any]) -> list[str]:
    """The cloak sets of the study, in order (``fawkes``, ``fawkes-published``, ``lowkey``, ...)."""
    return [c["name"] for c in doc.get("cloaks", [])]


def models_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Every model run: family, parameters, pretraining data, embeddings computed/cached, seconds."""
    rows = [
        [
            _model(r),
            r.get("family"),
            _params(r),
            _pretraining(r),
            f"{r['embeddings']['computed']}/{r['embeddings']['cached']}",
            r.get("seconds"),
        ]
        for r in doc.get("results", [])
    ]
    return ["model", "family", "parameters", "pretraining", "embeddings computed/cached", "seconds"], rows


def zeroshot_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Zero-shot top-1/top-5 (the paper's prompt) and identity inference (21 prompts) per CLIP model."""
    rows = []
    for r in doc.get("results", []):
        zs = r.get("zeroshot")
        if not zs:
            continue
        clean, idia = zs["clean"], zs["idia"]
        inf = idia["identity_inference"]
        rows.append(
            [
                _model(r),
                _params(r),
                _pretraining(r),
                clean["n_candidates"],
                clean["top1"],
                clean["top5"],
                clean["top1_macro"],
                idia["top1"],
                inf["tpr"],
                inf["fpr"],
                inf["wrong_name_rate"],
            ]
        )
    headers = [
        "model",
        "parameters",
        "pretraining",
        "candidate names",
        "top-1",
        "top-5",
        "top-1 macro",
        "top-1 (21 prompts)",
        "IDIA TPR",
        "IDIA FPR (non-members)",
        "wrong-name rate",
    ]
    return headers, rows


def zeroshot_points(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``model, params, pretraining, top1, top5`` of each CLIP model (the accuracy-vs-parameters figure)."""
    return [
        {
            "model": r["model"],
            "params": _params(r) or 1,
            "pretraining": _pretraining(r),
            "top1": r["zeroshot"]["clean"]["top1"],
            "top5": r["zeroshot"]["clean"]["top5"],
        }
        for r in doc.get("results", [])
        if r.get("zeroshot")
    ]


def gallery_value(r: dict[str, Any], condition: str, key: str = "rank1") -> float | None:
    """A gallery figure of one model under one condition (``clean`` or a cloak set), or ``None``."""
    entry = (r.get("gallery") or {}).get(condition)
    return None if not isinstance(entry, dict) else entry.get(key)


def cloak_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per model: zero-shot top-1 on the cloaked photos clean and cloaked, and gallery rank-1 clean and cloaked."""
    names = cloak_names(doc)
    headers = [
        "model",
        "zero-shot top-1, same photos clean",
        *[f"zero-shot top-1, {n}" for n in names],
        "gallery rank-1, clean",
        *[f"gallery rank-1, {n}" for n in names],
    ]
    rows = []
    for r in doc.get("results", []):
        zs = r.get("zeroshot") or {}
        rows.append(
            [
                _model(r),
                (zs.get("clean_cloaked_photos") or {}).get("top1"),
                *[(zs.get(n) or {}).get("top1") for n in names],
                gallery_value(r, "clean"),
                *[gallery_value(r, n) for n in names],
            ]
        )
    return headers, rows


def protection_matrix(doc: dict[str, Any]) -> tuple[list[str], list[str], list[list[float | None]]]:
    """Rows: cloak sets (with their surrogates); columns: target models; cells: protection rate (1 - rank-1)."""
    rows, values = [], []
    models = [r["model"] for r in doc.get("results", [])]
    for c in doc.get("cloaks", []):
        surrogates = " + ".join(c.get("surrogates", [])) or c.get("source", "?")
        rows.append(f"{c['name']} ({surrogates})")
        values.append([gallery_value(r, c["name"], "protection_rate") for r in doc.get("results", [])])
    return rows, models, values


def idia_curves(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The identity-inference curve over images per person, per CLIP model."""
    return {
        r["model"]: r["zeroshot"]["idia"]["identity_inference"].get("k_curve", [])
        for r in doc.get("results", [])
        if r.get("zeroshot")
    }


def per_person_table(r: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One CLIP model's per-person zero-shot accuracy (paper prompt) and identity-inference decision (21 prompts)."""
    clean, idia = r["zeroshot"]["clean"], r["zeroshot"]["idia"]
    decided = {p["name"]: p for p in idia["identity_inference"]["people"]}
    rows = []
    for p in clean["per_identity"]:
        q = decided.get(p["name"], {})
        rows.append(
            [
                p["name"],
                p["n_images"],
                p["top1"],
                p["top5"],
                p["most_confused_with"],
                q.get("correct_prompts"),
                "member" if q.get("member", True) else "non-member",
                "yes" if q.get("recognised") else "no",
            ]
        )
    headers = [
        "person",
        "images",
        "top-1",
        "top-5",
        "most confused with",
        "prompts naming them (of 21)",
        "membership",
        "recognised",
    ]
    return headers, rows
