"""Request limits as pure ASGI middleware, so a refused request reaches no handler:
body size (413), the media type of JSON bodies (415) and the per-IP rate budgets (429).
Per-account budgets need the caller, so they are taken in the authentication
dependencies (api/auth_routes.py)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from email.message import Message as MimeHeader
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.api.ratelimit import RateLimited, RateLimiter
from mercato.wire import binance
from mercato.wire.binance_errors import TOO_MANY

MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 PAYLOAD_TOO_LARGE for bodies over ``limit`` bytes: at once when the
    Content-Length says so, else as soon as the streamed (chunked) body passes it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.limit):
            await refuse_too_large(send, self.limit)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    # Answer now: frameworks turn errors raised while reading into their
                    # own 400, which tracking_send then drops.
                    refused = True
                    if not started:
                        await refuse_too_large(send, self.limit)
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, tracking_send)


def declared_too_large(scope: Scope, limit: int = MAX_BODY_BYTES) -> bool:
    """The request's Content-Length is past ``limit`` (or not a number)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > limit
    return False


async def refuse_too_large(send: Send, limit: int = MAX_BODY_BYTES) -> None:
    await send_error(send, 413, "PAYLOAD_TOO_LARGE", f"request bodies are limited to {limit} bytes")


async def take_ip_budget(limiter: RateLimiter, scope: Scope) -> None:
    """Take a token from the request's per-IP budget; RateLimited if it is spent."""
    client = scope.get("client")
    await limiter.check("ip", client[0] if client else "unknown", "from this IP")


async def send_error(
    send: Send, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with the common error body, from ASGI middleware."""
    await send_body(send, status, {"code": code, "message": message}, headers)


async def send_body(
    send: Send, status: int, content: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def json_media_type_error(scope: Scope) -> str | None:
    """Why the request's Content-Type does not announce a JSON body, or None if it does.

    Only ``application/json`` is JSON here, with no charset or ``charset=utf-8`` (RFC 8259:
    JSON is UTF-8). ``application/*+json`` is refused too: those types promise meanings of
    their own (``merge-patch+json`` removes the fields set to null) that this API lacks.
    """
    value = next((v for name, v in scope["headers"] if name == b"content-type"), None)
    if value == b"application/json":
        return None  # what nearly every client sends: no parsing
    if value is None:
        return "the body is JSON: send Content-Type: application/json"
    header = MimeHeader()
    header["content-type"] = value.decode("latin-1")
    charset = header.get_param("charset")
    if header.get_content_type() != "application/json":
        return f"Content-Type {value.decode('latin-1')[:100]!r} is not application/json"
    if charset is not None and str(charset).lower() != "utf-8":
        return f"JSON bodies are UTF-8; charset {str(charset)[:40]!r} is not supported"
    return None


async def refuse_media_type(send: Send, reason: str) -> None:
    await send_error(send, 415, "UNSUPPORTED_MEDIA_TYPE", reason)


class JsonBodies:
    """Answer 415 UNSUPPORTED_MEDIA_TYPE when an endpoint that takes a JSON body is sent
    anything else (a text/plain or XML body was parsed as JSON before). ``takes_json``
    says whether the request's endpoint takes one; it is asked only about requests whose
    Content-Type is not JSON, and answers a GET at once, so the common cases cost a
    header scan."""

    def __init__(self, app: ASGIApp, takes_json: Callable[[Scope], bool]) -> None:
        self.app = app
        self.takes_json = takes_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = json_media_type_error(scope)
            if reason is not None and self.takes_json(scope):
                await refuse_media_type(send, reason)
                return
        await self.app(scope, receive, send)


class JsonOperations:
    """Which requests are for an operation that takes a JSON body, as ``openapi()`` (the
    app's /openapi.json) documents them: the pydantic bodies and the msgspec ones of
    ``openapi_extra`` alike. Read from the document on first use."""

    def __init__(self, openapi: Callable[[], dict[str, Any]]) -> None:
        self.openapi = openapi
        self._paths: dict[str, list[re.Pattern[str]]] | None = None  # by method

    def __call__(self, scope: Scope) -> bool:
        if self._paths is None:
            self._paths = {}
            for path, operations in self.openapi()["paths"].items():
                for method, operation in operations.items():
                    if "application/json" in operation.get("requestBody", {}).get("content", {}):
                        self._paths.setdefault(method.upper(), []).append(compile_path(path)[0])
        path = scope["path"]
        return any(regex.match(path) for regex in self._paths.get(scope["method"], ()))


# Endpoints that take a password, a token or a 2FA code, or mail someone: a much tighter
# per-IP budget than the rest, against password and code guessing and mail bombing.
CREDENTIAL_ENDPOINTS = frozenset(
    [("POST", f"/api/v1/auth/{name}")
     for name in ("register", "verify-email", "login", "refresh",
                  "password-reset/request", "password-reset/confirm")]
    + [("POST", f"/api/v1/account/{name}")
       for name in ("password", "api-keys", "2fa/confirm", "2fa/disable")]
)  # fmt: skip
UNLIMITED_PREFIXES = ("/health/",)  # probes must never be refused
# The Binance dialect's paths answer a spent IP budget in Binance's words (docs/binance.md).
BINANCE_PREFIXES = binance.PATH_PREFIXES


class RateLimit:
    """Per-IP budgets: ``ip`` for every request, plus ``auth`` on the credential paths."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(UNLIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            await take_ip_budget(self.limiter, scope)
            if (scope["method"], path) in CREDENTIAL_ENDPOINTS:
                client = scope.get("client")
                ip = client[0] if client else "unknown"
                await self.limiter.check("auth", ip, "to the sign-in endpoints from this IP")
        except RateLimited as limited:
            retry = (b"retry-after", str(limited.retry_after).encode())
            if path.startswith(BINANCE_PREFIXES):  # Binance's body: {"code": -1003, "msg"}
                await send_body(send, 429, {"code": -1003, "msg": TOO_MANY}, (retry,))
            else:
                await send_error(send, 429, limited.code, limited.message, (retry,))
            return
        await self.app(scope, receive, send)
