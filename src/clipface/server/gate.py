"""The gate in front of the app: rate limit, bearer token, body size and security headers, before anything is read."""

from __future__ import annotations

import hmac
import logging

from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .policies import RateLimiter

__all__ = ["Gate", "OPEN_API_PATHS", "SECURITY_HEADERS", "TooLarge", "json_error"]

log = logging.getLogger("clipface.server")

OPEN_API_PATHS = ("/api/health",)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]


class TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit // 2**20} MB)")


def json_error(status: int, error: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class Gate:
    """ASGI middleware checking each API request before the app reads anything of it.

    It also answers any error the app did not handle (a 500 with the security headers, the
    trace in the log only), so no request ends with a reset connection.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        limiters: dict[str, RateLimiter | None],
        max_body: int,
        protected: tuple[str, ...] = (),
    ) -> None:
        self.app, self.token, self.limiters, self.max_body = app, token, limiters, max_body
        self.protected = protected  # routes outside /api/ that the same policies cover (clip-retrieval's)

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
                    raise TooLarge(self.max_body)
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if too_large and message["status"] != 413:  # whatever the app made of the abort, it is a 413
                    raise TooLarge(self.max_body)
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except TooLarge as exc:
            if started:
                raise
            await _with_headers(json_error(413, str(exc.detail)), scope, receive, send)
        except Exception:  # a bug: answered here, with the security headers, and the connection kept
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _with_headers(json_error(500, "internal server error"), scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if path in OPEN_API_PATHS or not (path.startswith("/api/") or path.rstrip("/") in self.protected):
            return None
        limiter = self.limiters["image" if path.startswith("/api/image/") else "api"]
        client = (scope.get("client") or ("unknown", 0))[0]
        if limiter is not None and (wait := limiter.wait(client)) > 0:
            return json_error(
                429, f"rate limit exceeded: retry in {wait:.0f} s", {"Retry-After": str(max(1, round(wait)))}
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None:
            sent = headers.get("authorization", "")
            scheme, _, value = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return json_error(
                    401, "missing or wrong API token (send Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"}
                )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return json_error(413, f"request body too large (limit {self.max_body // 2**20} MB)")
        return None


async def _with_headers(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
        await send(message)

    await response(scope, receive, send_with)
