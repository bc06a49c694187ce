"""Binance's spot API on Mercato (docs/binance.md): ``/api/v3`` REST, the market streams
(``/ws/<stream>``, ``/stream``) and the WebSocket API (``/ws-api/v3``), over the same
application services as the native API; never a second copy of trading logic.

Every route of this dialect uses :class:`BinanceRoute`, which answers any refusal in
Binance's shape (``{"code", "msg"}``, Binance's status) instead of the native error body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from mercato.api.binance.errors import binance_error_of
from mercato.api.binance.weights import charge_public
from mercato.service import ExchangeService
from mercato.wire.binance import BinanceError, Symbols


def error_response(error: BinanceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class BinanceRoute(APIRoute):
    """A route whose refusals are Binance's: any exception the handler (or FastAPI's
    parameter validation) raises becomes ``{"code", "msg"}`` with Binance's status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def binance_handler(request: Request) -> Response:
            weighed: dict[str, str] = {}
            try:
                weighed = _charge(request)
                response = await handler(request)
            except Exception as exc:  # every refusal is translated; the rest re-raised
                error = binance_error_of(exc)
                if error is None:
                    raise
                error.headers = {**weighed, **error.headers}
                return error_response(error)
            response.headers.update(weighed)
            return response

        return binance_handler


def _charge(request: Request) -> dict[str, str]:
    """A public endpoint's request weight (X-MBX-USED-WEIGHT-1M; api/binance/weights.py)."""
    client = request.client.host if request.client else "unknown"
    return charge_public(request.app, request.method, request.scope["path"],
                         request.scope["query_string"], client)  # fmt: skip


_SYMBOLS: dict[int, tuple[tuple[str, ...], Symbols]] = {}


def symbols_of(service: ExchangeService) -> Symbols:
    """The service's Binance symbols, rebuilt when its set of markets changes."""
    assert service.port is not None, "a ready service has its port"
    markets = tuple(service.port.view.market_symbols())
    cached = _SYMBOLS.get(id(service))
    if cached is None or cached[0] != markets:
        cached = _SYMBOLS[id(service)] = (markets, Symbols(markets))
    return cached[1]


def install(app: FastAPI) -> None:
    """Add the dialect's routers to ``app`` (each module of this package adds one)."""
    from mercato.api.binance import routers

    for router in routers.ALL:
        app.include_router(router)
