"""The routers of the Binance dialect, in the order the app includes them."""

from __future__ import annotations

from fastapi import APIRouter

from mercato.api.binance import market_routes, streams, ws_api
from mercato.api.binance.trading_routes import router as trading_router

ALL: list[APIRouter] = [market_routes.router, trading_router, ws_api.router, streams.router]
