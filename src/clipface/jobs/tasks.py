"""One call per job, as the command line runs it: check every argument, run, write the results.

Each function checks its arguments first (a :class:`~clipface.errors.UsageError` names the bad
one), checks that ``out`` can be written, then runs model after model, writing ``results.json``
and the report after each one, so that nothing computed is lost to a later failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..errors import UsageError, check_choice
from ..eval.gallery import check_gallery_args, gallery
from ..eval.metrics.zeroshot import IdiaSettings
from ..eval.runner import run_models
from ..eval.verification import load_pairs, pairs_path_of, verification
from ..eval.zeroshot import check_non_members, check_zeroshot_args, zeroshot
from ..files import check_writable_dir, write_text
from ..models.registry import check_models
from ..report.html import render_html
from ..report.markdown import render_markdown
from ..report.write import write_results

__all__ = ["TASKS", "check_out", "check_task", "evaluate", "report"]

Echo = Callable[[str], None]

#: The tasks of :func:`evaluate`, by their ``results.json`` name.
TASKS = ("zeroshot", "verify", "search")


def check_out(out: str | Path) -> Path:
    """``out`` as a folder that can be made and written, else :class:`~clipface.errors.UsageError`."""
    try:
        return check_writable_dir(out)
    except OSError as exc:
        raise UsageError(
            "out", str(out), f"cannot write results there ({getattr(exc, 'strerror', None) or exc})"
        ) from None


def _idia(params: dict[str, Any]) -> IdiaSettings:
    return IdiaSettings(
        tau=int(params.get("tau", 1)),
        k=params.get("idia_k"),
        ks=tuple(params.get("idia_ks") or ()),
        seed=int(params.get("seed", 0)),
    )


def check_task(task: str, **params: Any) -> None:
    """Check ``task``'s own arguments (all but verify's pairs file, which needs the dataset) before any work."""
    check_choice("task", task, TASKS)
    if task == "zeroshot":
        check_zeroshot_args(params.get("prompts", "paper"), params.get("distractors"), _idia(params))
    elif task == "search":
        check_gallery_args(int(params.get("gallery", 5)), float(params.get("unknown", 0.1)))


def _task(task: str, dataset: FaceDataset, params: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """The per-model function of ``task`` with ``params``, after checking them."""
    check_task(task, **params)
    if task == "zeroshot":
        idia = _idia(params)
        prompts, distractors = params.get("prompts", "paper"), params.get("distractors")
        non_members = list(params.get("non_members") or ())
        check_zeroshot_args(prompts, distractors, idia)
        check_non_members(non_members, dataset)
        seed = int(params.get("seed", 0))
        return lambda e, d, o: zeroshot(
            e, d, o, prompts=prompts, distractors=distractors, seed=seed, idia=idia, non_members=non_members
        )
    if task == "verify":
        pairs_file = pairs_path_of(dataset, params.get("pairs"))
        load_pairs(pairs_file)  # a missing or one-sided pairs file fails before any model is loaded
        return lambda e, d, o: verification(e, d, o, pairs_file)
    n_gallery, unknown = int(params.get("gallery", 5)), float(params.get("unknown", 0.1))
    check_gallery_args(n_gallery, unknown)
    seed = int(params.get("seed", 0))
    return lambda e, d, o: gallery(e, d, o, n_gallery=n_gallery, unknown=unknown, seed=seed)


def evaluate(
    task: str,
    models: Sequence[str],
    dataset: FaceDataset | str | Path,
    opts: RunOptions | None = None,
    out: str | Path | None = None,
    *,
    on_error: Echo | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Run ``task`` (``zeroshot``, ``verify`` or ``search``) for each model on ``dataset``; return the results document.

    ``params`` are the task's own: ``prompts``, ``distractors``, ``tau``, ``idia_k``, ``idia_ks``,
    ``non_members``, ``seed``
    (zeroshot); ``pairs`` (verify); ``gallery``, ``unknown``, ``seed`` (search). With ``out``,
    ``results.json``, ``results.md`` (and ``roc.png`` for verify) are written there, after each
    model. A model that fails is listed under ``errors`` and the others still run.
    """
    opts = opts if opts is not None else RunOptions()
    check_models(list(models))
    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset.from_folder(dataset, validate=task != "verify")
    fn = _task(task, dataset, params)
    if out is not None:
        check_out(out)

    def save(doc: dict[str, Any]) -> None:
        if out is not None:
            write_results(doc, out)

    doc = run_models(task, list(models), dataset, opts, fn, on_result=save, on_error=on_error)
    save(doc)
    return doc


def report(results: str | Path, out: str | Path | None = None) -> list[Path]:
    """Re-render the Markdown and ``report.html`` from a saved ``results.json``; the paths written."""
    import json

    path = Path(results)
    if not path.is_file():
        raise UsageError("results", str(path), "no such results file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError("results", str(path), f"not a results document ({exc})") from None
    if not isinstance(doc, dict) or "task" not in doc:
        raise UsageError("results", str(path), "not a clipface results document (no task)")
    folder = check_out(out if out is not None else path.parent)
    md = folder / ("report.md" if doc["task"] == "main" else "results.md")
    return [write_text(md, render_markdown(doc)), write_text(folder / "report.html", render_html(doc))]
