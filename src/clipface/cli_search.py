"""``clipface index build|add|query`` and ``clipface serve``: the face search engine's commands (no logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

index_app = typer.Typer(no_args_is_help=True, help="Build, extend and query a face search index.")

IndexDirOpt = typer.Option(..., "--index", "-i", help="Index folder.")
ImagesOpt = typer.Option(..., "--images", help="Folder of images (identity sub-folders, or a flat folder), or bundled:lfw-mini.")
WeightsOpt = typer.Option(None, "--weights", help="Local weights of the model (see `clipface models`).")
DeviceOpt = typer.Option("cpu", "--device", help="torch device (cpu, cuda).")
CacheOpt = typer.Option(None, "--cache-dir", help="Embedding cache folder (default $CLIPFACE_CACHE_DIR or ~/.cache/clipface).")
NoCacheOpt = typer.Option(False, "--no-cache", help="Compute every embedding, store none.")
BatchOpt = typer.Option(32, "--batch-size", help="Images per forward pass.")
WorkersOpt = typer.Option(None, "--workers", help="Threads decoding images (default: from the machine).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _guard(fn: Callable[[], Any]) -> Any:
    from .cli import _guard as guard

    return guard(fn)


def _cache(cache_dir: Optional[Path], no_cache: bool) -> Any:
    from .cache import EmbeddingCache, NullCache

    return NullCache() if no_cache else EmbeddingCache(cache_dir)


def _report(update: Any, index: Any) -> None:
    typer.echo(
        f"added {update.added} images ({update.computed} embeddings computed, {update.cached} cached), "
        f"{update.duplicates} already indexed, {len(update.skipped)} skipped -> {index.dir} "
        f"({index.count} images, {index.kind} index)",
        err=True,
    )
    for s in update.skipped[:20]:
        typer.echo(f"  skipped {s.path}: {s.reason}", err=True)


@index_app.command("build")
def build_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model name; see `clipface models`."),
    images: str = ImagesOpt,
    index: Path = IndexDirOpt,
    kind: str = typer.Option("auto", "--kind", help="auto (exact up to 50k images, IVF-PQ above), flat, ivfpq or hnsw."),
    align: Optional[str] = typer.Option(None, "--align", help="Face front end: none, dlib or mtcnn (default: the model's own)."),
    on_no_face: str = typer.Option("skip", "--on-no-face", help="Images with no face: skip (listed) or center (centre crop)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index in the folder."),
    weights: Optional[str] = WeightsOpt,
    device: str = DeviceOpt,
    cache_dir: Optional[Path] = CacheOpt,
    no_cache: bool = NoCacheOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Embed a folder of images and write a new search index."""
    from .evaluate import RunOptions, load_encoder
    from .index import FaceIndex

    def go() -> None:
        opts = RunOptions(device=device, weights={model: weights} if weights else {}, aligner=align, on_no_face=on_no_face)
        encoder = load_encoder(model, opts)
        idx, update = FaceIndex.build(
            encoder, images, index, kind=kind, cache=_cache(cache_dir, no_cache), align=align, on_no_face=on_no_face,
            overwrite=overwrite, batch_size=batch_size, workers=workers, progress=not quiet,  # type: ignore[arg-type]
        )
        _report(update, idx)

    _guard(go)


@index_app.command("add")
def add_cmd(
    index: Path = IndexDirOpt,
    images: str = ImagesOpt,
    weights: Optional[str] = WeightsOpt,
    device: str = DeviceOpt,
    cache_dir: Optional[Path] = CacheOpt,
    no_cache: bool = NoCacheOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Append new images to an index (files already indexed are skipped)."""
    from .index import FaceIndex

    def go() -> None:
        idx = FaceIndex.load(index, mmap=False)
        update = idx.add(
            idx.load_encoder(weights=weights, device=device), images, _cache(cache_dir, no_cache),
            batch_size=batch_size, workers=workers, progress=not quiet,
        )
        _report(update, idx)

    _guard(go)


@index_app.command("query")
def query_cmd(
    index: Path = IndexDirOpt,
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Text query (CLIP models)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Photo query (any model)."),
    k: int = typer.Option(10, "-k", help="Number of results."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    weights: Optional[str] = WeightsOpt,
    device: str = DeviceOpt,
) -> None:
    """Search an index with a text or a photo."""
    from .cli import _fail
    from .images import load_image
    from .index import FaceIndex

    if (text is None) == (image is None):
        _fail("give exactly one of --text and --image")

    def go() -> None:
        idx = FaceIndex.load(index)
        encoder = idx.load_encoder(weights=weights, device=device)
        hits = idx.query_text(encoder, text, k) if text is not None else idx.query_image(encoder, load_image(image), k)  # type: ignore[arg-type]
        if as_json:
            typer.echo(json.dumps([h.to_dict() for h in hits], indent=2))
            return
        for h in hits:
            typer.echo(f"{h.rank:>3}  {h.score:.4f}  {h.name or '(unknown)':<28}  {h.path}")

    _guard(go)


def serve_cmd(
    index: Path = IndexDirOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without an API token (anyone who can connect can search)."),
    opt_out: Optional[Path] = typer.Option(None, "--opt-out", help="File of identities or image SHA-256s (one a line) never shown."),
    rate_limit: float = typer.Option(60, "--rate-limit", help="API requests per minute per client IP (0: unlimited)."),
    max_upload_mb: float = typer.Option(10, "--max-upload-mb", help="Largest request body, in MB."),
    weights: Optional[str] = WeightsOpt,
    device: str = DeviceOpt,
) -> None:
    """Serve the search engine: JSON API and web page. The token comes from $CLIPFACE_API_TOKEN."""
    import uvicorn

    from .server import create_app

    def go() -> None:
        app = create_app(
            index, token=None, require_token=not no_auth, opt_out=opt_out, rate_limit=rate_limit,
            max_upload_bytes=int(max_upload_mb * 2**20), weights=weights, device=device,
        )
        if no_auth:
            typer.echo(f"warning: no API token: anyone who can reach {host}:{port} can search this index", err=True)
        typer.echo(f"serving {index} on http://{host}:{port}/ (API schema at /openapi.json)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")

    _guard(go)


def register(app: typer.Typer) -> None:
    """Add ``index build|add|query`` and ``serve`` to the ``clipface`` command."""
    app.add_typer(index_app, name="index")
    app.command("serve")(serve_cmd)
