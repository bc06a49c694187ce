"""The routers of the Binance dialect, in the order the app includes them (one line per
module)."""

from __future__ import annotations

from fastapi import APIRouter

ALL: list[APIRouter] = []

from mercato.api.binance import market_routes  # noqa: E402
from mercato.api.binance.trading_routes import router as trading_router  # noqa: E402

ALL.append(market_routes.router)
ALL.append(trading_router)

from mercato.api.binance import ws_api  # noqa: E402

ALL.append(ws_api.router)
