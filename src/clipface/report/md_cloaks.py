"""Markdown reports of cloaking: protection (FaceCure protocol) and index poisoning."""

from __future__ import annotations

from typing import Any

from .tables import errors_lines, fmt, md_table, model_cell, params_m, skipped_section


def protection_markdown(doc: dict[str, Any]) -> str:
    """``results.md`` of ``eval protection``: the surrogate x target table, budget, per-user rates."""
    c = doc["cloak"]
    rows = []
    for r in doc["results"]:
        link, zs = r.get("link") or {}, r.get("zeroshot") or {}
        rows.append(
            [
                " + ".join(r["surrogates"]),
                model_cell(r),
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
        *errors_lines(doc),
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
            model_cell(r),
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
        *errors_lines(doc),
        "",
    ]
    return "\n".join(lines)
