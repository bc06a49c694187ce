"""The routers of the Binance dialect, in the order the app includes them (one line per
module)."""

from __future__ import annotations

from fastapi import APIRouter

ALL: list[APIRouter] = []

from mercato.api.binance import market_routes  # noqa: E402

ALL.append(market_routes.router)

from mercato.api.binance import streams  # noqa: E402

ALL.append(streams.router)
