"""Markdown reports (``results.md``, ``report.md``) rendered from ``results.json`` documents alone.

Every renderer takes the saved document, so ``clipface report RESULTS.json`` can re-render it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from . import study
from .study import params_m

__all__ = [
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
            _model_cell(r),
            params_m(r["encoder"]["n_params"]),
            r["encoder"]["pretraining"],
            r["n_pairs"],
            r["n_missing"],
            f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}",
            r["auc"],
            r["eer"],
            r["tar_at_far"].get("0.001"),
            r["tar_at_far"].get("0.01"),
        ]
        for r in doc["results"]
    ]
    headers = [
        "model",
        "params",
        "pretraining",
        "pairs",
        "pairs without embedding",
        "accuracy (mean ± std over folds)",
        "AUC",
        "EER",
        "TAR@FAR=1e-3",
        "TAR@FAR=1e-2",
    ]
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
                _model_cell(r),
                params_m(r["encoder"]["n_params"]),
                r["n_identities"],
                r["n_gallery"],
                r["n_probes"],
                r["n_unknown_probes"],
                r.get("rank1"),
                r.get("rank5"),
                r.get("map"),
                dirs.get("0.01"),
                dirs.get("0.1"),
            ]
        )
    headers = [
        "model",
        "params",
        "people",
        "gallery",
        "probes",
        "unknown probes",
        "rank-1",
        "rank-5",
        "mAP",
        "DIR@FAR=0.01",
        "DIR@FAR=0.1",
    ]
    skipped = doc["results"][0]["skipped"] if doc["results"] else []
    lines = [
        f"# Gallery identification (search engine) on {doc['dataset']}",
        "",
        md_table(headers, rows),
        "",
        *_errors(doc),
    ]
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def zeroshot_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of a zero-shot run: comparison table, then per-model details."""
    results = doc.get("results", [])
    lines = [f"# Zero-shot name identification on {doc['dataset']}", ""]
    rows = []
    for r in results:
        inf = r["identity_inference"]
        rows.append(
            [
                r["model"] + (" (TEST MODEL, random weights)" if r.get("is_test_model") else ""),
                params_m(r["encoder"]["n_params"]),
                r["encoder"]["pretraining"],
                r["n_images"],
                r["n_identities"],
                r["n_candidates"],
                r["top1"],
                r["top5"],
                r["top1_macro"],
                inf["tpr"],
                inf["fpr"],
                inf.get("wrong_name_rate"),
                f"{r['embeddings']['computed']}/{r['embeddings']['cached']}",
            ]
        )
    headers = [
        "model",
        "params",
        "pretraining",
        "images",
        "people",
        "candidates",
        "top-1",
        "top-5",
        "top-1 macro",
        "IDIA TPR (members)",
        "IDIA FPR (non-members)",
        "wrong-name rate",
        "computed/cached",
    ]
    lines += [md_table(headers, rows), ""]
    for err in doc.get("errors", []):
        lines.append(f"- **{err['model']}** not evaluated: {err['error']}")
    for r in results:
        inf = r["identity_inference"]
        lines += [
            "",
            f"## {r['model']}",
            "",
            f"Prompts: {len(r['prompts'])} ({'; '.join(r['prompts'][:3])}{' ...' if len(r['prompts']) > 3 else ''}); "
            f"distractor names: {r['distractors']}; identity inference: tau={inf['tau']}, k={inf['k'] or 'all'}.",
            "",
            md_table(
                ["person", "images", "top-1", "top-5", "most confused with", "share", "prompts correct", "recognised"],
                [
                    [
                        p["name"],
                        p["n_images"],
                        p["top1"],
                        p["top5"],
                        p["most_confused_with"],
                        p["confused_share"],
                        q["correct_prompts"],
                        "yes" if q["recognised"] else "no",
                    ]
                    for p, q in zip(r["per_identity"], inf["people"])
                ],
            ),
            "",
            "Most frequent confusions:",
            "",
            md_table(
                ["true", "predicted", "images"], [[c["true"], c["predicted"], c["count"]] for c in r["confusions"][:10]]
            )
            if r["confusions"]
            else "None.",
        ]
    skipped = results[0]["skipped"] if results else []
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def protection_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval protection``: the surrogate x target table, budget, per-user rates."""
    c = doc["cloak"]
    rows = []
    for r in doc["results"]:
        link, zs = r.get("link") or {}, r.get("zeroshot") or {}
        rows.append(
            [
                " + ".join(r["surrogates"]),
                _model_cell(r),
                "white-box" if r["white_box"] else "transfer",
                r["protection_rate"],
                r["protection_rate_clean"],
                r["others_rank1"],
                r["n_users"],
                r["n_probes"],
                link.get("mean_cosine"),
                link.get("nn_own_share"),
                zs.get("top1_original"),
                zs.get("top1_cloaked"),
            ]
        )
    headers = [
        "surrogates",
        "target model",
        "setting",
        "protection rate",
        "clean baseline",
        "others' rank-1",
        "users",
        "probes",
        "cloak-original cosine",
        "cloak's NN is its original",
        "zero-shot top-1 originals",
        "zero-shot top-1 cloaks",
    ]
    budget = doc.get("budget")
    lines = [
        f"# Cloaking protection on {doc['dataset']}",
        "",
        f"Cloaks: **{c['method']}**, mode `{c['mode']}` ({c['source']}"
        + (f", face-box jitter {c['jitter']} px" if c.get("jitter") else "")
        + f"), DSSIM budget {fmt(budget, 4)} measured on the {c['region']} region. Protocol: FaceCure, "
        f"{int(doc['protocol']['test_frac'] * 100)} % of each "
        "person's photos are probes, the rest the gallery; each protected user's gallery photos are cloaked in turn; "
        "1-nearest-neighbour search. Protection rate = share of the user's clean probes whose nearest gallery photo "
        "is someone else's (clean baseline: the same with no cloaks).",
        "",
        md_table(headers, rows),
        "",
        *_errors(doc),
        "",
        "## Achieved budget",
        "",
        f"DSSIM over the whole image: max {fmt(doc['dssim_max'], 5)}, mean {fmt(doc['dssim_mean'], 5)}; over the "
        "surrogates' crops (the face for face recognisers, where Fawkes measures it): max "
        f"{fmt(doc['dssim_crop_max'], 5)}, "
        f"mean {fmt(doc['dssim_crop_mean'], 5)}"
        + (
            f". Every cloak within {fmt(budget, 4)} on `{doc['budget_measure']}`: "
            f"{'yes' if doc['within_budget'] else 'NO'}"
            if budget is not None
            else ""
        )
        + ".",
        "",
    ]
    for s in doc["surrogate_sets"]:
        summ = s.get("summary")
        if summ:
            lines.append(
                f"- {' + '.join(s['surrogates'])}: {summ['n_cloaks']} cloaks ({summ['computed']} made, "
                f"{summ['reused']} reused), "
                f"DSSIM max {fmt(summ['dssim_max'], 5)} mean {fmt(summ['dssim_mean'], 5)}, L-inf max "
                f"{fmt(summ['linf_max'], 0)}, "
                f"PSNR mean {fmt(summ['psnr_mean'], 1)} dB, {fmt(summ['seconds_per_image_when_made'], 1)} s per image "
                "when made; "
                f"folder `{s['folder']}`"
            )
    lines += ["", "## Per user", ""]
    user_rows = [
        [
            " + ".join(r["surrogates"]),
            r["model"],
            u["user"],
            u["n_gallery_cloaks"],
            u["n_probes"],
            u["protection_rate"],
            u["protection_rate_clean"],
        ]
        for r in doc["results"]
        for u in r["per_user"]
    ]
    lines += [
        md_table(
            ["surrogates", "target model", "user", "gallery cloaks", "probes", "protection rate", "clean baseline"],
            user_rows,
        )
    ]
    skipped = doc["results"][0]["skipped"] if doc["results"] else []
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def poisoning_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval poisoning``: rank-1 against k poisons per person."""
    rows = [
        [
            _model_cell(r),
            params_m(r["encoder"]["n_params"]),
            p["kind"],
            p["k"],
            p["n_poisons"],
            p["rank1"],
            p["drop"],
            p["poison_hits"],
        ]
        for r in doc["results"]
        for p in r["curve"]
    ]
    proto = doc["protocol"]
    lines = [
        f"# Index poisoning on {doc['dataset']}",
        "",
        f"Gallery: {proto['n_gallery_per_identity']} clean photos per person; k poisons per person are added "
        "(mislabel: photos of other people filed under the person's name; cloak: cloaks of the person's own photos). "
        "Probes: the person's remaining clean photos. Rank-1 = share of probes whose nearest gallery photo carries "
        "their name.",
        "",
        md_table(["model", "params", "poison", "k", "poisons", "rank-1", "drop vs k=0", "nearest is a poison"], rows),
        "",
        *_errors(doc),
        "",
    ]
    return "\n".join(lines)


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
    if rows:
        s = doc["settings"]
        lines += [
            "## Zero-shot name identification and identity inference",
            "",
            f"The paper's prompt (\"a photo of {{}}.\") among the dataset's people and {s['distractors']} distractor "
            "names; "
            'identity inference as in "Does CLIP Know My Face?" (21 prompts, per prompt the most frequent name over a '
            "person's images, a tied vote skipped, recognised when tau = 1 prompt names them; TPR over members, FPR "
            "over "
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
            f"Each person's first {doc['settings']['cloaked_per_person']} photos are cloaked. Zero-shot: those photos, "
            "clean "
            "and cloaked. Gallery: those photos enrolled (clean, or their cloaks), the person's other photos as "
            "probes.",
            "",
            md_table(headers, rows),
            "",
            "Cloaks:",
            "",
        ]
        for c in doc["cloaks"]:
            summ, st = c.get("summary") or {}, c.get("settings") or {}
            detail = (
                f", mode {st.get('mode')}, {st.get('setting')} setting (jitter {st.get('jitter')}, "
                f"EOT {', '.join(st.get('eot') or []) or 'none'}), DSSIM max {fmt(summ.get('dssim_max'), 4)} "
                f"(budget {fmt(summ.get('budget'), 3)})"
                if st
                else ""
            )
            lines.append(f"- `{c['name']}`: {c['n_cloaks']} cloaks, {c.get('source', '?')}{detail}")
        rows_, cols, values = study.protection_matrix(doc)
        lines += ["", "Protection rate (share of probes not identified, 1 - rank-1):", ""]
        lines += [md_table(["cloaks", *cols], [[r, *v] for r, v in zip(rows_, values)]), ""]
    errors = [f"- **{e['model']}** failed: {e['error']}" for e in doc.get("errors", [])]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    lines += ["## Models not run", ""]
    lines += [f"- **{m['model']}**: {m['reason']}" for m in doc["models_skipped"]] or ["None."]
    skipped = [s for r in doc.get("results", [])[:1] for s in r.get("skipped", [])]
    lines += ["", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines) + "\n"


RENDERERS = {
    "zeroshot": "zeroshot_markdown",
    "verify": "verification_markdown",
    "search": "search_markdown",
    "protection": "protection_markdown",
    "poisoning": "poisoning_markdown",
    "main": "main_markdown",
}


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of any ``results.json`` document, chosen by its ``task``."""
    name = RENDERERS.get(str(doc.get("task")))
    if name is None:
        raise ValueError(f"no Markdown report for task {doc.get('task')!r}")
    return globals()[name](doc)
