"""The search engine over HTTP: a FastAPI app serving the JSON API and the web page.

Private by default: every ``/api/`` route except ``/api/health`` needs ``Authorization: Bearer
TOKEN`` (the token from ``token=`` or ``$CLIPFACE_API_TOKEN``) unless the operator passes
``require_token=False`` (``clipface serve --no-auth``). An opt-out list (identities or image
SHA-256s, one per line, re-read when the file changes) is applied to every answer, including
thumbnails. Each client IP gets a token bucket of ``rate_limit`` API requests per minute
(thumbnails have their own, ``THUMBNAIL_FACTOR`` times larger, since a result grid fetches
one per card). Request bodies over ``max_upload_bytes`` are refused with 413 from the
``Content-Length`` header before any byte is read, or as soon as the bytes read exceed it;
images over ``max_pixels`` are refused with 413 from their header, before decoding. Every
error is JSON ``{"error": reason}``, never a stack trace. Files are served only by numeric
image id from the index metadata: no path from a request reaches the file system.
"""

from __future__ import annotations

import hmac
import io
import os
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audit import THRESHOLD, audit_person
from .encoders.base import Encoder
from .errors import ClipfaceError, ImageError
from .images import load_image
from .index import FaceIndex, IndexedImage, QueryError, SearchHit, identity_key

TOKEN_ENV = "CLIPFACE_API_TOKEN"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_K = 100
RATE_LIMIT = 60
THUMBNAIL_FACTOR = 20
THUMBNAIL_SIZE = 256
_OPEN_API_PATHS = ("/api/health",)
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]


# -- policies --------------------------------------------------------------------------


class OptOutList:
    """People (identity names) and images (SHA-256) removed from every answer; the file is re-read when it changes."""

    def __init__(self, path: str | Path | None = None, entries: Iterable[str] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._fixed = list(entries)
        self._mtime: float | None = None
        self._lock = threading.Lock()
        self.identities: set[str] = set()
        self.hashes: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (a missing file is an error at start only)."""
        lines = list(self._fixed)
        if self.path is not None:
            try:
                mtime = self.path.stat().st_mtime
            except OSError as exc:
                if self._mtime is None:
                    raise ClipfaceError(f"opt-out list {self.path}: cannot read ({exc.strerror or exc})") from None
                return  # keep the last good list
            if mtime == self._mtime:
                return
            lines += self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            self._mtime = mtime
        entries = [ln.split("#", 1)[0].strip() for ln in lines]
        entries = [e for e in entries if e]
        with self._lock:
            self.hashes = {e.lower() for e in entries if _is_sha256(e)}
            self.identities = {identity_key(e) for e in entries if not _is_sha256(e)}

    def blocks(self, image: IndexedImage) -> bool:
        """Whether ``image`` must not appear in answers."""
        return image.sha256 in self.hashes or (image.identity is not None and identity_key(image.identity) in self.identities)

    def __len__(self) -> int:
        return len(self.identities) + len(self.hashes)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests per minute, bursts up to ``per_minute``."""

    def __init__(self, per_minute: float, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.refill = float(per_minute) / 60.0
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Take one token for ``client``: 0 when allowed, else the seconds until the next token."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_clients:
                    self._forget_idle(now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.refill

    def _forget_idle(self, now: float) -> None:
        full = self.capacity / self.refill
        self._buckets = {c: (t, last) for c, (t, last) in self._buckets.items() if now - last < full}


# -- the gate: rate limit, token, body size, headers -----------------------------------


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit // 2**20} MB)")


def _json(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class _Gate:
    """ASGI middleware checking each API request before the app reads anything of it."""

    def __init__(
        self, app: ASGIApp, token: str | None, limiters: dict[str, RateLimiter | None], max_body: int
    ) -> None:
        self.app, self.token, self.limiters, self.max_body = app, token, limiters, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _with_headers(refusal, scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _TooLarge(self.max_body)
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if too_large and message["status"] != 413:  # whatever the app made of the abort, it is a 413
                    raise _TooLarge(self.max_body)
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + _SECURITY_HEADERS}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge as exc:
            if started:
                raise
            await _with_headers(_json(413, str(exc.detail)), scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if not path.startswith("/api/") or path in _OPEN_API_PATHS:
            return None
        limiter = self.limiters["image" if path.startswith("/api/image/") else "api"]
        client = (scope.get("client") or ("unknown", 0))[0]
        if limiter is not None and (wait := limiter.wait(client)) > 0:
            return _json(429, f"rate limit exceeded: retry in {wait:.0f} s", {"Retry-After": str(max(1, round(wait)))})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None:
            sent = headers.get("authorization", "")
            scheme, _, value = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return _json(401, "missing or wrong API token (send Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return _json(413, f"request body too large (limit {self.max_body // 2**20} MB)")
        return None


async def _with_headers(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + _SECURITY_HEADERS}
        await send(message)

    await response(scope, receive, send_with)


# -- API models ------------------------------------------------------------------------


class TextQuery(BaseModel):
    query: str = Field(..., min_length=1, max_length=500, description="Text to search for, e.g. a person's name.")
    k: int = Field(10, ge=1, description="Number of results.")


class Result(BaseModel):
    rank: int
    id: int
    path: str = Field(description="Path of the image relative to the indexed folder.")
    identity: str | None
    name: str | None
    score: float
    image_url: str = Field(description="Thumbnail URL (same token required).")


class SearchResponse(BaseModel):
    query: str
    k: int
    model: str
    results: list[Result]


class AuditResponse(BaseModel):
    name: str
    query: str
    k: int
    matches: int
    precision_at_k: float
    in_index: int
    chance: float
    identifies: bool | None
    verdict: str
    threshold: float
    results: list[Result]


class ErrorResponse(BaseModel):
    error: str


def _result(hit: SearchHit) -> Result:
    return Result(
        rank=hit.rank, id=hit.id, path=hit.relpath, identity=hit.identity, name=hit.name, score=hit.score,
        image_url=f"/api/image/{hit.id}",
    )


# -- the app ---------------------------------------------------------------------------


@dataclass
class _Limits:
    max_upload_bytes: int
    max_pixels: int
    max_k: int


def _web_asset(name: str) -> bytes:
    return resources.files("clipface").joinpath("web", name).read_bytes()


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
) -> FastAPI:
    """The search engine over the index in ``index_dir``.

    ``model``: the encoder (default: the one the index was built with, from ``weights`` if
    given). ``token``: the API token (default ``$CLIPFACE_API_TOKEN``); with
    ``require_token=True`` and no token this raises. ``rate_limit``: API requests per minute
    per client IP (``None`` or 0: no limit).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if require_token and not token:
        raise ClipfaceError(f"an API token is required: set ${TOKEN_ENV} (or pass --no-auth to serve without one)")
    index = FaceIndex.load(index_dir, mmap=True)
    encoder = model if model is not None else index.load_encoder(weights=weights, device=device)
    index.check_encoder(encoder)
    optout = opt_out if isinstance(opt_out, OptOutList) else OptOutList(opt_out)
    limits = _Limits(max_upload_bytes, max_pixels, max_k)

    def exclude(image: IndexedImage) -> bool:
        return optout.blocks(image)

    app = FastAPI(
        title="clipface search",
        description="Face search over an image index (CLIP or face recogniser). Send `Authorization: Bearer TOKEN`.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
        responses={
            401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
            429: {"model": ErrorResponse},
        },
    )
    per_minute = rate_limit or 0
    limiters = {
        "api": RateLimiter(per_minute) if per_minute > 0 else None,
        "image": RateLimiter(per_minute * THUMBNAIL_FACTOR) if per_minute > 0 else None,
    }
    app.add_middleware(_Gate, token=token if require_token else None, limiters=limiters, max_body=max_upload_bytes)
    _install_error_handlers(app)

    def checked_k(k: int) -> int:
        if not 1 <= k <= limits.max_k:
            raise HTTPException(422, f"k must be between 1 and {limits.max_k}")
        return k

    @app.get("/api/health")
    def health() -> dict[str, str]:
        """Liveness (no token needed)."""
        return {"status": "ok"}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        """The index: model, kind, number of images and people; the server's limits."""
        optout.refresh()
        return {
            **{k: v for k, v in index.stats().items() if k != "fingerprint"},
            "fingerprint": index.manifest.fingerprint[:12],
            "has_text": encoder.has_text,
            "opt_out_entries": len(optout),
            "max_k": limits.max_k,
            "max_upload_bytes": limits.max_upload_bytes,
            "max_pixels": limits.max_pixels,
            "audit_threshold": THRESHOLD,
        }

    @app.post("/api/search/text", response_model=SearchResponse)
    def search_text(body: TextQuery) -> SearchResponse:
        """Images best matching a text (CLIP models only)."""
        k = checked_k(body.k)
        optout.refresh()
        hits = index.query_text(encoder, body.query, k, exclude)
        return SearchResponse(query=body.query, k=k, model=index.manifest.model, results=[_result(h) for h in hits])

    @app.post("/api/search/image", response_model=SearchResponse)
    def search_image(file: UploadFile = File(..., description="A photo with a face."), k: int = Form(10)) -> SearchResponse:
        """Images of the face most similar to the uploaded photo's."""
        k = checked_k(k)
        image = _read_image(file, limits)
        optout.refresh()
        hits = index.query_image(encoder, image, k, exclude)
        return SearchResponse(query="photo", k=k, model=index.manifest.model, results=[_result(h) for h in hits])

    @app.post("/api/audit", response_model=AuditResponse)
    def audit(
        name: str = Form(..., min_length=1, max_length=200, description="The person's name."),
        k: int = Form(10),
        file: UploadFile | None = File(None, description="Optional photo of the person (else the name is the query)."),
    ) -> AuditResponse:
        """How many of the top-k results for a name (or a photo) are that person, and the verdict."""
        k = checked_k(k)
        image = _read_image(file, limits) if file is not None and file.filename else None
        optout.refresh()
        r = audit_person(index, encoder, name, image=image, k=k, exclude=exclude)
        return AuditResponse(
            name=r.name, query=r.query, k=r.k, matches=r.matches, precision_at_k=r.precision, in_index=r.in_index,
            chance=r.chance, identifies=r.identifies, verdict=r.verdict, threshold=r.threshold,
            results=[_result(h) for h in r.results],
        )

    @app.get("/api/image/{image_id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def image(image_id: int) -> Response:
        """A JPEG thumbnail of an indexed image, by id."""
        optout.refresh()
        found = index.image(image_id)
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

    app.state.index = index
    app.state.encoder = encoder
    app.state.opt_out = optout
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _json(422, "invalid JSON body")
        loc = list(first.get("loc", ()))
        where = ".".join(str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path") else loc))
        return _json(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return _json(422, str(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _json(500, "internal server error")


def _read_image(file: UploadFile, limits: _Limits) -> Image.Image:
    """Decode an upload, refusing too many bytes or pixels before decoding."""
    data = file.file.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise _TooLarge(limits.max_upload_bytes)
    if not data:
        raise HTTPException(422, "empty upload: send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_pixels:
                raise HTTPException(413, f"image too large ({w}x{h} pixels, limit {limits.max_pixels / 1e6:.0f} Mpx)")
            img.load()
            return (ImageOps.exif_transpose(img) or img).convert("RGB")
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image too large (limit {limits.max_pixels / 1e6:.0f} Mpx)") from None
    except UnidentifiedImageError:
        raise HTTPException(422, "not an image (unrecognised file format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise HTTPException(422, f"unusable image ({'truncated' if 'truncated' in str(exc) else 'corrupt'})") from None


def _thumbnail(image: IndexedImage) -> bytes:
    try:
        img = load_image(Path(image.path))
    except ImageError:
        raise HTTPException(404, f"image {image.id} is no longer readable") from None
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()
