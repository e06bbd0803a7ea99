"""``clipface eval zeroshot|verify|search|protection|poisoning``: option groups in, one job, a summary out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from .. import jobs
from .app import echo, error_line, eval_app, finish, guard, summary
from .expand import api_args, command
from .options import (
    TUNING,
    CloakOptions,
    CloakReuse,
    DatasetOptions,
    EmbedOptions,
    EvalOptions,
    GalleryOptions,
    IdentityOptions,
    PoisonOptions,
    ProtectionOptions,
    SampleOptions,
    prepare,
)

Pairs = Annotated[Optional[Path], typer.Option("--pairs", help="pairs.txt (default: DATASET/pairs.txt).")]


@command(eval_app, "zeroshot")
def eval_zeroshot(ev: EvalOptions, data: SampleOptions, ids: IdentityOptions, emb: EmbedOptions) -> None:
    """Zero-shot name identification: does the model pick the right name for each face?"""

    def go() -> None:
        opts = prepare(ev.model, emb, out=ev.out, sample=data)
        k, ks = ids.idia()
        params = dict(
            prompts=ids.prompts, distractors=ids.distractors, tau=ids.tau, idia_k=k, idia_ks=ks, seed=data.seed
        )
        jobs.check_task("zeroshot", **params)  # every task argument checked before the dataset is scanned
        names = ids.non_member_names()  # a bad file is named before the dataset is scanned
        ds, names = data.load(echo).with_non_members(names, ids.non_members_dir)
        doc = jobs.evaluate("zeroshot", ev.model, ds, opts, ev.out, on_error=error_line, non_members=names, **params)
        summary(doc, ("top1", "top5"))
        finish(doc, ev.out)

    guard(go)


@command(eval_app, "verify", defaults={"flip": True})
def eval_verify(ev: EvalOptions, data: DatasetOptions, emb: EmbedOptions, pairs: Pairs = None) -> None:
    """LFW verification: 10-fold accuracy, AUC, EER, TAR@FAR and a ROC plot (mirrored crops added by default)."""

    def go() -> None:
        from ..data.dataset import FaceDataset

        opts = prepare(ev.model, emb, out=ev.out)
        ds = FaceDataset.from_folder(data.dataset, validate=False)  # only the pairs' images are read
        doc = jobs.evaluate("verify", ev.model, ds, opts, ev.out, on_error=error_line, pairs=pairs)
        summary(doc, ("accuracy", "auc", "eer"))
        finish(doc, ev.out)

    guard(go)


@command(eval_app, "search")
def eval_search(ev: EvalOptions, data: SampleOptions, gal: GalleryOptions, emb: EmbedOptions) -> None:
    """Gallery identification, the search-engine setting: rank-1/5, mAP and open-set DIR@FAR."""

    def go() -> None:
        opts = prepare(ev.model, emb, out=ev.out, sample=data)
        params = dict(gallery=gal.gallery, unknown=gal.unknown, seed=data.seed)
        jobs.check_task("search", **params)
        doc = jobs.evaluate("search", ev.model, data.load(echo), opts, ev.out, on_error=error_line, **params)
        summary(doc, ("rank1", "rank5", "map"))
        finish(doc, ev.out)

    guard(go)


@command(eval_app, "protection", drop=TUNING)
def eval_protection(
    ev: EvalOptions,
    cl: CloakOptions,
    prot: ProtectionOptions,
    reuse: CloakReuse,
    data: SampleOptions,
    emb: EmbedOptions,
) -> None:
    """Cloak each person's gallery photos (or reuse cloaks) and measure protection against every --model."""

    def go() -> None:
        opts = prepare([*ev.model, *cl.surrogate], emb, out=ev.out, sample=data)
        given = api_args(jobs.protection, prot, reuse, out=ev.out, cloak_batch=cl.cloak_batch, on_error=error_line)
        doc = jobs.protection(ev.model, data.load(echo), opts, cl.settings(), cl.surrogate, **given)
        for r in doc["results"]:
            echo(
                f"{' + '.join(r['surrogates'])} -> {r['model']}: protection rate {r['protection_rate']:.3f} "
                f"(clean baseline {r['protection_rate_clean']:.3f})"
            )
        finish(doc, ev.out)

    guard(go)


@command(eval_app, "poisoning", drop=(*TUNING, "unknown", "cloaked"), defaults={"gallery": 3})
def eval_poisoning(
    ev: EvalOptions,
    poison: PoisonOptions,
    gal: GalleryOptions,
    data: SampleOptions,
    cl: CloakOptions,
    reuse: CloakReuse,
    emb: EmbedOptions,
) -> None:
    """Index poisoning: rank-1 identification as k mislabelled or cloaked photos per person join the gallery."""

    def go() -> None:
        opts = prepare([*ev.model, *cl.surrogate], emb, out=ev.out, sample=data)
        jobs.parse_ks(poison.poison_k)
        given = api_args(
            jobs.poisoning,
            poison,
            reuse,
            skip=("cloaked",),
            n_gallery=gal.gallery,
            settings=cl.settings(),
            surrogates=cl.surrogate,
            cloak_batch=cl.cloak_batch,
            on_error=error_line,
        )
        doc = jobs.poisoning(ev.model, data.load(echo), opts, out=ev.out, **given)
        for r in doc["results"]:
            curve = ", ".join(f"{p['kind']} k={p['k']}: {p['rank1']:.3f}" for p in r["curve"])
            echo(f"{r['model']}: rank-1 {curve}")
        finish(doc, ev.out)

    guard(go)
