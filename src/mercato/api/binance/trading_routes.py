"""Binance's signed spot REST endpoints under ``/api/v3`` (docs/binance.md, "Signed REST").

Every request is charged its request weight (per IP per minute), authenticated as
Binance signs it, charged Mercato's budgets, and answered by an operation of
:mod:`mercato.api.binance.trading` (shared with the WebSocket API), with Binance's rate
limit headers on answers and refusals alike. Parameters come in the query string or a
form body (``application/x-www-form-urlencoded``), as on Binance; no body is JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from mercato.api.auth_routes import service_of
from mercato.api.binance import BinanceRoute, error_response
from mercato.api.binance import trading as ops
from mercato.api.binance.auth import request_params, signed_caller
from mercato.api.binance.errors import binance_error_of
from mercato.api.binance.weights import ORDER_PLACEMENTS, meter_of, weight
from mercato.api.ratelimit import RateLimited, RateLimiter
from mercato.auth.sessions import Principal
from mercato.service import ExchangeService
from mercato.wire.binance_errors import too_many_orders

router = APIRouter(prefix="/api/v3", tags=["binance"], route_class=BinanceRoute)

Operation = Callable[[Request, ExchangeService, Principal, ops.Params], Awaitable[Any]]


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def serve(request: Request, operation: Operation, permission: str) -> Response:
    """Charge, authenticate, run ``operation``, answer with Binance's headers."""
    method, path = request.method, request.scope["path"]
    headers: dict[str, str] = {}
    try:
        service = service_of(request)
        meter = meter_of(request.app)
        params = await request_params(request)
        used = meter.charge(_ip(request), weight(method, path, params))
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        caller = await signed_caller(request, params, permission)
        if permission == "trade":
            await _order_budget(request, caller.user_id)
        if (method, path) in ORDER_PLACEMENTS:
            headers.update(meter.count_order(caller.user_id).headers())
        answer = await operation(request, service, caller, params)
    except Exception as exc:
        error = binance_error_of(exc)
        if error is None:
            raise
        error.headers = {**headers, **error.headers}
        return error_response(error)
    return Response(msgspec.json.encode(answer), media_type="application/json", headers=headers)


async def _order_budget(request: Request, user_id: int) -> None:
    """Mercato's own order-entry budget (every trading request, cancels included, as on
    the native API), answered as Binance answers a spent order count (-1015)."""
    limiter: RateLimiter = request.app.state.limiter
    try:
        await limiter.check("orders", str(user_id), "of order entry for this account")
    except RateLimited as limited:
        declared = meter_of(request.app).limits.orders_per_10s
        raise too_many_orders(declared, "10 SECOND", limited.retry_after) from None


def _shared(operation: Callable[[ExchangeService, Principal, ops.Params], Awaitable[Any]]
            ) -> Operation:  # fmt: skip
    async def run(request: Request, service: ExchangeService, caller: Principal,
                  params: ops.Params) -> Any:  # fmt: skip
        return await operation(service, caller, params)

    return run


async def order_rate_limits(request: Request, service: ExchangeService, caller: Principal,
                            params: ops.Params) -> list[dict[str, object]]:  # fmt: skip
    """``GET /api/v3/rateLimit/order``: the account's order counts in each window."""
    meter = meter_of(request.app)
    counts = meter.order_counts(caller.user_id)
    ten_seconds, day = meter.limits.order_limits()
    return [{**ten_seconds, "count": counts.ten_seconds}, {**day, "count": counts.day}]


FORM_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "description": "Binance's parameters (or in the query string), signed",
    }
}  # fmt: skip
SIGNED = {
    "parameters": [{"name": "X-MBX-APIKEY", "in": "header", "required": True,
                    "schema": {"type": "string"}}],
}  # fmt: skip


def add(method: str, path: str, operation: Operation, permission: str, summary: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await serve(request, operation, permission)

    endpoint.__name__ = f"binance_{method.lower()}_{path.strip('/').replace('/', '_')}"
    extra = {**SIGNED, **(FORM_BODY if method in ("POST", "PUT", "DELETE") else {})}
    router.add_api_route(path, endpoint, methods=[method], summary=summary,
                         openapi_extra=extra, response_class=Response)  # fmt: skip


PLACE = _shared(ops.place_order)
CANCEL = _shared(ops.cancel_order)

ENDPOINTS: list[tuple[str, str, Operation, str, str]] = [
    ("GET", "/account", _shared(ops.account), "read", "Account information"),
    ("POST", "/order", PLACE, "trade", "New order"),
    ("POST", "/order/test", _shared(ops.test_order), "trade", "Test new order"),
    ("GET", "/order", _shared(ops.query_order), "read", "Query order"),
    ("DELETE", "/order", CANCEL, "trade", "Cancel order"),
    ("GET", "/openOrders", _shared(ops.open_orders), "read", "Current open orders"),
    ("DELETE", "/openOrders", _shared(ops.cancel_open_orders), "trade",
     "Cancel all open orders on a symbol"),
    ("GET", "/allOrders", _shared(ops.all_orders), "read", "All orders"),
    ("GET", "/myTrades", _shared(ops.my_trades), "read", "Account trade list"),
    ("POST", "/order/cancelReplace", _shared(ops.cancel_replace), "trade",
     "Cancel an existing order and send a new order"),
    ("PUT", "/order/amend/keepPriority", _shared(ops.amend_keep_priority), "trade",
     "Order amend keep priority"),
    ("GET", "/myPreventedMatches", _shared(ops.prevented_matches), "read",
     "Query prevented matches"),
    ("GET", "/rateLimit/order", order_rate_limits, "read", "Query unfilled order count"),
]  # fmt: skip
for _method, _path, _operation, _permission, _summary in ENDPOINTS:
    add(_method, _path, _operation, _permission, _summary)


async def binance_order_direct(request: Request) -> Response:
    """``POST`` and ``DELETE /api/v3/order`` served by the fast lane (api/fastlane.py)
    without FastAPI's layers; the routes above document them and answer the same."""
    return await serve(request, PLACE if request.method == "POST" else CANCEL, "trade")
