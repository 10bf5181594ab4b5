"""Request limits, as ASGI middleware: body size (413) and a per-client rate limit (429).

Body size: an upload to /v1/files may carry `max_upload_bytes` plus its multipart envelope; any other
request body is capped at MAX_BODY_BYTES (the JSON requests are small). A Content-Length over the
limit is refused before a byte is read; a body without one is counted as it streams in and cut off
as soon as it passes the limit, so an oversized upload never lands on disk whole.

Rate limit: a token bucket of `rate_limit_per_minute` requests per API key (per dashboard session, or
per client address for requests without credentials), refilled continuously. It lives in this server
process: with several server processes each one counts on its own. /healthz, /metrics and the
dashboard's static files are exempt.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body
from server.session import COOKIE_NAME

UPLOAD_PATH = "/v1/files"
MULTIPART_ENVELOPE = 1 << 20  # boundaries, part headers and the purpose field around the file
MAX_BODY_BYTES = 4 << 20  # every other route takes a small JSON body
EXEMPT_PREFIXES = ("/healthz", "/metrics", "/dashboard/static/")


# --- body size ---------------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; an HTTPException so that FastAPI's body parsing lets it through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")
        self.limit = limit


def too_large_message(path: str, limit: int, max_upload_bytes: int) -> tuple[str, str | None, str]:
    if path == UPLOAD_PATH:
        return f"The file is larger than the limit of {max_upload_bytes} bytes.", "file", "file_too_large"
    return f"The request body is larger than the limit of {limit} bytes.", None, "request_too_large"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, path: str) -> int:
        return self.max_upload_bytes + MULTIPART_ENVELOPE if path == UPLOAD_PATH else MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            message, param, code = too_large_message(scope["path"], limit, self.max_upload_bytes)
            return await _send_error(send, 413, message, param=param, code=code)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


# --- rate limit -------------------------------------------------------------------------------------


class TokenBucket:
    """`per_minute` tokens per name, refilled continuously; `take` answers the seconds to wait (0: go)."""

    MAX_NAMES = 100_000  # beyond this, names whose bucket is full again are forgotten

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self.lock = threading.Lock()

    def take(self, name: str) -> float:
        with self.lock:
            t = self.clock()
            tokens, at = self.buckets.get(name, (self.capacity, t))
            tokens = min(self.capacity, tokens + (t - at) * self.rate)
            if tokens >= 1:
                self.buckets[name] = (tokens - 1, t)
                if len(self.buckets) > self.MAX_NAMES:
                    self._forget_full(t)
                return 0.0
            self.buckets[name] = (tokens, t)
            return (1 - tokens) / self.rate

    def _forget_full(self, t: float) -> None:
        for name, (tokens, at) in list(self.buckets.items()):
            if tokens + (t - at) * self.rate >= self.capacity:
                del self.buckets[name]


def client_name(scope: Scope) -> str:
    """Who a request counts against: its bearer key, else its dashboard session, else its address.
    Only digests are kept in memory, never the key itself."""
    auth = _header(scope, b"authorization")
    if auth and auth.lower().startswith("bearer ") and auth[7:].strip():
        return "key:" + hashlib.sha256(auth[7:].strip().encode()).hexdigest()
    cookie = _cookie(scope, COOKIE_NAME)
    if cookie:
        return "session:" + hashlib.sha256(cookie.encode()).hexdigest()
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, *, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.per_minute = per_minute
        self.bucket = TokenBucket(per_minute, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            return await self.app(scope, receive, send)
        wait = self.bucket.take(client_name(scope))
        if wait <= 0:
            return await self.app(scope, receive, send)
        seconds = max(1, math.ceil(wait))
        await _send_error(
            send, 429,
            f"Rate limit reached: {self.per_minute} requests per minute. Please try again in {seconds}s.",
            type="requests", code="rate_limit_exceeded",
            headers={"retry-after": str(seconds), "x-ratelimit-limit-requests": str(self.per_minute),
                     "x-ratelimit-remaining-requests": "0"},
        )


# --- helpers ----------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie") or ""
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


async def _send_error(
    send: Send, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
    code: str | None = None, headers: dict[str, str] | None = None,
) -> None:
    body = json.dumps(error_body(message, type=type, param=param, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    # The client may still be sending its body; close the connection rather than read it all.
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def body_too_large(request, exc: BodyTooLarge):
    """The handler for a body cut off while streaming in (the app's exception handler for BodyTooLarge)."""
    from server.errors import error_response

    settings = request.app.state.settings
    message, param, code = too_large_message(request.url.path, exc.limit, settings.max_upload_bytes)
    return error_response(413, message, param=param, code=code, headers={"connection": "close"})
