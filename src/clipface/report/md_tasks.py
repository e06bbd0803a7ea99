"""Markdown reports of the evaluation tasks: verification, gallery search, zero-shot names."""

from __future__ import annotations

from typing import Any

from .tables import errors_lines, md_table, model_cell, params_m, skipped_section


def verification_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval verify``: one row per model."""
    rows = [
        [
            model_cell(r),
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
    lines = [f"# LFW verification on {doc['dataset']}", "", md_table(headers, rows), "", *errors_lines(doc)]
    lines += ["", "ROC curves: `roc.png`.", "", "## Skipped files", "", skipped_section(skipped), ""]
    return "\n".join(lines)


def search_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval search``: one row per model."""
    rows = []
    for r in doc["results"]:
        dirs = r.get("dir_at_far") or {}
        rows.append(
            [
                model_cell(r),
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
        *errors_lines(doc),
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
            f"distractor names: {r['distractors']}; identity inference: tau={inf['tau']}, k={inf['k'] or 'all'}."
            + (
                f" Left out of identity inference (fewer images than its largest k): {', '.join(r['idia_left_out'])}."
                if r.get("idia_left_out")
                else ""
            ),
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
