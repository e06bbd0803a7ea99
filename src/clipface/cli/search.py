"""``clipface index build|add|query`` and ``clipface serve``: the face search engine's commands (options in, API
calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .. import jobs
from ..errors import check_float, check_int
from ..files import jsonable
from ..textsafe import readable
from .app import app, echo, guard
from .engine_options import (
    AuditOptions,
    BuildOptions,
    IndexOption,
    IngestOptions,
    QueryOptions,
    RayOptions,
    ServeOptions,
    ShardOptions,
)
from .expand import api_args, command
from .options import TUNING, DeviceOptions, EmbedOptions, ModelOption, OutOption, check, prepare

index_app = typer.Typer(no_args_is_help=True, help="Build, extend and query a face search index.")
app.add_typer(index_app, name="index")


def _report(update: Any, index: Any) -> None:
    echo(
        f"added {update.added} images ({update.computed} embeddings computed, {update.cached} cached), "
        f"{update.duplicates} already indexed, {len(update.skipped)} skipped -> {index.dir} "
        f"({index.count} images, {index.kind} index)"
    )
    if update.ray:
        r = update.ray
        echo(
            f"embedded on Ray: {r['shards']} shards in {r['shard_dir']} ({r['written']} written by this run on "
            f"{r['nodes']} node(s), {r['reused']} reused)"
        )
    parts = (update.ray or {}).get("parts")
    if parts:
        echo(
            f"codes added on Ray in {parts['count']} parts ({parts['written']} written by this run on "
            f"{parts['nodes']} node(s), {parts['reused']} reused), merged {parts['merged']}"
        )
    for s in update.skipped[:20]:
        echo(f"  skipped {s.path}: {s.reason}")


@command(index_app, "build", drop=(*TUNING, "threads"))
def build_cmd(m: ModelOption, src: IngestOptions, build: BuildOptions, ray: RayOptions, emb: EmbedOptions) -> None:
    """Embed a folder of images and write a new search index (on this machine, or on a Ray cluster)."""

    def go() -> None:
        opts = prepare([m.model], emb)
        idx, update = jobs.build_index(m.model, src.images, src.index, opts, **api_args(jobs.build_index, build, ray))
        _report(update, idx)

    guard(go)


@command(index_app, "add", drop=(*TUNING, "threads", "align", "on_no_face"))
def add_cmd(src: IngestOptions, emb: EmbedOptions) -> None:
    """Append new images to an index (files already indexed are skipped)."""

    def go() -> None:
        opts = prepare([], emb)
        idx, update = jobs.add_images(src.index, src.images, opts)
        _report(update, idx)

    guard(go)


@command(index_app, "query")
def query_cmd(ix: IndexOption, q: QueryOptions, dev: DeviceOptions) -> None:
    """Search an index with a text or a photo."""

    def go() -> None:
        hits = jobs.query_index(
            ix.index, text=q.text, image=q.image, k=q.k, weights=dev.one_weights(), device=dev.device
        )
        if q.as_json:
            typer.echo(json.dumps(jsonable([h.to_dict() for h in hits]), indent=2, ensure_ascii=False))
            return
        typer.echo(f"{'rank':>4}  {'cosine':>6}  {'person':<28}  path (relative to the indexed folder)")
        for h in hits:
            typer.echo(readable(f"{h.rank:>4}  {h.score:.4f}  {h.name or '(unknown)':<28}  {h.relpath}"))

    guard(go)


@command(app, "serve")
def serve_cmd(ix: IndexOption, srv: ServeOptions, sh: ShardOptions, dev: DeviceOptions) -> None:
    """Serve the search engine: JSON API and web page. The token comes from $CLIPFACE_API_TOKEN."""

    def go() -> None:
        import uvicorn

        from ..server.app import create_app
        from ..server.slow_headers import HeaderDeadlineProtocol

        check_int("max_connections", srv.max_connections, 1, allow_none=False)
        check_float("header_timeout", srv.header_timeout, 0.1, 3600.0)

        given = api_args(
            create_app,
            srv,
            sh,
            skip=(
                "host",
                "port",
                "no_auth",
                "max_upload_mb",
                "forwarded_allow_ips",
                "max_connections",
                "header_timeout",
            ),
            require_token=not srv.no_auth,
            max_upload_bytes=int(srv.max_upload_mb * 2**20),
            cors_origins=srv.cors_origins or (),
        )
        app_ = create_app(ix.index, token=None, weights=dev.one_weights(), device=dev.device, **given)
        where = f"{srv.host}:{srv.port}"
        if srv.clip_retrieval:
            echo(f"clip-retrieval API at http://{where}/knn-service (index {ix.index.resolve().name!r})")
        if srv.no_auth:
            echo(f"warning: no API token: anyone who can reach {where} can search this index")
        if sh.shards:
            echo(
                f"the image vectors are served as {sh.shards} shards on Ray Serve ({sh.shard_replicas} replica(s) each)"
            )
        echo(f"serving {ix.index} on http://{where}/ (API schema at /openapi.json)")
        try:
            uvicorn.run(
                app_,
                host=srv.host,
                port=srv.port,
                log_level="warning",
                proxy_headers=srv.forwarded_allow_ips is not None,
                limit_concurrency=srv.max_connections,
                timeout_keep_alive=5,
                http=type("Protocol", (HeaderDeadlineProtocol,), {"header_timeout": srv.header_timeout}),
                forwarded_allow_ips=srv.forwarded_allow_ips or "",
            )
        finally:  # the shards' deployments are not left on the cluster
            if app_.state.sharded is not None:
                app_.state.sharded.close()

    guard(go)


@command(app, "audit", defaults={"model": "dlib", "out": Path("runs/audit")})
def audit_cmd(au: AuditOptions, m: ModelOption, o: OutOption) -> None:
    """Audit a clip-retrieval-compatible engine: which of its results for a person's name or photos show them."""

    def go() -> None:
        check([m.model], out=o.out)
        given = api_args(jobs.audit, au, m, o, skip=("no_fetch",), fetch_urls=not au.no_fetch, echo=echo)
        doc = jobs.audit(**given)
        for kind, q in doc["queries"].items():
            echo(
                f"{kind} queries: precision {q['precision_at_k'] or 0:.3f} among the results read (top {au.k} asked), "
                f"{q['images_found']} images of "
                f"{doc['person']} found ({q['found_with_name_in_caption']} with the name in the caption), "
                f"{q['n_errors']} errors"
            )
        echo(f"{doc['summary']}; wrote {o.out / 'results.json'}")
        if doc["verdict"] == "cannot tell":
            raise typer.Exit(1)

    guard(go)
