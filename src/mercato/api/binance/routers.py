"""The routers of the Binance dialect, in the order the app includes them (one line per
module)."""

from __future__ import annotations

from fastapi import APIRouter

ALL: list[APIRouter] = []

from mercato.api.binance import ws_api  # noqa: E402

ALL.append(ws_api.router)
