"""The study's tables, derived from its ``results.json`` document alone (shared by the Markdown and HTML reports)."""

from __future__ import annotations

from typing import Any

from ..eval.metrics.intervals import wilson_interval

__all__ = [
    "below_chance",
    "cloak_source",
    "missing_clip_note",
    "cloak_line",
    "cloak_protocol",
    "protection_cells",
    "protection_label",
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
    """Per model: zero-shot top-1 on the cloaked photos clean and cloaked (where a CLIP model ran), and gallery
    rank-1 clean and cloaked."""
    names = cloak_names(doc)
    zeroshot = any(r.get("zeroshot") for r in doc.get("results", []))
    zs_headers = ["zero-shot top-1, same photos clean", *[f"zero-shot top-1, {n}" for n in names]] if zeroshot else []
    headers = ["model", *zs_headers, "gallery rank-1, clean", *[f"gallery rank-1, {n}" for n in names]]
    rows = []
    for r in doc.get("results", []):
        zs = r.get("zeroshot") or {}
        zs_cells = (
            [(zs.get("clean_cloaked_photos") or {}).get("top1"), *[(zs.get(n) or {}).get("top1") for n in names]]
            if zeroshot
            else []
        )
        rows.append([_model(r), *zs_cells, gallery_value(r, "clean"), *[gallery_value(r, n) for n in names]])
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


def protection_cell(cloak: dict[str, Any], r: dict[str, Any]) -> dict[str, Any] | None:
    """One cell of the protection matrix: rate, probes protected of all, its 95% Wilson interval, and whether the
    target model was one of the cloak's surrogates (white-box) or not (transfer)."""
    entry = (r.get("gallery") or {}).get(cloak["name"]) or {}
    rate, n = entry.get("protection_rate"), entry.get("n_probes")
    if rate is None or not n:
        return None
    k = round(rate * n)
    return {
        "rate": rate,
        "protected": k,
        "n": n,
        "ci": wilson_interval(k, n),
        "white_box": r["model"] in (cloak.get("surrogates") or []),
    }


def protection_label(cell: dict[str, Any] | None, multiline: bool = False) -> str:
    """A cell as text: ``0.537 (43/80, 95% CI 0.43-0.64), transfer``."""
    if cell is None:
        return "—"
    lo, hi = cell["ci"]
    kind = "white-box" if cell["white_box"] else "transfer"
    if multiline:
        return f"{cell['rate']:.3f}\n{cell['protected']}/{cell['n']}, CI {lo:.2f}-{hi:.2f}\n{kind}"
    return f"{cell['rate']:.3f} ({cell['protected']}/{cell['n']}, 95% CI {lo:.2f}-{hi:.2f}), {kind}"


#: What a cell of the protection matrix says (shared by the Markdown and HTML reports).
PROTECTION_CAPTION = (
    "Protection rate: the share of a person's clean probes whose nearest enrolled photo is someone else's "
    "(1 - rank-1). Each cell gives the rate, the probes protected of all probes, its 95% Wilson interval, and "
    "whether the target model was the cloak's surrogate (white-box: the cloak was optimised against it) or another "
    "model (transfer)."
)


def cloak_protocol(doc: dict[str, Any]) -> str:
    """How the study uses its cloaks, and how that differs from ``eval protection`` (the README's table)."""
    n = doc["settings"]["cloaked_per_person"]
    return (
        f"Each person's first {n} photos are cloaked. Zero-shot: those photos, clean and cloaked. Gallery: those "
        "photos enrolled (clean, or their cloaks), the person's other photos as probes. This is the study's protocol; "
        "`clipface eval protection` measures FaceCure's (70% of each person's photos enrolled and cloaked, 30% "
        "probes), which the README's protection table reports, so the two tables differ by protocol and often by mode."
    )


def cloak_line(c: dict[str, Any]) -> str:
    """One cloak set in a sentence: count, source, mode and setting, achieved DSSIM on the budgeted region."""
    summ, st = c.get("summary") or {}, c.get("settings") or {}
    text = f"{c['n_cloaks']} cloaks, {cloak_source(c)}"
    if not st:
        return text
    region = st.get("region", "image")
    measure = summ.get("dssim_crop_max") if region == "face" else summ.get("dssim_max")
    return (
        f"{text}; mode {st.get('mode')}, {st.get('setting')} setting (jitter {st.get('jitter')}, EOT "
        f"{', '.join(st.get('eot') or []) or 'none'}); DSSIM on the {region} at most {_num(measure, 4)} "
        f"(budget {_num(summ.get('budget'), 3)}; whole photo at most {_num(summ.get('dssim_max'), 4)})"
    )


def _num(value: Any, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def protection_cells(doc: dict[str, Any]) -> tuple[list[str], list[str], list[list[dict[str, Any] | None]]]:
    """:func:`protection_matrix` with each cell as :func:`protection_cell` (count, interval, white-box)."""
    rows, models, _ = protection_matrix(doc)  # the same row and column labels
    cells = [[protection_cell(c, r) for r in doc.get("results", [])] for c in doc.get("cloaks", [])]
    return rows, models, cells


def cloak_source(c: dict[str, Any]) -> str:
    """Where a set's cloaks came from: made now, reused from an earlier run, shipped with clipface, or external."""
    summ = c.get("summary") or {}
    if "computed" not in summ:
        return str(c.get("source", "?"))
    shipped = summ.get("shipped", 0)
    parts = [f"{summ['computed']} made now"]
    if summ.get("reused", 0) - shipped:
        parts.append(f"{summ['reused'] - shipped} reused from an earlier run")
    if shipped:
        parts.append(f"{shipped} shipped with clipface (same settings hash and photo bytes)")
    return "clipface: " + ", ".join(parts)


def missing_clip_note(doc: dict[str, Any]) -> str | None:
    """When no CLIP model ran: what the CLIP sections would show and the one command that gets the weights."""
    from ..models.registry import get_spec

    if any(r.get("zeroshot") for r in doc.get("results", [])):
        return None
    missing = []
    for m in doc.get("models_skipped", []):
        try:
            if get_spec(m["model"]).family == "clip":
                missing.append(m["model"])
        except Exception:  # a name this version does not know: not ours to advise on
            continue
    what = (
        "No CLIP model ran, so there is no zero-shot name identification and no identity inference here. With a "
        "CLIP model these sections give its top-1 and top-5 accuracy at naming each person among the dataset's "
        "people and distractor names, the identity inference attack's true and false positive rates over images "
        "per person, and zero-shot accuracy on cloaked photos."
    )
    if missing:
        what += (
            f" Get the weights once where the Hugging Face hub can be reached: `clipface download {' '.join(missing)}`"
            " (or pass `--weights DIR`), then run again."
        )
    return what


def below_chance(doc: dict[str, Any]) -> list[str]:
    """A sentence for each gallery rank-1 under chance (1 / people), which reads like an error but is not."""
    out = []
    for r in doc.get("results", []):
        for name, entry in (r.get("gallery") or {}).items():
            if not isinstance(entry, dict) or name == "clean" or entry.get("rank1") is None:
                continue
            chance = 1.0 / entry["n_identities"] if entry.get("n_identities") else None
            if chance is not None and entry["rank1"] < chance:
                out.append(
                    f"{r['model']} with {name} cloaks enrolled: rank-1 {entry['rank1']:.3f} is below chance "
                    f"({chance:.3f} for {entry['n_identities']} people). The cloaks moved each person's enrolled "
                    "photos away from their own clean probes, so a probe's nearest gallery photo is someone else's "
                    "nearly every time: the protection working, not a fault."
                )
    return out


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
