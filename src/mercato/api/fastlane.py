"""Order entry served as plain ASGI, ahead of the FastAPI application.

``POST /api/v1/orders`` and ``DELETE /api/v1/orders/{id}`` (and Binance's ``POST`` and
``DELETE /api/v3/order``) are most of an exchange's traffic. Through FastAPI every
request crosses about ten layers (error and telemetry middleware, the router's route scan,
dependency solving, response wrapping) that cost more CPU than placing the order. Here
those requests are recognised by method and path and
handed to the same handler functions the documented FastAPI routes use, with the same
guards the middleware applies to everything else: the per-IP rate budget, the body size
limit, the JSON media type of the order body, and the application's own exception
handlers, so answers and error bodies are identical either way. Everything else goes to
FastAPI untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mercato.api.limits import (
    MAX_BODY_BYTES,
    declared_too_large,
    json_media_type_error,
    refuse_media_type,
    refuse_too_large,
    take_ip_budget,
)

Handler = Callable[[Request], Awaitable[Response]]
ORDERS = "/api/v1/orders"
ORDER_PREFIX = "/api/v1/orders/"
BINANCE_ORDER = "/api/v3/order"  # Binance's POST and DELETE (api/binance/trading_routes.py)
MAX_ORDER_ID_DIGITS = 19  # 2^63 - 1; longer paths fall through to FastAPI's 400


class OrderEntryApp(FastAPI):
    """A FastAPI application whose order-entry requests skip the framework's layers."""

    place_handler: Handler | None = None
    cancel_handler: Handler | None = None
    binance_order_handler: Handler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self._fast_handler(scope)
            if handler is not None:
                await self._serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _fast_handler(self, scope: Scope) -> Handler | None:
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == ORDERS:
            return self.place_handler
        if path == BINANCE_ORDER and (method == "POST" or method == "DELETE"):
            return self.binance_order_handler
        if method == "DELETE" and path.startswith(ORDER_PREFIX):
            digits = path[len(ORDER_PREFIX) :]
            if digits.isascii() and digits.isdigit() and len(digits) <= MAX_ORDER_ID_DIGITS:
                scope["path_params"] = {"order_id": int(digits)}
                return self.cancel_handler
        return None

    async def _serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        request = Request(scope, receive)
        try:
            await take_ip_budget(self.state.limiter, scope)
            if await _refused_before_reading(scope, send):
                return
            body = await _body(scope, receive)
            if body is None:
                await refuse_too_large(send)
                return
            request._body = body  # Starlette's own cache: request.body() answers it
            response = await handler(request)
        except ClientDisconnect:
            return  # nobody to answer; nothing was submitted
        except Exception as error:  # mapped by the app's handlers, like any other route
            response = await self._handled(request, error)
        await send(
            {"type": "http.response.start", "status": response.status_code,
             "headers": response.raw_headers}
        )  # fmt: skip
        await send({"type": "http.response.body", "body": response.body})

    async def _handled(self, request: Request, error: Exception) -> Response:
        for kind in type(error).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None:
                # install_error_handlers registers coroutines, all answering a Response
                response = await handler(request, error)  # type: ignore[misc]
                assert isinstance(response, Response)
                return response
        raise error


async def _refused_before_reading(scope: Scope, send: Send) -> bool:
    """Refuse as the middleware stack would, in its order: a declared size over the limit
    (BodyLimit), then a native order body that is not JSON (JsonBodies; a cancel has no
    body, Binance's orders come as forms)."""
    if declared_too_large(scope):
        await refuse_too_large(send)
        return True
    native_order = scope["method"] == "POST" and scope["path"] == ORDERS
    reason = json_media_type_error(scope) if native_order else None
    if reason is not None:
        await refuse_media_type(send, reason)
        return True
    return False


async def _body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body, or None once it passes the size limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
