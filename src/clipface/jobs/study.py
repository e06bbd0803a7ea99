"""The study as one job (:mod:`clipface.eval.study`): models chosen and fetched, cloaks read or made, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import FaceDataset
from ..embed.options import RunOptions
from ..errors import ClipfaceError, check_choice, check_int
from ..eval.metrics.zeroshot import IdiaSettings
from ..files import write_json, write_text
from ..models.registry import check_models
from ..report.html import render_html
from ..report.markdown import render_markdown
from .cloaking import cloak_settings
from .tasks import Echo, check_out

__all__ = ["run_main"]


def run_main(
    dataset: FaceDataset | str | Path = "bundled:lfw-mini",
    out: str | Path = "runs/main",
    opts: RunOptions | None = None,
    *,
    models: Sequence[str] = ("default",),
    include_test_models: bool = False,
    distractors: int | None = None,
    idia_ks: Sequence[int] = (3, 5, 7, 9, 10),
    non_members: Sequence[str] = (),
    non_members_dir: str | Path | None = None,
    cloak_methods: Sequence[str] = ("fawkes", "lowkey"),
    cloak_mode: str = "mid",
    cloak_setting: str = "both",
    surrogates: Sequence[str] = ("facenet-casia",),
    cloak_per_person: int = 2,
    cloak_steps: int | None = None,
    cloaked: str | Path | None = None,
    cloak_dir: str | Path | None = None,
    echo: Echo = print,
) -> Path:
    """The study (:mod:`clipface.eval.study`) over every chosen model that can run here; returns ``out/report.md``.

    ``models``: presets (``default``, ``paper``, ``all``) or names; a CLIP model missing from the
    Hugging Face cache is downloaded where the hub can be reached, else skipped with one line.
    Cloaks: read from ``cloaked``, or made with ``surrogates`` for each of ``cloak_methods`` at
    ``cloak_mode``, in the robust and/or published setting (``cloak_setting``), for each person's
    first ``cloak_per_person`` photos, kept in ``cloak_dir`` (default ``out/cloaks``) for later runs.
    Writes ``results.json``, ``report.md`` and ``report.html`` after every model.
    """
    from ..eval.stages import Stages
    from ..eval.study import StudySettings, cloaked_photos, make_cloak_sets, plan_stages, read_cloak_sets, run_study
    from ..eval.zeroshot import check_non_members
    from ..models.download import ensure_weights
    from ..models.registry import get_spec, resolve_models

    names = resolve_models(list(models), include_test=include_test_models)
    check_int("distractors", distractors, 0)
    check_int("cloak_per_person", cloak_per_person, 1, allow_none=False)
    check_choice("cloak_setting", cloak_setting, ("robust", "published", "both"))
    for m in cloak_methods:
        check_choice("cloak", m, ("fawkes", "lowkey"))
    check_models(list(surrogates))
    idia = IdiaSettings(tau=1, ks=tuple(idia_ks), draws=20)
    out = check_out(out)
    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset.from_folder(dataset)
    dataset, non_members = dataset.with_non_members(non_members, non_members_dir)
    check_non_members(non_members, dataset)
    if opts is None:
        from ..embed.cache import EmbeddingCache

        opts = RunOptions(cache=EmbeddingCache())
    runnable, skipped = [], []
    for name in names:
        spec = get_spec(name)
        ok, reason = (True, "--weights") if name in opts.weights else spec.availability()
        if not ok and spec.family == "clip" and spec.hf_id:
            try:
                echo(ensure_weights(spec))
                ok = True
            except ClipfaceError as exc:
                reason = str(exc)
        if ok:
            runnable.append(name)
        else:
            skipped.append((name, reason))
            echo(f"skip {name}: {reason}")
    sets, variants, usable = [], [], []
    if cloaked is None and cloak_methods:
        usable = [s for s in surrogates if get_spec(s).availability()[0]]
        flags = {"robust": (False,), "published": (True,), "both": (False, True)}[cloak_setting]
        variants = [cloak_settings(m, cloak_mode, steps=cloak_steps, published=p) for m in cloak_methods for p in flags]
    n_photos = len(cloaked_photos(dataset, cloak_per_person))
    stages = plan_stages(Stages(echo), variants if usable else [], usable, n_photos, runnable)
    if cloaked is not None:
        sets = read_cloak_sets(dataset, Path(cloaked), list(cloak_methods))
    elif cloak_methods:
        if not usable:
            echo(f"no cloaks: surrogate {', '.join(surrogates)} is not available here")
        else:
            root = Path(cloak_dir) if cloak_dir else out / "cloaks"
            sets = make_cloak_sets(
                dataset, cloak_per_person, cloak_methods, variants, usable, opts, root, echo=echo, stages=stages
            )
    settings = StudySettings(
        distractors=distractors, idia=idia, non_members=non_members, per_person=cloak_per_person, cloak_sets=sets
    )

    def save(doc: dict[str, Any]) -> None:
        write_json(out / "results.json", doc)
        write_text(out / "report.md", render_markdown(doc))
        write_text(out / "report.html", render_html(doc))

    doc = run_study(dataset, runnable, opts, settings, skipped=skipped, echo=echo, on_update=save, stages=stages)
    save(doc)
    return out / "report.md"
