"""Per-market trade statistics in memory: recent trades, candles of every interval, and
the rolling 24-hour ticker.

Candles are folded from trades with :func:`mercato.core.candles.fold`, the same
function the SQL projection uses, so memory and SQL cannot disagree on a candle.

The ticker's window is the current UTC minute and the 1439 minutes before it: it is
built from 1-minute candles, so its precision is one minute (a trade leaves the window
between 24 h and 24 h + 1 min after it happened). The 1-minute candles of the closed
minutes are summed once per minute; the current minute is added on every request.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from mercato.core.candles import INTERVALS, MINUTE_MS, Candle, fold, open_time
from mercato.core.events import Trade

RECENT_TRADES = 1000
"""Trades kept per market for ``/trades`` (and seeded from SQL at start)."""
WINDOW_MINUTES = 1440
CANDLES_KEPT = {"1m": WINDOW_MINUTES + 60, "5m": 600, "15m": 400, "1h": 400, "4h": 400, "1d": 400}
"""Recent candles kept in memory per interval (the 1-minute ones cover the ticker)."""


class TickerStats(NamedTuple):
    """The 24-hour window in engine integers: prices in ticks, volumes in atoms. ``open``,
    ``high`` and ``low`` are 0 when the window holds no trade."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int


class _Closed(NamedTuple):
    """Aggregate of the closed minutes of one window."""

    window_start: int
    current_minute: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    first_trade_id: int
    last_trade_id: int


class MarketStats:
    """Recent trades and candles of one market, fed trade by trade in trade-id order."""

    __slots__ = ("_closed", "candles", "symbol", "trades")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.trades: deque[Trade] = deque(maxlen=RECENT_TRADES)
        self.candles: dict[str, deque[Candle]] = {
            interval: deque(maxlen=CANDLES_KEPT[interval]) for interval in INTERVALS
        }
        self._closed: _Closed | None = None

    def add(self, trade: Trade) -> None:
        self.trades.append(trade)
        for interval, candles in self.candles.items():
            last = candles[-1] if candles else None
            candle = fold(last, trade, interval)
            if last is not None and last.open_time == candle.open_time:
                candles[-1] = candle
            else:
                candles.append(candle)

    def seed(self, trades: list[Trade], candles: dict[str, list[Candle]]) -> None:
        """Start from stored history (time order): recent trades, recent candles."""
        self.trades.extend(trades)
        for interval, rows in candles.items():
            kept = self.candles[interval]
            kept.clear()
            kept.extend(rows)
        self._closed = None

    def current(self, interval: str) -> Candle | None:
        candles = self.candles[interval]
        return candles[-1] if candles else None

    def ticker(self, now: int) -> TickerStats:
        """The rolling 24 h statistics as of ``now`` (ms)."""
        minute = open_time(now, "1m")
        start = minute - (WINDOW_MINUTES - 1) * MINUTE_MS
        closed = self._closed
        if closed is None or closed.window_start != start or closed.current_minute != minute:
            closed = self._closed = self._sum_closed(start, minute)
        minutes = self.candles["1m"]
        last = minutes[-1] if minutes else None
        if last is None or last.open_time != minute:
            return TickerStats(start, now, *closed[2:])
        if not closed.trades:
            return TickerStats(start, now, last.open, last.high, last.low, last.close,
                               last.volume, last.quote_volume, last.trades,
                               last.first_trade_id, last.last_trade_id)  # fmt: skip
        return TickerStats(
            start, now, closed.open, max(closed.high, last.high), min(closed.low, last.low),
            last.close, closed.volume + last.volume, closed.quote_volume + last.quote_volume,
            closed.trades + last.trades, closed.first_trade_id, last.last_trade_id,
        )  # fmt: skip

    def _sum_closed(self, start: int, minute: int) -> _Closed:
        """Sum the 1-minute candles with ``start <= open_time < minute``."""
        high = volume = quote_volume = trades = 0
        low = 0
        first: Candle | None = None
        latest: Candle | None = None
        for candle in reversed(self.candles["1m"]):
            if candle.open_time >= minute:
                continue
            if candle.open_time < start:
                break
            if latest is None:
                latest = candle
                low = candle.low
            first = candle
            high = max(high, candle.high)
            low = min(low, candle.low)
            volume += candle.volume
            quote_volume += candle.quote_volume
            trades += candle.trades
        if first is None or latest is None:
            return _Closed(start, minute, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return _Closed(start, minute, first.open, high, low, latest.close, volume, quote_volume,
                       trades, first.first_trade_id, latest.last_trade_id)  # fmt: skip
