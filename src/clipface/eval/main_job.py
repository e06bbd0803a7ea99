"""The main job: every model that can run here, on one dataset, in one report.

CLIP models (with weights available) get zero-shot name identification and gallery search;
dedicated face recognisers get gallery search. Every model that cannot run is listed with the
reason. The report is ``OUT/report.md`` beside ``OUT/results.json``.
"""

from __future__ import annotations

from typing import Any, Callable

from .._util import versions
from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..models.registry import ModelSpec, list_models
from .gallery import gallery
from .runner import run_models
from .zeroshot import zeroshot


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
    dataset: FaceDataset,
    opts: RunOptions,
    include_test_models: bool = False,
    distractors: int = 100,
    echo: Callable[[str], None] = print,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every available model on ``dataset``; return the ``results.json`` document of the main job.

    ``on_update(doc)`` receives the document after each section, so a caller can save partial results.
    """
    specs, skipped = runnable_models(include_test_models)
    for name, reason in skipped:
        echo(f"skip {name}: {reason}")
    clip = [s.name for s in specs if s.family == "clip"]
    doc: dict[str, Any] = {
        "task": "main",
        "dataset": dataset.summary(),
        "models_run": [s.name for s in specs],
        "models_skipped": [{"model": n, "reason": r} for n, r in skipped],
        "sections": {},
        "versions": versions(),
    }
    if clip:
        echo(f"zero-shot name identification: {', '.join(clip)}")
        doc["sections"]["zeroshot"] = run_models(
            "zeroshot",
            clip,
            dataset,
            opts,
            lambda e, d, o: zeroshot(e, d, o, prompts="paper", distractors=distractors),
            on_error=echo,
        )
        if on_update is not None:
            on_update(doc)
    names = [s.name for s in specs]
    if names:
        echo(f"gallery identification: {', '.join(names)}")
        doc["sections"]["search"] = run_models(
            "search", names, dataset, opts, lambda e, d, o: gallery(e, d, o, n_gallery=5, unknown=0.1), on_error=echo
        )
    if on_update is not None:
        on_update(doc)
    return doc
