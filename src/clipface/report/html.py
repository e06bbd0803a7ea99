"""``report.html``: one self-contained page (figures inlined as PNG data, no script, no outside resource).

Rendered from a saved ``results.json`` document alone, so ``clipface report RESULTS.json`` can
re-render it. The study's page has the models, zero-shot accuracy against parameter count per
pretraining source, identity inference against images per person, clean vs Fawkes vs LowKey,
the protection matrix (cloak set x target model), per-person tables, and the skipped files;
a verification document gets its ROC curves.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Sequence

from . import plots, study
from .markdown import render_markdown
from .tables import fmt

__all__ = ["render_html"]

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}.note{color:#555;font-size:13px}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}details{margin:.5em 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; numbers right-aligned and rounded as in the Markdown reports."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="n">{_e(fmt(v))}</td>' if numeric else f"<td>{_e(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(fig: Any, ident: str, caption: str) -> str:
    """A matplotlib figure as an inline PNG with a caption."""
    data = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    return (
        f'<figure id="{_e(ident)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _page(title: str, body: list[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _skipped(doc: dict[str, Any]) -> str:
    skipped = [s for r in doc.get("results", [])[:1] for s in r.get("skipped", [])]
    if not skipped:
        return "<p>No files were skipped.</p>"
    return table(["file", "reason"], [[s["file"], s["reason"]] for s in skipped[:200]])


def _study(doc: dict[str, Any]) -> str:
    d = doc["dataset"]
    body = [
        "<h1>clipface study</h1>",
        f"<p>Dataset <code>{_e(d['dataset'])}</code>: {d['n_images']} images of {d['n_identities']} people "
        f"({d['n_skipped']} files skipped). Models run: {len(doc['models_run'])}; not run: "
        f"{len(doc['models_skipped'])}.</p>",
    ]
    if not doc["models_run"]:
        body.append("<p><strong>No model could run on this machine.</strong> See the reasons below.</p>")
    headers, rows = study.models_table(doc)
    body += ['<section id="models"><h2>Models</h2>', table(headers, rows), "</section>"]
    headers, rows = study.zeroshot_table(doc)
    points = study.zeroshot_points(doc)
    body.append('<section id="zeroshot"><h2>Zero-shot name identification</h2>')
    if points:
        body += [
            table(headers, rows),
            figure(
                plots.accuracy_params_figure(points),
                "fig-accuracy-params",
                "Zero-shot top-1 (solid) and top-5 (dashed) against parameters, one series per pretraining source",
            ),
        ]
    else:
        body.append(f'<p class="note">{_e(study.missing_clip_note(doc) or "No CLIP model ran.")}</p>')
    body.append("</section>")
    curves = study.idia_curves(doc)
    body.append('<section id="idia"><h2>Identity inference ("Does CLIP Know My Face?")</h2>')
    if curves:
        body.append(
            figure(
                plots.idia_figure(curves),
                "fig-idia-k",
                "TPR over members (and FPR over non-members) against images per person; mean and std over draws",
            )
        )
        for r in doc["results"]:
            if r.get("zeroshot"):
                tau = r["zeroshot"]["idia"]["identity_inference"]["tau_curve"]
                body += [
                    f"<details><summary>{_e(r['model'])}: rates for every tau</summary>",
                    table(["tau", "TPR", "FPR"], [[c["tau"], c["tpr"], c["fpr"]] for c in tau]),
                    "</details>",
                ]
    else:
        body.append('<p class="note">No CLIP model ran (see above): identity inference needs one.</p>')
    body.append("</section>")
    names = study.cloak_names(doc)
    body.append('<section id="cloaks"><h2>Clean vs Fawkes vs LowKey</h2>')
    if names:
        headers, rows = study.cloak_table(doc)
        groups = {
            r["model"]: {"clean": study.gallery_value(r, "clean"), **{n: study.gallery_value(r, n) for n in names}}
            for r in doc["results"]
        }
        body += [
            f"<p>{_e(study.cloak_protocol(doc))}</p>",
            table(headers, rows),
            figure(
                plots.grouped_bars_figure(
                    groups, "gallery rank-1", "Gallery identification: clean vs cloaked photos enrolled"
                ),
                "fig-cloaks",
                "Rank-1 of clean probes with the clean photos or their cloaks enrolled",
            ),
        ]
        zs_groups = {
            r["model"]: {
                "clean": (r["zeroshot"].get("clean_cloaked_photos") or {}).get("top1"),
                **{n: (r["zeroshot"].get(n) or {}).get("top1") for n in names},
            }
            for r in doc["results"]
            if r.get("zeroshot")
        }
        if zs_groups:
            body.append(
                figure(
                    plots.grouped_bars_figure(zs_groups, "zero-shot top-1", "Zero-shot names: clean vs cloaked"),
                    "fig-cloaks-zeroshot",
                    "Zero-shot top-1 on the same photos, clean and cloaked",
                )
            )
        rows_, cols, cells = study.protection_cells(doc)
        values = [[None if c is None else c["rate"] for c in row] for row in cells]
        labels = [[study.protection_label(c, multiline=True) for c in row] for row in cells]
        body += [
            '<h3 id="protection">Protection matrix</h3>',
            f"<p>{_e(study.PROTECTION_CAPTION)}</p>",
            figure(
                plots.heatmap_figure(rows_, cols, values, "Protection rate (1 - rank-1)", labels=labels),
                "fig-protection",
                "Cloak set (surrogates) x target model: share of probes not identified, probes protected of all, "
                "95% interval, white-box or transfer",
            ),
            table(["cloaks", *cols], [[r, *map(study.protection_label, row)] for r, row in zip(rows_, cells)]),
            *[f'<p class="note">{_e(n)}</p>' for n in study.below_chance(doc)],
            table(["cloaks", "cloak set"], [[c["name"], study.cloak_line(c)] for c in doc.get("cloaks", [])]),
        ]
    else:
        body.append('<p class="note">No cloaks in this run.</p>')
    body.append("</section>")
    clip = [r for r in doc["results"] if r.get("zeroshot")]
    if clip:  # per person: each CLIP model's zero-shot accuracy and identity inference decision
        body.append('<section id="per-person"><h2>Per person</h2>')
        for r in clip:
            headers, rows = study.per_person_table(r)
            body += [f"<h3>{_e(r['model'])}</h3>", table(headers, rows)]
        body.append("</section>")
    body += [
        '<section id="not-run"><h2>Models not run</h2>',
        table(["model", "reason"], [[m["model"], m["reason"]] for m in doc["models_skipped"]])
        if doc["models_skipped"]
        else "<p>None.</p>",
        "</section>",
    ]
    if doc.get("errors"):
        body += ["<h2>Errors</h2>", table(["model", "error"], [[e["model"], e["error"]] for e in doc["errors"]])]
    body += ['<section id="skipped"><h2>Skipped files</h2>', _skipped(doc), "</section>"]
    return _page("clipface study", body)


def render_html(doc: dict[str, Any]) -> str:
    """The HTML report of any ``results.json`` document: the study's page, or a task's tables with its figures."""
    if doc.get("task") == "main":
        return _study(doc)
    body = [f"<h1>clipface: {_e(doc.get('task'))} on {_e(doc.get('dataset'))}</h1>"]
    results = doc.get("results", [])
    if doc.get("task") == "verify" and any(r.get("roc") for r in results):
        body.append(
            figure(plots.roc_figure([r for r in results if r.get("roc")]), "fig-roc", "ROC curves (LFW protocol)")
        )
    if doc.get("task") == "zeroshot" and results:
        points = [
            {
                "model": r["model"],
                "params": r["encoder"]["n_params"] or 1,
                "pretraining": r["encoder"]["pretraining"],
                "top1": r["top1"],
                "top5": r["top5"],
            }
            for r in results
        ]
        body.append(
            figure(plots.accuracy_params_figure(points), "fig-accuracy-params", "Zero-shot accuracy against parameters")
        )
    body += [
        "<h2>Report</h2>",
        f"<pre>{_e(render_markdown(doc))}</pre>",
        '<section id="skipped"><h2>Skipped files</h2>',
        _skipped(doc),
        "</section>",
    ]
    return _page(f"clipface {doc.get('task')}", body)
