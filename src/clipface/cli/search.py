"""``clipface index build|add|query`` and ``clipface serve``: the face search engine's commands (options in, API
calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .. import jobs
from ..files import jsonable
from ..textsafe import readable
from .app import app, echo, guard
from .flags import (
    Align,
    AsJson,
    BatchSize,
    CacheDir,
    ClipRetrieval,
    CorsOrigin,
    Device,
    Engine,
    FaceModel,
    Faces,
    ForwardedAllowIps,
    Host,
    Images,
    IndexDir,
    IndexKind,
    Indice,
    MaxUploadMb,
    Model,
    NoAuth,
    NoCache,
    NoFetch,
    OnNoFace,
    OptOut,
    OptOutFaces,
    OptOutFacesThreshold,
    Out,
    Overwrite,
    Person,
    PersonName,
    Port,
    QueryImage,
    QueryText,
    Quiet,
    RateLimit,
    Token,
    TopK,
    Weights,
    Workers,
)
from .options import CliOptions

index_app = typer.Typer(no_args_is_help=True, help="Build, extend and query a face search index.")
app.add_typer(index_app, name="index")


def _report(update: Any, index: Any) -> None:
    echo(
        f"added {update.added} images ({update.computed} embeddings computed, {update.cached} cached), "
        f"{update.duplicates} already indexed, {len(update.skipped)} skipped -> {index.dir} "
        f"({index.count} images, {index.kind} index)"
    )
    for s in update.skipped[:20]:
        echo(f"  skipped {s.path}: {s.reason}")


@index_app.command("build")
def build_cmd(
    model: Model,
    images: Images,
    index: IndexDir,
    index_kind: IndexKind = "auto",
    align: Align = None,
    on_no_face: OnNoFace = "skip",
    face_model: FaceModel = None,
    faces: Faces = None,
    overwrite: Overwrite = False,
    weights: Weights = None,
    device: Device = "cpu",
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Embed a folder of images and write a new search index."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        assert o.index is not None
        idx, update = jobs.build_index(
            o.model[0],
            o.images,
            o.index,
            opts,
            kind=o.index_kind,
            overwrite=o.overwrite,
            face_model=o.face_model,
            faces=o.faces,
        )
        _report(update, idx)

    guard(go)


@index_app.command("add")
def add_cmd(
    index: IndexDir,
    images: Images,
    weights: Weights = None,
    device: Device = "cpu",
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Append new images to an index (files already indexed are skipped)."""
    o = CliOptions.of(locals())

    def go() -> None:
        opts = o.check().run_options()
        assert o.index is not None
        idx, update = jobs.add_images(o.index, o.images, opts)
        _report(update, idx)

    guard(go)


@index_app.command("query")
def query_cmd(
    index: IndexDir,
    text: QueryText = None,
    image: QueryImage = None,
    k: TopK = 10,
    as_json: AsJson = False,
    weights: Weights = None,
    device: Device = "cpu",
) -> None:
    """Search an index with a text or a photo."""
    o = CliOptions.of(locals())

    def go() -> None:
        assert o.index is not None
        weights = o.weights[0] if o.weights else None
        hits = jobs.query_index(o.index, text=o.text, image=o.image, k=o.k, weights=weights, device=o.device)
        if o.as_json:
            typer.echo(json.dumps(jsonable([h.to_dict() for h in hits]), indent=2, ensure_ascii=False))
            return
        typer.echo(f"{'rank':>4}  {'cosine':>6}  {'person':<28}  path (relative to the indexed folder)")
        for h in hits:
            typer.echo(readable(f"{h.rank:>4}  {h.score:.4f}  {h.name or '(unknown)':<28}  {h.relpath}"))

    guard(go)


@app.command("serve")
def serve_cmd(
    index: IndexDir,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    no_auth: NoAuth = False,
    opt_out: OptOut = None,
    opt_out_faces: OptOutFaces = None,
    opt_out_faces_threshold: OptOutFacesThreshold = None,
    rate_limit: RateLimit = 60.0,
    max_upload_mb: MaxUploadMb = 10.0,
    forwarded_allow_ips: ForwardedAllowIps = None,
    clip_retrieval: ClipRetrieval = False,
    cors_origin: CorsOrigin = None,
    weights: Weights = None,
    device: Device = "cpu",
) -> None:
    """Serve the search engine: JSON API and web page. The token comes from $CLIPFACE_API_TOKEN."""
    o = CliOptions.of(locals())

    def go() -> None:
        import uvicorn

        from ..server.app import create_app

        assert o.index is not None
        app_ = create_app(
            o.index,
            token=None,
            require_token=not o.no_auth,
            opt_out=o.opt_out,
            opt_out_faces=o.opt_out_faces,
            opt_out_faces_threshold=o.opt_out_faces_threshold,
            rate_limit=o.rate_limit,
            max_upload_bytes=int(o.max_upload_mb * 2**20),
            weights=o.weights[0] if o.weights else None,
            device=o.device,
            clip_retrieval=o.clip_retrieval,
            cors_origins=o.cors_origin or (),
        )
        if o.clip_retrieval:
            echo(f"clip-retrieval API at http://{o.host}:{o.port}/knn-service (index {o.index.resolve().name!r})")
        if o.no_auth:
            echo(f"warning: no API token: anyone who can reach {o.host}:{o.port} can search this index")
        echo(f"serving {o.index} on http://{o.host}:{o.port}/ (API schema at /openapi.json)")
        uvicorn.run(
            app_,
            host=o.host,
            port=o.port,
            log_level="warning",
            proxy_headers=o.forwarded_allow_ips is not None,
            forwarded_allow_ips=o.forwarded_allow_ips or "",
        )

    guard(go)


@app.command("audit")
def audit_cmd(
    engine: Engine,
    indice: Indice,
    person: Person,
    name: PersonName = None,
    model: Model = "dlib",
    k: TopK = 10,
    out: Out = Path("runs/audit"),
    no_fetch: NoFetch = False,
    token: Token = None,
) -> None:
    """Audit a clip-retrieval-compatible engine: which of its results for a person's name or photos show them."""
    o = CliOptions.of(locals())

    def go() -> None:
        assert o.engine is not None and o.indice is not None and o.person is not None
        o.check()
        doc = jobs.audit(
            o.engine,
            o.indice,
            o.person,
            name=o.name,
            model=o.model[0],
            k=o.k,
            out=o.out,
            fetch_urls=not o.no_fetch,
            token=o.token,
            echo=echo,
        )
        for kind, q in doc["queries"].items():
            echo(
                f"{kind} queries: precision at {o.k} {q['precision_at_k'] or 0:.3f}, {q['images_found']} images of "
                f"{doc['person']} found ({q['found_with_name_in_caption']} with the name in the caption), "
                f"{q['n_errors']} errors"
            )
        echo(f"{doc['verdict']}; wrote {o.out / 'results.json'}")

    guard(go)
