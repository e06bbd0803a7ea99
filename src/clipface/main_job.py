"""The main job: every model that can run here, on one dataset, in one report.

CLIP models (with weights available) get zero-shot name identification and gallery search;
dedicated face recognisers get gallery search. Every model that cannot run is listed with the
reason. The report is ``OUT/report.md`` beside ``OUT/results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .cache import EmbeddingCache
from .dataset import FaceDataset
from .evaluate import RunOptions, run_models, search, zeroshot
from .registry import ModelSpec, list_models
from .report import md_table, params_m, search_markdown, versions, write_json, write_text


def runnable_models(include_test_models: bool = False) -> tuple[list[ModelSpec], list[tuple[str, str]]]:
    """Models that can run now, and ``(name, reason)`` for those that cannot."""
    ok, skipped = [], []
    for spec in list_models(include_test=True):
        if spec.is_test and not include_test_models:
            skipped.append((spec.name, "test model with random weights (add --include-test-models)"))
            continue
        try:
            available, reason = spec.availability()
        except Exception as exc:
            available, reason = False, f"{type(exc).__name__}: {exc}"
        (ok.append(spec) if available else skipped.append((spec.name, reason)))
    return ok, skipped


def run_main_job(
    dataset: str,
    out: Path,
    include_test_models: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    distractors: int = 100,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run every available model on ``dataset`` and write ``out/report.md``; return its path."""
    ds = FaceDataset.from_folder(dataset)
    opts = RunOptions(cache=EmbeddingCache(cache_dir), progress=progress)
    specs, skipped = runnable_models(include_test_models)
    for name, reason in skipped:
        echo(f"skip {name}: {reason}")
    clip = [s.name for s in specs if s.family == "clip"]
    sections: dict[str, Any] = {}
    if clip:
        echo(f"zero-shot name identification: {', '.join(clip)}")
        sections["zeroshot"] = run_models(
            "zeroshot", clip, ds, opts, lambda e, d, o: zeroshot(e, d, o, prompts="paper", distractors=distractors), on_error=echo
        )
    sections.update(_extra_tasks([s.name for s in specs], ds, opts, echo))
    doc = {
        "task": "main",
        "dataset": ds.summary(),
        "models_run": [s.name for s in specs],
        "models_skipped": [{"model": n, "reason": r} for n, r in skipped],
        "sections": sections,
        "versions": versions(),
    }
    write_json(out / "results.json", doc)
    return write_text(out / "report.md", _markdown(doc))


def _extra_tasks(models: list[str], ds: FaceDataset, opts: RunOptions, echo: Callable[[str], None]) -> dict[str, Any]:
    """Gallery identification (the search-engine setting) for every encoder, CLIP or face recogniser."""
    if not models:
        return {}
    echo(f"gallery identification: {', '.join(models)}")
    return {"search": run_models("search", models, ds, opts, lambda e, d, o: search(e, d, o, n_gallery=5, unknown=0.1), on_error=echo)}


def _markdown(doc: dict[str, Any]) -> str:
    d = doc["dataset"]
    lines = [
        "# clipface report",
        "",
        f"Dataset `{d['dataset']}`: {d['n_images']} images of {d['n_identities']} people ({d['n_skipped']} files skipped).",
        "",
    ]
    if not doc["models_run"]:
        lines += ["**No model could run on this machine.** See the reasons below.", ""]
    zs = doc["sections"].get("zeroshot")
    if zs:
        lines += ["## Zero-shot name identification (\"a photo of {name}.\")", ""]
        lines.append(
            md_table(
                ["model", "params", "people", "candidates", "top-1", "top-5"],
                [
                    [r["model"] + (" (TEST MODEL)" if r["is_test_model"] else ""), params_m(r["encoder"]["n_params"]), r["n_identities"], r["n_candidates"], r["top1"], r["top5"]]
                    for r in zs["results"]
                ],
            )
        )
        lines += [f"- {e['model']}: {e['error']}" for e in zs["errors"]] + [""]
    if "search" in doc["sections"]:
        lines += [search_markdown(doc["sections"]["search"]).replace("# Gallery", "## Gallery", 1), ""]
    lines += ["## Models not run", ""]
    lines += [f"- **{m['model']}**: {m['reason']}" for m in doc["models_skipped"]] or ["None."]
    return "\n".join(lines) + "\n"
