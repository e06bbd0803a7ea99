"""``clipface eval zeroshot|verify|search|protection|poisoning``: options in, one API call, a summary out."""

from __future__ import annotations

from pathlib import Path

from .. import jobs
from .app import echo, error_line, eval_app, finish, guard, summary
from .flags import (
    Align,
    Backend,
    BatchSize,
    CacheDir,
    CloakBatch,
    CloakDir,
    Cloaked,
    Dataset,
    Device,
    Distractors,
    EachSurrogate,
    Eot,
    FaceSelect,
    Flip,
    Gallery,
    IdiaK,
    Jitter,
    MaxIdentities,
    MaxPerIdentity,
    Method,
    MinImages,
    Mode,
    Models,
    NoBudget,
    NoCache,
    NonMembers,
    NonMembersDir,
    OnNoFace,
    Out,
    Pairs,
    PoisonK,
    PoisonKinds,
    Precision,
    Prompts,
    Published,
    Quiet,
    Region,
    RepostJpeg,
    Seed,
    Steps,
    Surrogates,
    Tau,
    TestFrac,
    Threads,
    Unknown,
    Users,
    Weights,
    Workers,
)
from .options import CliOptions

DEFAULT_OUT = Path("runs/latest")


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: Models,
    dataset: Dataset = "bundled:lfw-mini",
    out: Out = DEFAULT_OUT,
    prompts: Prompts = "paper",
    distractors: Distractors = None,
    tau: Tau = 1,
    idia_k: IdiaK = None,
    non_members: NonMembers = None,
    non_members_dir: NonMembersDir = None,
    min_images: MinImages = 1,
    max_identities: MaxIdentities = None,
    max_per_identity: MaxPerIdentity = None,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    face_select: FaceSelect = "central",
    flip: Flip = False,
    backend: Backend = "torch",
    precision: Precision = "fp32",
    quiet: Quiet = False,
) -> None:
    """Zero-shot name identification: does the model pick the right name for each face?"""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        k, ks = o.idia()
        params = dict(prompts=o.prompts, distractors=o.distractors, tau=o.tau, idia_k=k, idia_ks=ks, seed=o.seed)
        jobs.check_task("zeroshot", **params)  # every task argument checked before the dataset is scanned
        names = o.non_member_names()  # a bad file is named before the dataset is scanned
        ds, names = o.load_dataset().with_non_members(names, o.non_members_dir)
        doc = jobs.evaluate("zeroshot", o.model, ds, opts, o.out, on_error=error_line, non_members=names, **params)
        summary(doc, ("top1", "top5"))
        finish(doc, o.out)

    guard(go)


@eval_app.command("verify")
def eval_verify(
    model: Models,
    dataset: Dataset = "bundled:lfw-mini",
    pairs: Pairs = None,
    out: Out = DEFAULT_OUT,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    face_select: FaceSelect = "central",
    flip: Flip = True,
    backend: Backend = "torch",
    precision: Precision = "fp32",
    quiet: Quiet = False,
) -> None:
    """LFW verification: 10-fold accuracy, AUC, EER, TAR@FAR and a ROC plot (mirrored crops added by default)."""
    o = CliOptions.of(locals())

    def go() -> None:
        from ..data.dataset import FaceDataset

        opts = o.check().run_options()
        ds = FaceDataset.from_folder(o.dataset, validate=False)  # only the pairs' images are read
        doc = jobs.evaluate("verify", o.model, ds, opts, o.out, on_error=error_line, pairs=o.pairs)
        summary(doc, ("accuracy", "auc", "eer"))
        finish(doc, o.out)

    guard(go)


@eval_app.command("search")
def eval_search(
    model: Models,
    dataset: Dataset = "bundled:lfw-mini",
    out: Out = DEFAULT_OUT,
    gallery: Gallery = 5,
    unknown: Unknown = 0.1,
    min_images: MinImages = 1,
    max_identities: MaxIdentities = None,
    max_per_identity: MaxPerIdentity = None,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    face_select: FaceSelect = "central",
    flip: Flip = False,
    backend: Backend = "torch",
    precision: Precision = "fp32",
    quiet: Quiet = False,
) -> None:
    """Gallery identification, the search-engine setting: rank-1/5, mAP and open-set DIR@FAR."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        params = dict(gallery=o.gallery, unknown=o.unknown, seed=o.seed)
        jobs.check_task("search", **params)
        doc = jobs.evaluate("search", o.model, o.load_dataset(), opts, o.out, on_error=error_line, **params)
        summary(doc, ("rank1", "rank5", "map"))
        finish(doc, o.out)

    guard(go)


@eval_app.command("protection")
def eval_protection(
    model: Models,
    surrogate: Surrogates = [],  # noqa: B006 (typer reads the default; it is never mutated)
    each_surrogate: EachSurrogate = False,
    method: Method = "fawkes",
    mode: Mode = "low",
    dataset: Dataset = "bundled:lfw-mini",
    out: Out = DEFAULT_OUT,
    user: Users = None,
    test_frac: TestFrac = 0.3,
    cloak_dir: CloakDir = None,
    cloaked: Cloaked = None,
    repost_jpeg: RepostJpeg = None,
    region: Region = "face",
    no_budget: NoBudget = False,
    steps: Steps = None,
    jitter: Jitter = None,
    eot: Eot = None,
    published: Published = False,
    min_images: MinImages = 1,
    max_identities: MaxIdentities = None,
    max_per_identity: MaxPerIdentity = None,
    seed: Seed = 0,
    cloak_batch: CloakBatch = 4,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    quiet: Quiet = False,
) -> None:
    """Cloak each person's gallery photos (or reuse cloaks) and measure protection against every --model."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        settings = o.cloak_settings()
        doc = jobs.protection(
            o.model,
            o.load_dataset(),
            opts,
            settings,
            o.surrogate,
            out=o.out,
            each_surrogate=o.each_surrogate,
            users=o.user,
            test_frac=o.test_frac,
            cloak_dir=o.cloak_dir,
            cloaked=o.cloaked,
            cloak_batch=o.cloak_batch,
            repost_jpeg=o.repost_jpeg,
            on_error=error_line,
        )
        for r in doc["results"]:
            echo(
                f"{' + '.join(r['surrogates'])} -> {r['model']}: protection rate {r['protection_rate']:.3f} "
                f"(clean baseline {r['protection_rate_clean']:.3f})"
            )
        finish(doc, o.out)

    guard(go)


@eval_app.command("poisoning")
def eval_poisoning(
    model: Models,
    poison_k: PoisonK = "0,1,2,4",
    kind: PoisonKinds = ["mislabel"],  # noqa: B006
    gallery: Gallery = 3,
    surrogate: Surrogates = [],  # noqa: B006
    method: Method = "fawkes",
    mode: Mode = "low",
    dataset: Dataset = "bundled:lfw-mini",
    out: Out = DEFAULT_OUT,
    cloak_dir: CloakDir = None,
    region: Region = "face",
    no_budget: NoBudget = False,
    steps: Steps = None,
    jitter: Jitter = None,
    eot: Eot = None,
    published: Published = False,
    min_images: MinImages = 1,
    max_identities: MaxIdentities = None,
    max_per_identity: MaxPerIdentity = None,
    seed: Seed = 0,
    cloak_batch: CloakBatch = 4,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = "cpu",
    weights: Weights = None,
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    quiet: Quiet = False,
) -> None:
    """Index poisoning: rank-1 identification as k mislabelled or cloaked photos per person join the gallery."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        jobs.parse_ks(o.poison_k)
        settings = o.cloak_settings()
        doc = jobs.poisoning(
            o.model,
            o.load_dataset(),
            opts,
            out=o.out,
            poison_k=o.poison_k,
            kinds=o.kind,
            n_gallery=o.gallery,
            settings=settings,
            surrogates=o.surrogate,
            cloak_dir=o.cloak_dir,
            cloak_batch=o.cloak_batch,
            on_error=error_line,
        )
        for r in doc["results"]:
            curve = ", ".join(f"{p['kind']} k={p['k']}: {p['rank1']:.3f}" for p in r["curve"])
            echo(f"{r['model']}: rank-1 {curve}")
        finish(doc, o.out)

    guard(go)
