"""Rejection texts in the API's units.

Prices in quote, quantities in base, amounts of an asset with its symbol: exact decimal
strings, never atoms, ticks or lots. Clients and tests read these messages, so a change
here is a change of the API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mercato.core.book import MarketState
from mercato.core.model import DEPOSIT_ID_WINDOW_MS, MAX_PRICE_TICKS
from mercato.core.money import format_amount, format_units
from mercato.core.results import Rejection
from mercato.core.state import EngineState


def price_text(market: MarketState, ticks: int) -> str:
    return f"{format_units(ticks, market.rules.tick_size)} {market.quote}"


def price_range(market: MarketState) -> str:
    tick = market.rules.tick_size
    return f"{format_units(1, tick)}..{format_units(MAX_PRICE_TICKS, tick)} {market.quote}"


def quantity_text(market: MarketState, lots: int) -> str:
    return f"{format_units(lots, market.rules.step_size)} {market.base}"


def quantity_range(market: MarketState) -> str:
    step = market.rules.step_size
    low, high = format_units(market.min_lots, step), format_units(market.max_lots, step)
    return f"{low}..{high} {market.base}"


def amount_text(state: EngineState, atoms: int, asset: str) -> str:
    return f"{format_amount(atoms, state.assets[asset].decimals)} {asset}"


def notional_too_small(state: EngineState, market: MarketState, what: str, atoms: int) -> Rejection:
    return Rejection(
        "NOTIONAL_TOO_SMALL",
        f"{what} {amount_text(state, atoms, market.quote)} is below min notional "
        f"{amount_text(state, market.min_notional, market.quote)}",
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_text(ms: int) -> str:
    """Milliseconds since the epoch as a UTC time, with the raw value for the caller's
    clock: "2026-12-07T15:29:45.123Z (1796657385123 ms)"."""
    try:  # integer arithmetic only: results are replayed and must match to the byte
        when = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:  # beyond year 9999 or before year 1
        return f"{ms} ms"
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z ({ms} ms)"


def window_text() -> str:
    """DEPOSIT_ID_WINDOW_MS in words."""
    days, rest = divmod(DEPOSIT_ID_WINDOW_MS, 24 * 3600 * 1000)
    return f"{days} days" if not rest else f"{DEPOSIT_ID_WINDOW_MS} ms"
