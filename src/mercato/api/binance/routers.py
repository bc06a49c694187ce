"""The routers of the Binance dialect, in the order the app includes them (one line per
module)."""

from __future__ import annotations

from fastapi import APIRouter

from mercato.api.binance import streams

ALL: list[APIRouter] = [streams.router]
