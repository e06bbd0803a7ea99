"""The search engine over HTTP: a FastAPI app serving the JSON API and the web page.

Private by default: every ``/api/`` route except ``/api/health`` needs ``Authorization: Bearer
TOKEN`` (the token from ``token=`` or ``$CLIPFACE_API_TOKEN``) unless the operator passes
``require_token=False`` (``clipface serve --no-auth``). An opt-out list (identities or image
SHA-256s, one per line, re-read when the file changes) is applied to every answer, including
thumbnails. Each client IP gets a token bucket of ``rate_limit`` API requests per minute
(thumbnails have their own, ``THUMBNAIL_FACTOR`` times larger, since a result grid fetches
one per card). Request bodies over ``max_upload_bytes`` are refused with 413 from the
``Content-Length`` header before any byte is read, or as soon as the bytes read exceed it;
images over ``max_pixels`` are refused with 413 from their header, before decoding, and the
others are decoded within a memory bound (:mod:`clipface.server.uploads`). Every error is
JSON ``{"error": reason}``, never a stack trace, and every status the server can answer is in
the OpenAPI schema. Files are served only by numeric image id from the index metadata: no
path from a request reaches the file system.
"""

# No ``from __future__ import annotations`` here: the routes' annotations name models made per app (``k <= max_k``).
import io
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from ..audit.person import THRESHOLD, audit_person
from ..data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..data.textnorm import is_blank
from ..errors import ClipfaceError, ImageError, UsageError, check_choice, check_float, check_int
from ..index.fusion import OPT_OUT_RULES
from ..index.records import IndexedImage, QueryError
from ..index.sharded import ShardedSearch, ShardReport, ShardsDownError, begin_report, deploy_shards
from ..index.store import FaceIndex
from ..models.base import Encoder
from .clip_retrieval import CLIP_RETRIEVAL_PATHS, add_clip_retrieval_routes
from .face_optout import FaceOptOut, person_folders
from .gate import Gate, TooLarge, json_error
from .policies import OptOutList, RateLimiter
from .schemas import AuditResponse, ErrorResponse, SearchResponse, result_of, text_query_model
from .uploads import DECODE_BUDGET, PixelBudget, decode_bounded, decode_upload, is_too_large, limit_heap

__all__ = ["create_app"]

log = logging.getLogger("clipface.server")

TOKEN_ENV = "CLIPFACE_API_TOKEN"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_K = 100
#: Pixels of uploads being decoded at once, for every app in this process together.
_DECODING = PixelBudget(DECODE_BUDGET)
RATE_LIMIT = 60
#: Image types the decoder reads, declared as the ``file`` part's content type in the schema.
PHOTO_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"
PHOTO_PART = {"requestBody": {"content": {"multipart/form-data": {"encoding": {"file": {"contentType": PHOTO_TYPES}}}}}}
THUMBNAIL_FACTOR = 20
THUMBNAIL_SIZE = 256


@dataclass
class _Limits:
    max_upload_bytes: int
    max_pixels: int
    max_k: int


def _web_asset(name: str) -> bytes:
    return resources.files("clipface.server").joinpath("web", name).read_bytes()


def create_app(
    index_dir: str | Path,
    model: Encoder | None = None,
    token: str | None = None,
    require_token: bool = True,
    opt_out: str | Path | OptOutList | None = None,
    rate_limit: float | None = RATE_LIMIT,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_k: int = MAX_K,
    weights: str | Path | None = None,
    device: str = "cpu",
    clip_retrieval: bool = False,
    cors_origins: Sequence[str] = (),
    indice_name: str | None = None,
    opt_out_faces: str | Path | None = None,
    opt_out_faces_threshold: float | None = None,
    opt_out_faces_rule: str | None = None,
    ray: str | None = None,
    shards: int | None = None,
    shard_replicas: int = 1,
    shard_timeout: float = 10.0,
) -> FastAPI:
    """The search engine over the index in ``index_dir``.

    ``clip_retrieval``: also serve clip-retrieval's back-end API (:mod:`clipface.server.clip_retrieval`),
    the index listed as ``indice_name`` (default: the index folder's name), behind the same gate.
    ``cors_origins``: web origins allowed to call the API from a browser (e.g. clip-retrieval's
    front end served elsewhere); none by default.
    ``opt_out_faces``: a folder with one sub-folder of photos per person removed from every answer
    by face (:mod:`clipface.server.face_optout`; the index needs face vectors or a face-recogniser model),
    a face scored against each person by ``opt_out_faces_rule`` at ``opt_out_faces_threshold``.
    ``shards``: the image vectors searched by this many Ray Serve deployments on the cluster ``ray``
    (:mod:`clipface.index.sharded`; ``shard_replicas`` each, waited for ``shard_timeout`` s); answers
    then say how many shards answered.

    ``model``: the encoder (default: the one the index was built with, from ``weights`` if
    given). ``token``: the API token (default ``$CLIPFACE_API_TOKEN``); with
    ``require_token=True`` and no token this raises. ``rate_limit``: API requests per minute
    per client IP (``None`` or 0: no limit). The client IP is the connection's: run uvicorn with
    ``proxy_headers=False`` unless a reverse proxy is named in ``forwarded_allow_ips`` (as
    ``clipface serve --forwarded-allow-ips`` does), since uvicorn otherwise believes
    ``X-Forwarded-For`` from 127.0.0.1 and any local client could choose its own bucket.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if opt_out_faces is not None:
        person_folders(Path(opt_out_faces))  # a wrong folder is refused before any model loads
    if opt_out_faces_threshold is not None and not -1.0 <= opt_out_faces_threshold <= 1.0:
        raise UsageError("opt_out_faces_threshold", opt_out_faces_threshold, "a cosine: between -1 and 1")
    if opt_out_faces_rule is not None:
        check_choice("opt_out_faces_rule", opt_out_faces_rule, OPT_OUT_RULES)
    if require_token and not token:
        raise ClipfaceError(f"an API token is required: set ${TOKEN_ENV} (or pass --no-auth to serve without one)")
    _check_shards(ray, shards, shard_replicas, shard_timeout)
    index = FaceIndex.load(index_dir, mmap=True)
    encoder = model if model is not None else index.load_encoder(weights=weights, device=device)
    index.check_encoder(encoder)
    optout = opt_out if isinstance(opt_out, OptOutList) else OptOutList(opt_out)
    limits = _Limits(max_upload_bytes, max_pixels, max_k)
    limit_heap()
    removed = _OptOutReport(index, optout)
    removed.items()  # counted now, so that entries that match nothing are told at start
    if shards is not None and ray is not None:
        index.sharded = _deploy(index, ray, shards, shard_replicas, shard_timeout)
    by_face = (
        FaceOptOut(index, opt_out_faces, encoder, opt_out_faces_threshold, device, rule=opt_out_faces_rule)
        if opt_out_faces is not None
        else None
    )

    def exclude(image: IndexedImage) -> bool:
        return optout.blocks(image) or (by_face is not None and by_face.blocks(image))

    def refresh() -> None:
        """Take changed opt-outs into account: the name file and the face folder, each re-read when it changes."""
        optout.refresh()
        if by_face is not None:
            by_face.refresh()

    app = FastAPI(
        title="clipface search",
        description="Face search over an image index (CLIP or face recogniser). Send `Authorization: Bearer TOKEN`.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
        responses={
            400: {"model": ErrorResponse, "description": "The body cannot be parsed (broken JSON or multipart)."},
            401: {"model": ErrorResponse, "description": "Missing or wrong API token."},
            404: {"model": ErrorResponse, "description": "No such image, or one removed by the opt-out list."},
            413: {"model": ErrorResponse, "description": "Body or image too large."},
            422: {"model": ErrorResponse, "description": "Invalid request: a value out of range, not an image..."},
            429: {"model": ErrorResponse, "description": "Rate limit exceeded (see Retry-After)."},
            500: {"model": ErrorResponse, "description": "Internal error (no details are given)."},
        },
    )
    app.state.max_k = max_k
    app.state.sharded = index.sharded
    per_minute = rate_limit or 0
    limiters = {
        "api": RateLimiter(per_minute) if per_minute > 0 else None,
        "image": RateLimiter(per_minute * THUMBNAIL_FACTOR) if per_minute > 0 else None,
    }
    protected = CLIP_RETRIEVAL_PATHS if clip_retrieval else ()
    app.add_middleware(
        Gate, token=token if require_token else None, limiters=limiters, max_body=max_upload_bytes, protected=protected
    )
    if cors_origins:  # added last, so outermost: preflight requests are answered before the gate
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Clipface-Ignored", "X-Clipface-Clamped", "X-Clipface-Shards"],
        )
    _install_error_handlers(app)

    def checked_k(k: int) -> int:
        if not 1 <= k <= limits.max_k:
            raise HTTPException(422, k_error(limits.max_k))
        return k

    text_query = text_query_model(max_k)
    k_form = Form(10, ge=1, le=max_k, description="Number of results.")

    @app.get("/api/health")
    def health() -> dict[str, str]:
        """Liveness (no token needed)."""
        return {"status": "ok"}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        """The index: model, kind, number of images and people; the server's limits; what the opt-out list removes.

        ``opt_out``: one item per entry of the list, by line number (names are not repeated
        here), with the number of indexed images it removes: an entry that removes none is a
        typo or a person not in the index. ``opt_out_faces``: per person enrolled by face
        (numbered in folder order), the photos enrolled and the indexed images removed.
        """
        refresh()
        return {
            **{k: v for k, v in index.stats().items() if k != "fingerprint"},
            "fingerprint": index.manifest.fingerprint[:12],
            "has_text": encoder.has_text,
            "opt_out_entries": len(optout),
            "opt_out": removed.items(),
            "opt_out_unmatched": [item["line"] for item in removed.items() if item["removes"] == 0],
            "opt_out_error": optout.error,
            "opt_out_faces": by_face.stats() if by_face is not None else None,
            "max_k": limits.max_k,
            "max_upload_bytes": limits.max_upload_bytes,
            "max_pixels": limits.max_pixels,
            "audit_threshold": THRESHOLD,
            "shards": index.sharded.total if index.sharded is not None else None,
        }

    @app.post("/api/search/text", response_model=SearchResponse)
    def search_text(body: text_query) -> SearchResponse:  # type: ignore[valid-type]
        """Images best matching a text (CLIP models only)."""
        k = checked_k(body.k)
        refresh()
        report = begin_report()
        hits = index.query_text(encoder, body.query, k, exclude)
        return SearchResponse(
            query=body.query, k=k, model=index.manifest.model, results=[result_of(h) for h in hits], shards=told(report)
        )

    @app.post("/api/search/image", response_model=SearchResponse, openapi_extra=PHOTO_PART)
    def search_image(
        file: UploadFile = File(..., description="A photo with a face."), k: int = k_form
    ) -> SearchResponse:
        """Images of the face most similar to the uploaded photo's."""
        k = checked_k(k)
        image = _read_image(file, limits)
        refresh()
        report = begin_report()
        hits = index.query_image(encoder, image, k, exclude)
        return SearchResponse(
            query="photo", k=k, model=index.manifest.model, results=[result_of(h) for h in hits], shards=told(report)
        )

    @app.post("/api/audit", response_model=AuditResponse, openapi_extra=PHOTO_PART)
    def audit(
        # No `pattern` here: schemathesis 4 generates multipart "violations" of it that are none (a non-blank
        # name it calls blank); blank names (data.textnorm) are refused below, with the same 422 as the schema's.
        name: str = Form(..., min_length=1, max_length=200, description="The person's name (not blank)."),
        k: int = k_form,
        file: UploadFile = File(None, description="Optional photo of the person (else the name is the query)."),
    ) -> AuditResponse:
        """How many of the top-k results for a name (or a photo) are that person, and the verdict."""
        if is_blank(name):
            raise HTTPException(422, "name: blank (white space or invisible characters only)")
        k = checked_k(k)
        image = _read_image(file, limits) if file is not None and file.filename else None
        refresh()
        report = begin_report()
        r = audit_person(index, encoder, name, image=image, k=k, exclude=exclude)
        return AuditResponse(
            name=r.name,
            query=r.query,
            k=r.k,
            matches=r.matches,
            precision_at_k=r.precision,
            in_index=r.in_index,
            chance=r.chance,
            identifies=r.identifies,
            verdict=r.verdict,
            threshold=r.threshold,
            results=[result_of(h) for h in r.results],
            shards=told(report),
        )

    @app.get("/api/image/{image_id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def image(image_id: int) -> Response:
        """A JPEG thumbnail of an indexed image, by id."""
        refresh()
        found = index.meta.image(image_id)
        if found is None or exclude(found):
            raise HTTPException(404, f"no image {image_id}")
        return Response(_thumbnail(found), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    page = {name: _web_asset(name) for name in ("index.html", "app.js", "style.css")}

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return Response(page["index.html"], media_type="text/html; charset=utf-8")

    @app.get("/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(page["app.js"], media_type="text/javascript; charset=utf-8")

    @app.get("/style.css", include_in_schema=False)
    def style() -> Response:
        return Response(page["style.css"], media_type="text/css; charset=utf-8")

    if clip_retrieval:

        def decode(raw: bytes) -> Image.Image:
            try:
                return decode_upload(raw, limits.max_pixels, limits.max_upload_bytes, _DECODING)
            except ImageError as exc:
                raise HTTPException(413 if is_too_large(exc) else 422, exc.reason) from None

        name = indice_name or Path(index_dir).resolve().name
        add_clip_retrieval_routes(app, index, encoder, name, exclude, refresh, decode)

    app.state.index = index
    app.state.encoder = encoder
    app.state.opt_out = optout
    return app


def k_error(max_k: int) -> str:
    return f"k must be between 1 and {max_k}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return json_error(422, "invalid JSON body")
        loc = list(first.get("loc", ()))
        if loc and loc[-1] == "k" and first.get("type") in ("less_than_equal", "greater_than_equal"):
            return json_error(422, k_error(request.app.state.max_k))
        where = ".".join(str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path") else loc))
        return json_error(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return json_error(422, str(exc))

    @app.exception_handler(ShardsDownError)
    async def shards_down(request: Request, exc: ShardsDownError) -> JSONResponse:
        return json_error(503, str(exc), {"Retry-After": "5"})


def told(report: ShardReport | None) -> dict[str, int] | None:
    """What an answer says of the shards that answered (``None`` when not sharded)."""
    return report.to_dict() if report is not None else None


def _check_shards(ray: str | None, shards: int | None, replicas: int, timeout: float) -> None:
    if (ray is None) != (shards is None):
        raise UsageError("shards" if ray is not None else "ray", shards, "--ray and --shards go together")
    if shards is not None:
        check_int("shards", shards, 1, 1024, allow_none=False)
        check_int("shard_replicas", replicas, 1, 64, allow_none=False)
        check_float("shard_timeout", timeout, 0.1, 600.0)


def _deploy(index: FaceIndex, ray: str, shards: int, replicas: int, timeout: float) -> ShardedSearch:
    """Connect to the cluster and run the shards (:func:`clipface.index.sharded.deploy_shards`)."""
    from ..index.ray import connect_ray

    if shards > max(1, index.count):
        raise UsageError("shards", shards, f"more shards than the index has images ({index.count})")
    connect_ray(ray)
    return deploy_shards(index.dir, index.count, index.manifest.dim, shards, replicas, timeout, index.kind)


def _read_image(file: UploadFile, limits: _Limits) -> Image.Image:
    """Decode an upload within the server's memory bound (:func:`clipface.server.uploads.decode_upload`)."""
    data = file.file.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise TooLarge(limits.max_upload_bytes)
    if not data:
        raise HTTPException(422, "empty upload: send an image file")
    try:
        return decode_upload(data, limits.max_pixels, limits.max_upload_bytes, _DECODING)
    except ImageError as exc:
        raise HTTPException(413 if is_too_large(exc) else 422, exc.reason) from None
    finally:
        del data


class _OptOutReport:
    """How many indexed images each opt-out entry removes (recounted when the list changes)."""

    def __init__(self, index: FaceIndex, optout: OptOutList) -> None:
        self.index, self.optout = index, optout
        self._version = -1
        self._items: list[dict[str, Any]] = []

    def items(self) -> list[dict[str, Any]]:
        """One item per entry; recounted (and entries that match nothing told to the log) when the list changes."""
        if self._version != self.optout.version:
            version, entries = self.optout.version, list(self.optout.entries)
            self._items = [
                {"line": line, "kind": kind, "removes": self._count(kind, key)} for line, kind, key in entries
            ]
            self._version = version
            self._warn_unmatched(entries)
        return self._items

    def _count(self, kind: str, key: str) -> int:
        return len(self.index.meta.known([key])) if kind == "image" else self.index.meta.n_images_of(key)

    def _warn_unmatched(self, entries: list[tuple[int, str, str]]) -> None:
        """Tell the operator (the log, not the API) which entries remove nothing: a typo, another spelling of the
        name, or a person who is not in the index (``/api/stats`` lists their line numbers as ``opt_out_unmatched``).
        """
        unmatched = [(item["line"], key) for item, (_, _, key) in zip(self._items, entries) if not item["removes"]]
        for line, key in unmatched:
            log.warning("opt-out list line %d (%r) matches no indexed image: check its spelling", line, key)
        if unmatched:
            log.warning("opt-out list: %d of %d entries match no indexed image", len(unmatched), len(entries))


def _thumbnail(image: IndexedImage) -> bytes:
    try:
        img = decode_bounded(Path(image.path), _DECODING, 2 * THUMBNAIL_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MAX_BYTES)
    except ImageError:
        raise HTTPException(404, f"image {image.id} is no longer readable") from None
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()
