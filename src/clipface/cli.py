"""The ``clipface`` command line: a thin layer over the Python API (no logic lives here)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .errors import ClipfaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models on a face dataset.")
app.add_typer(eval_app, name="eval")

DEFAULT_DATASET = "bundled:lfw-mini"

ModelOpt = typer.Option(..., "--model", "-m", help="Model name (repeat for a comparison); see `clipface models`.")
DatasetOpt = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="Folder of identity sub-folders, or bundled:lfw-mini.")
OutOpt = typer.Option(Path("runs/latest"), "--out", "-o", help="Output folder for results.json and results.md.")
MinImagesOpt = typer.Option(1, "--min-images", help="Keep people with at least this many images.")
MaxIdOpt = typer.Option(None, "--max-identities", help="Sample at most this many people (seeded).")
MaxPerOpt = typer.Option(None, "--max-per-identity", help="Sample at most this many images per person (seeded).")
SeedOpt = typer.Option(0, "--seed", help="Seed of every sampling step.")
BatchOpt = typer.Option(32, "--batch-size", help="Images per forward pass.")
WorkersOpt = typer.Option(None, "--workers", help="Threads decoding images (default: from the machine).")
CacheOpt = typer.Option(None, "--cache-dir", help="Embedding cache folder (default $CLIPFACE_CACHE_DIR or ~/.cache/clipface).")
NoCacheOpt = typer.Option(False, "--no-cache", help="Compute every embedding, store none.")
DeviceOpt = typer.Option("cpu", "--device", help="torch device (cpu, cuda).")
WeightsOpt = typer.Option(None, "--weights", help="Local weights: DIR (one model) or MODEL=DIR (repeatable).")
AlignOpt = typer.Option(None, "--align", help="Face front end for every model: none, dlib or mtcnn (default: each model's own).")
NoFaceOpt = typer.Option("skip", "--on-no-face", help="Images with no face: skip (listed) or center (centre crop).")
SelectOpt = typer.Option(
    "central", "--face-select", help="Photos with several faces: central (FaceNet's rule: large and near the centre) or largest."
)
FlipOpt = typer.Option(False, "--flip/--no-flip", help="Also embed each mirrored face crop and add the two (test-time augmentation).")
FlipVerifyOpt = typer.Option(True, "--flip/--no-flip", help="Also embed each mirrored face crop and add the two (on by default, as in LFW evaluations).")
BackendOpt = typer.Option(
    "torch", "--backend", help="Inference backend: torch (eager), compile (torch.compile; one-off compilation) or onnx (ONNX Runtime, exported once and cached)."
)
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32, or int8 (dynamic quantisation; needs --backend onnx).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ClipfaceError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: finished batches are cached; run the same command again to resume", err=True)
        raise typer.Exit(130)


def _weights(models: List[str], weights: Optional[List[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for w in weights or []:
        if "=" in w and not Path(w).exists():
            name, path = w.split("=", 1)
            out[name] = path
        elif len(models) == 1:
            out[models[0]] = w
        else:
            _fail(f"--weights {w}: with several models, write --weights MODEL=DIR")
    return out


def _error_line(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _options(models, cache_dir, no_cache, batch_size, workers, device, weights, align, on_no_face, quiet, backend="torch", precision="fp32", face_select="central", flip=False):  # type: ignore[no-untyped-def]
    from .align import ON_NO_FACE, SELECT
    from .cache import EmbeddingCache, NullCache
    from .encoders.backends import BACKENDS, PRECISIONS
    from .evaluate import RunOptions
    from .registry import get_spec

    for name in models:
        get_spec(name)  # unknown names fail before any work

    if on_no_face not in ON_NO_FACE:
        _fail(f"--on-no-face {on_no_face}: choose {' or '.join(ON_NO_FACE)}")
    if face_select not in SELECT:
        _fail(f"--face-select {face_select}: choose {' or '.join(SELECT)}")
    if backend not in BACKENDS or precision not in PRECISIONS:
        _fail(f"--backend {backend} --precision {precision}: choose {'|'.join(BACKENDS)} and {'|'.join(PRECISIONS)}")
    return RunOptions(
        cache=NullCache() if no_cache else EmbeddingCache(cache_dir),
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=not quiet,
        weights=_weights(models, weights),
        aligner=align,
        on_no_face=on_no_face,
        face_select=face_select,
        flip=flip,
        backend=backend,
        precision=precision,
    )


def _dataset(dataset, min_images, max_identities, max_per_identity, seed):  # type: ignore[no-untyped-def]
    from .dataset import FaceDataset

    ds = FaceDataset.from_folder(
        dataset, min_images=min_images, max_identities=max_identities, max_per_identity=max_per_identity, seed=seed
    )
    typer.echo(f"dataset {ds.name}: {len(ds)} images of {len(ds.identities)} people, {len(ds.skipped)} files skipped", err=True)
    for s in ds.skipped[:20]:
        typer.echo(f"  skipped {s.path}: {s.reason}", err=True)
    if len(ds) == 0:
        _fail(f"{ds.root}: no usable images after filtering")
    return ds


def _finish(doc: dict[str, Any], out: Path, markdown: str) -> None:
    from .report import write_json, write_text

    write_json(out / "results.json", doc)
    write_text(out / "results.md", markdown)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'results.md'}", err=True)
    if doc.get("errors"):
        raise typer.Exit(1)


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List registered models and whether each can run here now."""
    from .models_table import models_table

    rows = _guard(models_table)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "family", "params", "pretraining", "available", title="clipface models")
    for r in rows:
        name = r["name"] + (" [TEST MODEL]" if r["is_test"] else "")
        table.add_row(name, r["family"], r["params"], r["pretraining"], ("yes: " if r["available"] else "no: ") + r["reason"])
    Console(width=160).print(table)


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: List[str] = ModelOpt,
    dataset: str = DatasetOpt,
    out: Path = OutOpt,
    prompts: str = typer.Option("paper", "--prompts", help="paper (\"a photo of {}.\"), idia (21 templates) or a template with {}."),
    distractors: int = typer.Option(0, "--distractors", help="Add this many realistic distractor names (seeded)."),
    tau: int = typer.Option(1, "--tau", help="Identity inference: prompts that must agree for a name to be accepted."),
    idia_k: Optional[int] = typer.Option(None, "--idia-k", help="Identity inference: images per person voting (default all)."),
    min_images: int = MinImagesOpt,
    max_identities: Optional[int] = MaxIdOpt,
    max_per_identity: Optional[int] = MaxPerOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    cache_dir: Optional[Path] = CacheOpt,
    no_cache: bool = NoCacheOpt,
    device: str = DeviceOpt,
    weights: Optional[List[str]] = WeightsOpt,
    align: Optional[str] = AlignOpt,
    on_no_face: str = NoFaceOpt,
    face_select: str = SelectOpt,
    flip: bool = FlipOpt,
    backend: str = BackendOpt,
    precision: str = PrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Zero-shot name identification: does the model pick the right name for each face?"""
    from .evaluate import run_models, zeroshot
    from .tasks.zeroshot import IdiaSettings, to_markdown

    def go() -> None:
        opts = _options(model, cache_dir, no_cache, batch_size, workers, device, weights, align, on_no_face, quiet, backend, precision, face_select, flip)
        ds = _dataset(dataset, min_images, max_identities, max_per_identity, seed)
        idia = IdiaSettings(tau=tau, k=idia_k)
        fn = lambda enc, d, o: zeroshot(enc, d, o, prompts=prompts, distractors=distractors, seed=seed, idia=idia)  # noqa: E731
        doc = run_models("zeroshot", model, ds, opts, fn, on_error=_error_line)
        _summary(doc, ("top1", "top5"))
        _finish(doc, out, to_markdown(doc))

    _guard(go)


@eval_app.command("verify")
def eval_verify(
    model: List[str] = ModelOpt,
    dataset: str = DatasetOpt,
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="pairs.txt (default: DATASET/pairs.txt)."),
    out: Path = OutOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    cache_dir: Optional[Path] = CacheOpt,
    no_cache: bool = NoCacheOpt,
    device: str = DeviceOpt,
    weights: Optional[List[str]] = WeightsOpt,
    align: Optional[str] = AlignOpt,
    on_no_face: str = NoFaceOpt,
    face_select: str = SelectOpt,
    flip: bool = FlipVerifyOpt,
    backend: str = BackendOpt,
    precision: str = PrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """LFW verification: 10-fold accuracy, AUC, EER, TAR@FAR and a ROC plot."""
    from .dataset import FaceDataset
    from .evaluate import run_models, verification
    from .report import verification_markdown
    from .tasks.verification import plot_roc

    def go() -> None:
        opts = _options(model, cache_dir, no_cache, batch_size, workers, device, weights, align, on_no_face, quiet, backend, precision, face_select, flip)
        ds = FaceDataset.from_folder(dataset, validate=False)  # only the pairs' images are read
        kept: list = []
        doc = run_models("verify", model, ds, opts, lambda e, d, o: verification(e, d, o, pairs, keep=kept), on_error=_error_line)
        if kept:
            plot_roc(dict(kept), out / "roc.png")
        _summary(doc, ("accuracy", "auc", "eer"))
        _finish(doc, out, verification_markdown(doc))

    _guard(go)


@eval_app.command("search")
def eval_search(
    model: List[str] = ModelOpt,
    dataset: str = DatasetOpt,
    out: Path = OutOpt,
    gallery: int = typer.Option(5, "--gallery", help="Photos enrolled per person; the rest are probes."),
    unknown: float = typer.Option(0.1, "--unknown", help="Share of people left out of the gallery (open-set probes)."),
    min_images: int = MinImagesOpt,
    max_identities: Optional[int] = MaxIdOpt,
    max_per_identity: Optional[int] = MaxPerOpt,
    seed: int = SeedOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    cache_dir: Optional[Path] = CacheOpt,
    no_cache: bool = NoCacheOpt,
    device: str = DeviceOpt,
    weights: Optional[List[str]] = WeightsOpt,
    align: Optional[str] = AlignOpt,
    on_no_face: str = NoFaceOpt,
    face_select: str = SelectOpt,
    flip: bool = FlipOpt,
    backend: str = BackendOpt,
    precision: str = PrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Gallery identification, the search-engine setting: rank-1/5, mAP and open-set DIR@FAR."""
    from .evaluate import run_models, search
    from .report import search_markdown

    def go() -> None:
        opts = _options(model, cache_dir, no_cache, batch_size, workers, device, weights, align, on_no_face, quiet, backend, precision, face_select, flip)
        ds = _dataset(dataset, min_images, max_identities, max_per_identity, seed)
        fn = lambda e, d, o: search(e, d, o, n_gallery=gallery, unknown=unknown, seed=seed)  # noqa: E731
        doc = run_models("search", model, ds, opts, fn, on_error=_error_line)
        _summary(doc, ("rank1", "rank5", "map"))
        _finish(doc, out, search_markdown(doc))

    _guard(go)


def _summary(doc: dict[str, Any], keys: tuple[str, ...]) -> None:
    for r in doc["results"]:
        vals = ", ".join(f"{k} {r[k]:.3f}" for k in keys if isinstance(r.get(k), (int, float)))
        emb = r["embeddings"]
        typer.echo(f"{r['model']}: {vals} ({emb['computed']} embeddings computed, {emb['cached']} cached)", err=True)


@app.command("run")
def run_cmd(
    dataset: str = DatasetOpt,
    out: Path = typer.Option(Path("runs/main"), "--out", "-o", help="Output folder of the report."),
    include_test_models: bool = typer.Option(False, "--include-test-models", help="Also run test-tiny-random."),
    cache_dir: Optional[Path] = CacheOpt,
    quiet: bool = QuietOpt,
) -> None:
    """The main job: every available real model (CLIP and face recognisers) on a dataset, one report."""
    from .main_job import run_main_job

    def go() -> None:
        path = run_main_job(dataset, out, include_test_models=include_test_models, cache_dir=cache_dir, progress=not quiet, echo=lambda m: typer.echo(m, err=True))
        typer.echo(f"report: {path}", err=True)

    _guard(go)


from .cli_search import register as _register_search  # noqa: E402
_register_search(app)

from .cli_cloak import register as _register_cloak  # noqa: E402
_register_cloak(app, eval_app)


def main() -> None:
    """Entry point of the ``clipface`` script."""
    from .threads import prefer_passive_waits

    prefer_passive_waits()  # before torch is imported: idle inference threads sleep instead of spinning
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":  # pragma: no cover
    main()
