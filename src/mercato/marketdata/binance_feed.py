"""Binance's market streams (docs/binance.md, "Market streams") on the hub.

``BinanceFeed`` follows :class:`~mercato.marketdata.feed.MarketData`: after each durable
batch it gets the batch and the depth changes the mirror computed, and publishes each
Binance event once per batch (or per interval) on the hub channel named after its stream,
``btcusdt@trade``; a connection that asked for combined payloads subscribes to
``<stream> (combined)``, whose messages are the same payload in its envelope. Nothing is
built for a stream without subscribers.

Cadences are Binance's: trades, aggregate trades and book tickers at once; diff depth
merged over 100 ms or 1000 ms (``U`` the first, ``u`` the last depth sequence number the
event covers, so consecutive events continue exactly: ``U == previous u + 1``); partial
books every 100 ms or 1000 ms; tickers every second; klines every two seconds. A ticker
runs while any Binance connection is open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mercato.core.candles import INTERVALS, open_time
from mercato.core.events import Trade
from mercato.marketdata.depth import DepthChange
from mercato.marketdata.feed import MarketData
from mercato.port import AppliedBatch
from mercato.wire import binance_streams as wire
from mercato.wire.binance_market import BinanceFormat
from mercato.wire.binance_streams import stream_symbol

log = logging.getLogger(__name__)

TICK = 0.1
"""The fastest cadence (seconds): 100 ms diff depth and partial books."""
SLOW_TICKS = 10  # 1000 ms streams
KLINE_TICKS = 20  # klines every 2 s, as Binance
COMBINED = " (combined)"


def channel(stream: str, combined: bool) -> str:
    """The hub channel of ``stream`` for a raw or a combined connection."""
    return stream + COMBINED if combined else stream


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Diff:
    """Depth changes of one market not yet sent on one diff stream (last value wins)."""

    __slots__ = ("asks", "bids", "first", "last")

    def __init__(self, first: int) -> None:
        self.first = first
        self.last = first
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class BinanceFeed:
    """Binance-formatted market streams of one :class:`MarketData`."""

    def __init__(self, market_data: MarketData) -> None:
        self.market_data = market_data
        self.hub = market_data.hub
        self.clients = 0
        """Open Binance connections (the ticker runs while there are any)."""
        self._diffs: dict[bool, dict[str, _Diff]] = {True: {}, False: {}}  # fast? -> market
        self._tops: dict[str, tuple[Any, Any]] = {}  # market -> last best bid/ask sent
        self._ticker_dirty: set[str] = set()
        self._taker_buys: dict[tuple[str, str], list[int]] = {}  # open time, base, quote
        self._closed_sent: dict[str, int] = {}  # kline stream -> open time sent closed
        self._ticks = 0
        self._formats: dict[str, BinanceFormat] = {}
        self._timer: asyncio.TimerHandle | None = None
        market_data.followers.append(self.on_batch)

    # -- who listens ---------------------------------------------------------------------------

    def wanted(self, stream: str) -> bool:
        subscribers = self.hub.subscribers
        return stream in subscribers or stream + COMBINED in subscribers

    def publish(self, stream: str, payload: str) -> None:
        """Queue ``payload`` for the raw subscribers of ``stream`` and its envelope for the
        combined ones."""
        subscribers = self.hub.subscribers
        if stream in subscribers:
            self.hub.publish(stream, payload)
        if stream + COMBINED in subscribers:
            self.hub.publish(stream + COMBINED, wire.combined(stream, payload))

    def connected(self) -> None:
        self.clients += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def disconnected(self) -> None:
        self.clients -= 1

    # -- the batch listener ----------------------------------------------------------------------

    def on_batch(self, batch: AppliedBatch, changes: list[DepthChange]) -> None:
        for result in batch.results:
            group: list[Trade] = []
            for event in result.events:
                if type(event) is Trade:
                    assert isinstance(event, Trade)
                    self._count_taker_buy(event)
                    if not self.clients:
                        continue
                    self._ticker_dirty.add(event.market)
                    if group and (group[-1].taker_order_id != event.taker_order_id
                                  or group[-1].price != event.price):  # fmt: skip
                        self._agg_trade(group, batch.ts)
                        group = []
                    group.append(event)
                    self._trade(event, batch.ts)
            if group:
                self._agg_trade(group, batch.ts)
        if self.clients:
            for change in changes:
                self._depth(change)
            self.hub.request_flush()

    def _count_taker_buy(self, fill: Trade) -> None:
        """The current candles' taker-buy volumes (a kline's ``V`` and ``Q``), which the
        candles do not keep; counted from the trades seen since the process started."""
        if fill.taker_side != "BUY":
            return
        for interval in INTERVALS:
            opened = open_time(fill.ts, interval)
            counts = self._taker_buys.get((fill.market, interval))
            if counts is None or counts[0] != opened:
                counts = self._taker_buys[(fill.market, interval)] = [opened, 0, 0]
            counts[1] += fill.base_amount
            counts[2] += fill.quote_amount

    def _format(self, market: str) -> BinanceFormat:
        """The market's Binance strings (those of the ``/api/v3`` answers)."""
        fmt = self._formats.get(market)
        if fmt is None:
            rules = self.market_data.view.rules(market)
            assert rules is not None
            native = self.market_data.formats[market]
            fmt = BinanceFormat(rules, native.base_decimals, native.quote_decimals)
            self._formats[market] = fmt
        return fmt

    def _trade(self, fill: Trade, ts: int) -> None:
        stream = f"{stream_symbol(fill.market)}@trade"
        if self.wanted(stream):
            symbol = fill.market.replace("-", "")
            self.publish(stream, wire.trade(self._format(fill.market), symbol, ts, fill))

    def _agg_trade(self, fills: list[Trade], ts: int) -> None:
        market = fills[0].market
        stream = f"{stream_symbol(market)}@aggTrade"
        if self.wanted(stream):
            symbol = market.replace("-", "")
            self.publish(stream, wire.agg_trade(self._format(market), symbol, ts, fills))

    def _depth(self, change: DepthChange) -> None:
        market = change.market
        lower = stream_symbol(market)
        for fast, stream in ((True, f"{lower}@depth@100ms"), (False, f"{lower}@depth")):
            if self.wanted(stream):
                pending = self._diffs[fast].get(market)
                if pending is None:
                    pending = self._diffs[fast][market] = _Diff(change.seq)
                pending.last = change.seq
                pending.bids.update(change.bids)
                pending.asks.update(change.asks)
        book = self.market_data.depth.books[market]
        top = (book.best_bid(), book.best_ask())
        if top != self._tops.get(market):
            self._tops[market] = top
            self._ticker_dirty.add(market)
            stream = f"{lower}@bookTicker"
            if self.wanted(stream):
                symbol = market.replace("-", "")
                self.publish(stream, wire.book_ticker(self._format(market), symbol, change.seq,
                                                      *top))  # fmt: skip

    # -- the ticker ----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        try:
            self._ticks += 1
            now = _now_ms()
            self._send_diffs(True, now)
            self._send_partials(True)
            if self._ticks % SLOW_TICKS == 0:
                self._send_diffs(False, now)
                self._send_partials(False)
                self._send_tickers(now)
            if self._ticks % KLINE_TICKS == 0:
                self._send_klines(now)
            self.hub.request_flush()
        except Exception:
            log.exception("the Binance streams' ticker failed")
        if self.clients:
            self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)
        else:
            self._diffs = {True: {}, False: {}}

    def _send_diffs(self, fast: bool, now: int) -> None:
        pending, self._diffs[fast] = self._diffs[fast], {}
        suffix = "@depth@100ms" if fast else "@depth"
        for market, diff in pending.items():
            symbol = market.replace("-", "")
            self.publish(f"{symbol.lower()}{suffix}", wire.depth_update(
                self._format(market), symbol, diff.first, diff.last, now,
                sorted(diff.bids.items(), reverse=True), sorted(diff.asks.items())))  # fmt: skip

    def _send_partials(self, fast: bool) -> None:
        suffix = "@100ms" if fast else ""
        books = self.market_data.depth.books
        for market, book in books.items():
            lower = stream_symbol(market)
            for levels in wire.PARTIAL_LEVELS:
                stream = f"{lower}@depth{levels}{suffix}"
                if self.wanted(stream):
                    bids, asks = book.top(levels)
                    self.publish(stream, wire.partial_book(self._format(market), book.seq,
                                                           bids, asks))  # fmt: skip

    def _send_tickers(self, now: int) -> None:
        dirty, self._ticker_dirty = self._ticker_dirty, set()
        minis: list[dict[str, Any]] = []
        fulls: list[dict[str, Any]] = []
        want_minis, want_fulls = self.wanted("!miniTicker@arr"), self.wanted("!ticker@arr")
        for market in self.market_data.formats:
            lower = stream_symbol(market)
            mini_stream, full_stream = f"{lower}@miniTicker", f"{lower}@ticker"
            mini = self.wanted(mini_stream) or (want_minis and market in dirty)
            full = self.wanted(full_stream) or (want_fulls and market in dirty)
            if not (mini or full):
                continue
            window = self.market_data.stats[market].ticker(now)
            last = self.market_data.view.last_price(market)
            symbol, fmt = market.replace("-", ""), self._format(market)
            if mini:
                body = wire.mini_ticker_body(fmt, symbol, now, window, last)
                self.publish(mini_stream, wire.encode(body))
                if market in dirty:
                    minis.append(body)
            if full:
                body = wire.ticker_body(fmt, symbol, now, window, self._top(market, window))
                self.publish(full_stream, wire.encode(body))
                if market in dirty:
                    fulls.append(body)
        if minis and want_minis:
            self.publish("!miniTicker@arr", wire.encode(minis))
        if fulls and want_fulls:
            self.publish("!ticker@arr", wire.encode(fulls))

    def _top(self, market: str, window: Any) -> wire.Top:
        trades = self.market_data.stats[market].trades
        last_qty = trades[-1].quantity if trades else 0
        previous = 0
        if window.trades:
            before = window.first_trade_id - 1
            previous = next((t.price for t in trades if t.trade_id == before), 0)
        book = self.market_data.depth.books[market]
        last = self.market_data.view.last_price(market)
        return wire.Top(last, last_qty, previous, book.best_bid(), book.best_ask())

    def _send_klines(self, now: int) -> None:
        for market, stats in self.market_data.stats.items():
            lower = stream_symbol(market)
            for interval in INTERVALS:
                stream = f"{lower}@kline_{interval}"
                if not self.wanted(stream):
                    continue
                candle = stats.current(interval)
                if candle is None or self._closed_sent.get(stream) == candle.open_time:
                    continue  # no candle yet, or its closing push (x: true) went out
                if candle.close_time < now:
                    self._closed_sent[stream] = candle.open_time
                buys = self._taker_buys.get((market, interval))
                base, quote = (buys[1], buys[2]) if buys and buys[0] == candle.open_time else (0, 0)
                self.publish(stream, wire.kline(self._format(market), market.replace("-", ""),
                                                now, candle, base, quote))  # fmt: skip
