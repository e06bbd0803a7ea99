"""One call per job, as the command line runs it: check every argument, run, write the results.

Each function checks its arguments first (a :class:`~clipface.errors.UsageError` names the bad
one), checks that ``out`` can be written, then runs model after model, writing ``results.json``
and the report after each one, so that nothing computed is lost to a later failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, cast

from ._util import check_writable_dir, write_json, write_text
from .data.dataset import FaceDataset
from .embed.options import RunOptions
from .errors import UsageError, check_choice, check_float, check_int
from .eval.gallery import check_gallery_args, gallery
from .eval.main_job import run_main_job
from .eval.metrics.zeroshot import IdiaSettings
from .eval.runner import run_models
from .eval.verification import load_pairs, pairs_path_of, verification
from .eval.zeroshot import check_zeroshot_args, zeroshot
from .models.runtime import check_models
from .report.markdown import render_markdown
from .report.write import write_results

__all__ = [
    "TASKS",
    "add_images",
    "build_index",
    "check_out",
    "check_task",
    "cloak",
    "cloak_settings",
    "evaluate",
    "parse_ks",
    "poisoning",
    "protection",
    "query_index",
    "run_main",
]

#: The tasks of :func:`evaluate`, by their ``results.json`` name.
TASKS = ("zeroshot", "verify", "search")

Echo = Callable[[str], None]


def check_out(out: str | Path) -> Path:
    """``out`` as a folder that can be made and written, else :class:`~clipface.errors.UsageError`."""
    try:
        return check_writable_dir(out)
    except OSError as exc:
        raise UsageError(
            "out", str(out), f"cannot write results there ({getattr(exc, 'strerror', None) or exc})"
        ) from None


def check_task(task: str, **params: Any) -> None:
    """Check ``task``'s own arguments (all but verify's pairs file, which needs the dataset) before any work."""
    check_choice("task", task, TASKS)
    if task == "zeroshot":
        idia = IdiaSettings(tau=int(params.get("tau", 1)), k=params.get("idia_k"))
        check_zeroshot_args(params.get("prompts", "paper"), int(params.get("distractors", 0)), idia)
    elif task == "search":
        check_gallery_args(int(params.get("gallery", 5)), float(params.get("unknown", 0.1)))


def _task(task: str, dataset: FaceDataset, params: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """The per-model function of ``task`` with ``params``, after checking them."""
    check_task(task, **params)
    if task == "zeroshot":
        idia = IdiaSettings(tau=int(params.get("tau", 1)), k=params.get("idia_k"))
        prompts, distractors = params.get("prompts", "paper"), int(params.get("distractors", 0))
        check_zeroshot_args(prompts, distractors, idia)
        seed = int(params.get("seed", 0))
        return lambda e, d, o: zeroshot(e, d, o, prompts=prompts, distractors=distractors, seed=seed, idia=idia)
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

    ``params`` are the task's own: ``prompts``, ``distractors``, ``tau``, ``idia_k``, ``seed``
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


def run_main(
    dataset: FaceDataset | str | Path = "bundled:lfw-mini",
    out: str | Path = "runs/main",
    opts: RunOptions | None = None,
    *,
    include_test_models: bool = False,
    distractors: int = 100,
    echo: Echo = print,
) -> Path:
    """The main job (every model that can run here) on ``dataset``: ``out/results.json`` and ``out/report.md``; returns
    the report's path."""
    out = check_out(out)
    if not isinstance(dataset, FaceDataset):
        dataset = FaceDataset.from_folder(dataset)
    if opts is None:
        from .embed.cache import EmbeddingCache

        opts = RunOptions(cache=EmbeddingCache())

    def save(doc: dict[str, Any]) -> None:
        write_json(out / "results.json", doc)
        write_text(out / "report.md", render_markdown(doc))

    doc = run_main_job(
        dataset, opts, include_test_models=include_test_models, distractors=distractors, echo=echo, on_update=save
    )
    save(doc)
    return out / "report.md"


# -- cloaking ---------------------------------------------------------------------------------------
def cloak_settings(
    method: str = "fawkes",
    mode: str = "mid",
    *,
    no_budget: bool = False,
    region: str = "image",
    seed: int = 0,
    steps: int | None = None,
    jitter: int | None = None,
    eot: str | Sequence[str] | None = None,
    published: bool = False,
) -> Any:
    """A checked :class:`~clipface.cloak.settings.CloakSettings` from the command line's choices.

    The robust setting (:data:`~clipface.cloak.settings.ROBUST`) is the default; ``published``
    starts from the methods' published one instead; ``jitter`` and ``eot`` override either.
    """
    from .cloak import fawkes, lowkey
    from .cloak.settings import METHODS, MODES, PUBLISHED, ROBUST, CloakSettings

    check_choice("method", method, METHODS)
    check_choice("mode", mode, tuple(MODES))
    check_int("steps", steps, 1)
    preset = PUBLISHED if published else ROBUST
    names = (
        preset["eot"]
        if eot is None
        else ([e.strip() for e in eot.split(",") if e.strip()] if isinstance(eot, str) else list(eot))
    )
    params: Any = None
    if steps is not None:
        params = lowkey.LowKeyParams(steps=steps) if method == "lowkey" else fawkes.fawkes_params(mode, max_step=steps)
    return CloakSettings(
        method=method,
        mode=mode,
        enforce_budget=not no_budget,
        region=region,
        seed=seed,
        params=params,
        jitter=preset["jitter"] if jitter is None else jitter,
        eot=tuple(names),
    )


def cloak(
    src: str | Path,
    out: str | Path,
    settings: Any,
    surrogates: Sequence[str],
    opts: RunOptions | None = None,
    *,
    target_dir: str | Path | None = None,
    cloak_batch: int = 4,
) -> Any:
    """Cloak a folder (identity sub-folders, or one person's photos) into ``out``; returns the
    :class:`~clipface.cloak.run.CloakRun`."""
    from .cloak.run import cloak_folder

    check_models(list(surrogates))
    if not surrogates:
        raise UsageError("surrogate", None, "cloaking needs at least one surrogate model")
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    check_out(out)
    opts = opts if opts is not None else RunOptions()
    return cloak_folder(
        Path(src), Path(out), settings, list(surrogates), opts, Path(target_dir) if target_dir else None, cloak_batch
    )


def protection(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    settings: Any,
    surrogates: Sequence[str] = (),
    *,
    out: str | Path,
    each_surrogate: bool = False,
    users: Sequence[str] | None = None,
    test_frac: float = 0.3,
    cloak_dir: str | Path | None = None,
    cloaked: str | Path | None = None,
    cloak_batch: int = 4,
    repost_jpeg: int | None = None,
    on_error: Echo | None = None,
) -> dict[str, Any]:
    """FaceCure protection of cloaked users against every model; writes ``out/results.json`` and ``results.md``.

    ``repost_jpeg``: the targets see each cloak re-encoded as a JPEG of this quality (1-100).
    """
    from .cloak.io import originals_only, read_cloaked
    from .eval.protection import evaluate_protection

    check_models([*models, *surrogates])
    if cloaked is None and not surrogates:
        raise UsageError(
            "surrogate", None, "give --surrogate (cloaks made here) or --cloaked DIR (cloaks made elsewhere)"
        )
    check_float("test_frac", test_frac, 0.0, 1.0, low_open=True, high_open=True)
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    check_int("repost_jpeg", repost_jpeg, 1, 100)
    out = check_out(out)
    dataset = originals_only(dataset)
    external = read_cloaked(Path(cloaked), dataset.root, settings.method) if cloaked is not None else None
    sets = [[s] for s in surrogates] if each_surrogate else [list(surrogates)]
    doc = evaluate_protection(
        list(models),
        dataset,
        opts,
        settings,
        sets,
        Path(cloak_dir) if cloak_dir else out / "cloaks",
        users=users,
        test_frac=test_frac,
        batch_size=cloak_batch,
        external=external,
        on_error=on_error,
        repost_quality=repost_jpeg,
    )
    write_results(doc, out)
    return doc


def parse_ks(text: str) -> list[int]:
    """``"0,1,2,4"`` as a list of whole numbers >= 0, else :class:`~clipface.errors.UsageError`."""
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError("poison_k", text, "expected comma-separated whole numbers such as 0,1,2,4") from None
    if not ks or min(ks) < 0:
        raise UsageError("poison_k", text, "expected comma-separated whole numbers >= 0")
    return ks


def poisoning(
    models: Sequence[str],
    dataset: FaceDataset,
    opts: RunOptions,
    *,
    out: str | Path,
    poison_k: str | Sequence[int] = "0,1,2,4",
    kinds: Sequence[str] = ("mislabel",),
    n_gallery: int = 3,
    settings: Any = None,
    surrogates: Sequence[str] = (),
    cloak_dir: str | Path | None = None,
    cloak_batch: int = 4,
    on_error: Echo | None = None,
) -> dict[str, Any]:
    """Rank-1 against k poisons per person (mislabelled photos or cloaks); writes ``out/results.json`` and
    ``results.md``."""
    from .eval.poisoning import evaluate_poisoning

    check_models([*models, *surrogates])
    ks = (
        parse_ks(poison_k)
        if isinstance(poison_k, str)
        else [check_int("poison_k", k, 0, allow_none=False) for k in poison_k]
    )
    for kind in kinds:
        check_choice("kind", kind, ("mislabel", "cloak"))
    if "cloak" in kinds and not surrogates:
        raise UsageError("surrogate", None, "poisons of kind cloak need --surrogate")
    check_int("gallery", n_gallery, 1, allow_none=False)
    check_int("cloak_batch", cloak_batch, 1, allow_none=False)
    out = check_out(out)
    doc = evaluate_poisoning(
        list(models),
        dataset,
        opts,
        ks,
        list(kinds),
        n_gallery,
        settings,
        list(surrogates),
        Path(cloak_dir) if cloak_dir else out / "cloaks",
        cloak_batch,
        on_error=on_error,
    )
    write_results(doc, out)
    return doc


# -- the search engine ------------------------------------------------------------------------------
def _index_folder(index_dir: str | Path, must_exist: bool) -> Path:
    path = Path(index_dir)
    if path.exists() and not path.is_dir():
        raise UsageError("index", str(path), "is a file, not an index folder")
    if must_exist and not path.is_dir():
        raise UsageError("index", str(path), "no such index folder (build one with `clipface index build`)")
    return path


def build_index(
    model: str,
    images: Any,
    index_dir: str | Path,
    opts: RunOptions | None = None,
    *,
    kind: str = "auto",
    overwrite: bool = False,
) -> tuple[Any, Any]:
    """Embed ``images`` (a folder, ``bundled:NAME``, a dataset or files) with ``model`` into a new index folder."""
    from .models.runtime import load_encoder
    from .search.faiss_backend import KINDS, Kind
    from .search.store import FaceIndex

    check_models([model])
    check_choice("kind", kind, KINDS)
    path = _index_folder(index_dir, must_exist=False)
    opts = opts if opts is not None else RunOptions()
    encoder = load_encoder(model, opts)
    return FaceIndex.build(
        encoder,
        images,
        path,
        kind=cast(Kind, kind),
        cache=opts.cache,
        align=opts.aligner,
        on_no_face=opts.on_no_face,
        overwrite=overwrite,
        batch_size=opts.batch_size,
        workers=opts.workers,
        progress=opts.progress,
    )


def add_images(index_dir: str | Path, images: Any, opts: RunOptions | None = None) -> tuple[Any, Any]:
    """Append new images to an index (files already indexed are skipped); returns the index and what was done."""
    from .search.store import FaceIndex

    index = FaceIndex.load(_index_folder(index_dir, must_exist=True), mmap=False)
    opts = opts if opts is not None else RunOptions()
    weights = next(iter(opts.weights.values()), None)
    encoder = index.load_encoder(weights=weights, device=opts.device)
    update = index.add(
        encoder, images, opts.cache, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress
    )
    return index, update


def query_index(
    index_dir: str | Path,
    *,
    text: str | None = None,
    image: str | Path | None = None,
    k: int = 10,
    weights: str | Path | None = None,
    device: str = "cpu",
) -> list[Any]:
    """The ``k`` best images for a text (CLIP models) or a photo (any model), as
    :class:`~clipface.search.records.SearchHit`."""
    from .data.images import load_image
    from .search.store import FaceIndex

    if (text is None) == (image is None):
        raise UsageError("text", text, "give exactly one of --text and --image")
    check_int("k", k, 1, 10_000, allow_none=False)
    index = FaceIndex.load(_index_folder(index_dir, must_exist=True))
    encoder = index.load_encoder(weights=weights, device=device)
    if text is not None:
        return index.query_text(encoder, text, k)
    assert image is not None
    return index.query_image(encoder, load_image(Path(image)), k)
