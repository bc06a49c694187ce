"""OHLCV candles folded from trades: one definition shared by the SQL projection and the
in-memory ticker, so the two can never disagree.

Prices are in ticks and volumes in atoms, as in the engine's ``Trade`` events. Candles
are aligned to UTC: an interval's candles open at multiples of its length since the
Unix epoch (so 4h candles open at 00:00, 04:00, ... UTC and 1d candles at midnight UTC).
A candle exists only for intervals with at least one trade; clients fill gaps.
"""

from __future__ import annotations

from typing import Final

import msgspec

from mercato.core.events import Trade

MINUTE_MS: Final = 60_000
INTERVALS: Final[dict[str, int]] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}


class Candle(msgspec.Struct, frozen=True):
    market: str
    interval: str
    open_time: int  # ms, UTC, a multiple of the interval length
    open: int  # ticks
    high: int
    low: int
    close: int
    volume: int  # base atoms
    quote_volume: int  # quote atoms
    trades: int
    first_trade_id: int
    last_trade_id: int

    @property
    def close_time(self) -> int:
        """The last millisecond the candle covers."""
        return self.open_time + INTERVALS[self.interval] - 1


def open_time(ts: int, interval: str) -> int:
    """Opening time of the ``interval`` candle that holds ``ts`` (ms)."""
    length = INTERVALS[interval]
    return ts - ts % length


def fold(candle: Candle | None, trade: Trade, interval: str) -> Candle:
    """``candle`` with ``trade`` added; a new candle if ``candle`` is None or belongs to
    an earlier period. Trades arrive in trade-id order, which is time order."""
    start = open_time(trade.ts, interval)
    if candle is None or candle.open_time != start:
        return Candle(
            trade.market, interval, start, trade.price, trade.price, trade.price, trade.price,
            trade.base_amount, trade.quote_amount, 1, trade.trade_id, trade.trade_id,
        )  # fmt: skip
    return Candle(
        candle.market,
        interval,
        start,
        candle.open,
        max(candle.high, trade.price),
        min(candle.low, trade.price),
        trade.price,
        candle.volume + trade.base_amount,
        candle.quote_volume + trade.quote_amount,
        candle.trades + 1,
        candle.first_trade_id,
        trade.trade_id,
    )


def merge(candles: list[Candle], interval: str) -> list[Candle]:
    """Roll finer candles (time order, one market) up into ``interval`` candles."""
    merged: list[Candle] = []
    for candle in candles:
        start = open_time(candle.open_time, interval)
        last = merged[-1] if merged else None
        if last is None or last.open_time != start:
            merged.append(msgspec.structs.replace(candle, interval=interval, open_time=start))
            continue
        merged[-1] = Candle(
            last.market, interval, start, last.open, max(last.high, candle.high),
            min(last.low, candle.low), candle.close, last.volume + candle.volume,
            last.quote_volume + candle.quote_volume, last.trades + candle.trades,
            last.first_trade_id, candle.last_trade_id,
        )  # fmt: skip
    return merged
