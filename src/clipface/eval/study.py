"""The paper's study in one run: zero-shot names, identity inference and gallery search, on clean and cloaked photos.

Bhat and Jain (2023) ask whether CLIP models recognise faces zero-shot, whether a bigger model
does better, and whether Fawkes and LowKey cloaks protect against them. For every model that
can run, on one dataset:

* CLIP models: zero-shot name identification with the paper's prompt ("a photo of {}.") among
  the dataset's people and distractor names, and the identity inference attack of "Does CLIP
  Know My Face?" with its 21 prompts (TPR over members, FPR over non-members, curves over the
  number of images per person and over tau);
* every encoder: gallery identification (the search-engine setting);
* the poisoned half: the same zero-shot and gallery figures with the cloaked copies of each
  person's first ``per_person`` photos, next to the same photos clean. In the gallery the cloaked
  photos are the enrolled ones (the photos a person posted) and the person's other photos are
  the probes; the protection rate is the share of probes not identified.

Cloaks are read (``--cloaked``) or made here, once per method and setting, and reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.dataset import FaceDataset, FaceImage
from ..embed.options import RunOptions
from ..embed.pipeline import embed_map
from ..errors import ClipfaceError
from ..models.base import Encoder
from ..versions import versions
from .metrics.gallery import identify
from .metrics.zeroshot import IdiaSettings
from .runner import each_model
from .stages import Stages
from .zeroshot import zeroshot

__all__ = ["CloakSet", "StudySettings", "cloaked_photos", "run_study", "study_model"]


@dataclass
class CloakSet:
    """The cloaks of one method and setting: original photo -> cloak file, and how they were made."""

    name: str  # "fawkes", "lowkey", "fawkes-published", ...
    method: str
    cloaks: dict[Path, Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudySettings:
    """What the study runs besides the models: names, identity inference, cloaks."""

    distractors: int | None = None  # None: a pool of 1,000 names (eval.zeroshot.POOL)
    idia: IdiaSettings = field(default_factory=lambda: IdiaSettings(tau=1, ks=(3, 5, 7, 9, 10), draws=20))
    non_members: Sequence[str] = ()
    per_person: int = 2
    cloak_sets: list[CloakSet] = field(default_factory=list)
    seed: int = 0
    n_gallery: int = 5  # gallery photos per person when there are no cloaks


def cloaked_photos(dataset: FaceDataset, per_person: int) -> list[FaceImage]:
    """The photos a study cloaks: each person's first ``per_person`` photos (sorted by path), if they have more."""
    out = []
    for _, images in sorted(dataset.by_identity().items()):
        ordered = sorted(images, key=lambda im: str(im.path))
        if len(ordered) > per_person:
            out += ordered[:per_person]
    return out


def _gallery(
    emb: dict[Path, np.ndarray],
    gallery: Sequence[FaceImage],
    probes: Sequence[FaceImage],
    cloaks: dict[Path, Path] | None,
) -> dict[str, Any] | None:
    """Rank-1/5 and mAP of ``probes`` against ``gallery`` (enrolled photos replaced by their cloaks when ``cloaks``)."""
    g_keys = [cloaks.get(im.path) if cloaks is not None else im.path for im in gallery]
    g = [(k, im.identity) for k, im in zip(g_keys, gallery) if k is not None and k in emb]
    enrolled = {lab for _, lab in g}
    p = [im for im in probes if im.path in emb and im.identity in enrolled]
    if not g or not p:
        return None
    res = identify(
        np.stack([emb[k] for k, _ in g]),
        [lab for _, lab in g],
        np.stack([emb[im.path] for im in p]),
        [im.identity for im in p],
    )
    out = res.to_dict()
    out["protection_rate"] = 1.0 - out["rank1"]
    return out


def study_model(encoder: Encoder, dataset: FaceDataset, opts: RunOptions, settings: StudySettings) -> dict[str, Any]:
    """One model's part of the study (see the module docstring); the keys of ``results.json``'s entries."""
    start = time.perf_counter()
    quiet = replace(opts, progress=False)
    sets = settings.cloak_sets
    cloak_images = [FaceImage(c, im.identity) for s in sets for im in dataset.images if (c := s.cloaks.get(im.path))]
    emb, res = embed_map(encoder, [*dataset.images, *cloak_images], opts)
    out: dict[str, Any] = {
        "model": encoder.name,
        "is_test_model": encoder.is_test_model,
        "encoder": encoder.info(),
        "family": "clip" if encoder.has_text else "face",
        "embeddings": res.counts(),
        "skipped": [s.to_dict() for s in [*dataset.skipped, *res.skipped]],
    }
    cloaked = cloaked_photos(dataset, settings.per_person)
    if encoder.has_text:
        zs: dict[str, Any] = {}
        common = dict(distractors=settings.distractors, seed=settings.seed, non_members=settings.non_members)
        zs["clean"] = zeroshot(encoder, dataset, quiet, prompts="paper", idia=IdiaSettings(tau=1), **common)
        zs["idia"] = zeroshot(encoder, dataset, quiet, prompts="idia", idia=settings.idia, **common)
        same = FaceDataset(root=dataset.root, images=[im for im in cloaked], name="the cloaked photos, clean")
        if sets and same.images:
            zs["clean_cloaked_photos"] = zeroshot(encoder, same, quiet, prompts="paper", **common)
        for s in sets:
            photos = [FaceImage(s.cloaks[im.path], im.identity) for im in cloaked if im.path in s.cloaks]
            if photos:
                ds = FaceDataset(root=dataset.root, images=photos, name=f"{s.name} cloaks")
                zs[s.name] = zeroshot(encoder, ds, quiet, prompts="paper", **common)
        out["zeroshot"] = zs
    if sets:
        chosen = {im.path for im in cloaked}
        enrolled_people = {im.identity for im in cloaked}
        probes = [im for im in dataset.images if im.path not in chosen and im.identity in enrolled_people]
        gal: dict[str, Any] = {"clean": _gallery(emb, cloaked, probes, None)}
        for s in sets:
            gal[s.name] = _gallery(emb, cloaked, probes, s.cloaks)
        gal["protocol"] = (
            f"{settings.per_person} photos per person enrolled (clean, or their cloaks); the others are probes"
        )
    else:
        from .gallery import gallery

        gal = {"clean": gallery(encoder, dataset, quiet, n_gallery=settings.n_gallery, seed=settings.seed)}
        gal["protocol"] = (
            f"{settings.n_gallery} photos per person enrolled; the others are probes; 10% of people held out"
        )
    out["gallery"] = gal
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def run_study(
    dataset: FaceDataset,
    models: Sequence[str],
    opts: RunOptions,
    settings: StudySettings,
    skipped: Sequence[tuple[str, str]] = (),
    echo: Callable[[str], None] = print,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    stages: Stages | None = None,
) -> dict[str, Any]:
    """The study over ``models`` (each loaded, run and released in turn); the ``results.json`` document.

    ``skipped`` lists models that could not run here, with the reason; ``on_update(doc)`` gets the
    document after every model, so a caller can save partial results.
    """
    if not models:
        echo("no model can run on this machine: see the reasons above")
    doc: dict[str, Any] = {
        "task": "main",
        "dataset": dataset.summary(),
        "models_run": list(models),
        "models_skipped": [{"model": n, "reason": r} for n, r in skipped],
        "settings": {
            "distractors": settings.distractors,
            "idia": {"tau": settings.idia.tau, "ks": list(settings.idia.ks), "draws": settings.idia.draws},
            "non_members": list(settings.non_members),
            "cloaked_per_person": settings.per_person,
            "seed": settings.seed,
        },
        "cloaks": [
            {"name": s.name, "method": s.method, "n_cloaks": len(s.cloaks), **s.info} for s in settings.cloak_sets
        ],
        "results": [],
        "errors": [],
        "versions": versions(),
    }

    def after(results: list[dict[str, Any]], errors: list[dict[str, str]]) -> None:
        doc["results"], doc["errors"] = results, errors
        if on_update is not None:
            on_update(doc)

    stages = stages or Stages(echo)

    def one(encoder: Encoder) -> dict[str, Any]:
        with stages.run(study_stage(encoder.name)):
            return study_model(encoder, dataset, opts, settings)

    each_model(list(models), opts, one, on_error=lambda m: echo(f"error: {m}"), after=after)
    return doc


#: A first guess of the seconds per optimisation step and photo on 2 cores (Fawkes mid: 75 steps, about 4 s),
#: for the estimate before the first stage has run (:mod:`~clipface.eval.stages` then follows the real pace).
SECONDS_PER_CLOAK_STEP = 0.055
#: A first guess of the seconds one model's study takes on the bundled set.
SECONDS_PER_MODEL = 30.0


def cloak_set_name(settings: Any) -> str:
    """The name of a cloak set in the study: the method, with ``-published`` for the published setting."""
    return settings.method + ("-published" if settings.published else "")


def cloak_stage(settings: Any, surrogates: Sequence[str], n_photos: int) -> str:
    """The stage label of making (or reusing) one cloak set."""
    return f"cloaks {cloak_set_name(settings)} ({settings.mode}, {' + '.join(surrogates)}), {n_photos} photos"


def study_stage(model: str) -> str:
    """The stage label of one model's study."""
    return f"study {model}"


def plan_stages(
    stages: Stages, variants: Sequence[Any], surrogates: Sequence[str], n_photos: int, models: Sequence[str]
) -> Stages:
    """Plan the study's stages on ``stages``: each cloak set (its first guess from its steps), then each model."""
    for settings in variants:
        stages.plan(
            cloak_stage(settings, surrogates, n_photos), "cloaks", n_photos * settings.steps * SECONDS_PER_CLOAK_STEP
        )
    for model in models:
        stages.plan(study_stage(model), "models", SECONDS_PER_MODEL)
    return stages


def make_cloak_sets(
    dataset: FaceDataset,
    per_person: int,
    methods: Sequence[str],
    variants: Sequence[Any],
    surrogates: Sequence[str],
    opts: RunOptions,
    cloak_root: Path,
    batch_size: int = 4,
    echo: Callable[[str], None] = print,
    stages: Stages | None = None,
) -> list[CloakSet]:
    """Cloak each person's first ``per_person`` photos with each method and each settings variant (reused if made).

    Each set is one stage of ``stages`` (planned by :func:`plan_stages`, or announced as it comes).

    ``variants`` are :class:`~clipface.cloak.settings.CloakSettings` of one method each; the set is
    named after the method, with ``-published`` for the published setting.
    """
    from ..cloak.sets import make_cloaks

    photos = cloaked_photos(dataset, per_person)
    stages = stages or Stages(echo)
    sets = []
    for method in methods:
        for settings in (v for v in variants if v.method == method):
            name = cloak_set_name(settings)
            with stages.run(cloak_stage(settings, surrogates, len(photos))):
                folder, run = make_cloaks(photos, dataset, surrogates, settings, opts, cloak_root, batch_size)
            summary = {k: v for k, v in run.summary().items() if k not in ("settings", "skipped")}
            info = {
                "source": "clipface",
                "folder": str(folder),
                "settings": settings.to_dict(),
                "surrogates": list(surrogates),
                "summary": summary,
                "skipped": [x.to_dict() for x in run.skipped],
            }
            sets.append(CloakSet(name, method, {Path(r["source"]): Path(r["cloak"]) for r in run.records}, info))
    return sets


def read_cloak_sets(dataset: FaceDataset, folder: Path, methods: Sequence[str]) -> list[CloakSet]:
    """Cloaks made elsewhere: ``NAME_cloaked.png`` (Fawkes) / ``NAME_attacked.png`` (LowKey) beside ``NAME.jpg``, or a
    folder mirroring the dataset (then of the single method in ``methods``)."""
    from ..cloak.io import read_paired_roots, read_suffix_layout

    sets = []
    for method in methods:
        triples = read_suffix_layout(folder, method)
        if triples:
            sets.append(
                CloakSet(method, method, {t.original: t.cloaked for t in triples}, {"source": f"external: {folder}"})
            )
    if not sets and len(methods) == 1:
        triples = read_paired_roots(dataset.root, folder)
        if triples:
            sets.append(
                CloakSet(
                    methods[0], methods[0], {t.original: t.cloaked for t in triples}, {"source": f"external: {folder}"}
                )
            )
    if not sets:
        raise ClipfaceError(f"{folder}: no cloaked images matched to the photos of {dataset.root}")
    known = {im.path.resolve(): im.path for im in dataset.images}
    for s in sets:  # key the cloaks by the dataset's own paths
        s.cloaks = {known[p.resolve()]: c for p, c in s.cloaks.items() if p.resolve() in known}
    return sets
