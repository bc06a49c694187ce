"""``MarketData``: the engine listener behind the public market data and the WebSocket
channels, and the queries the REST routes answer from.

It is called synchronously on the event-loop thread after each durable batch is applied
(``ExchangePort.subscribe``), before the batch's results are released. It does only
in-memory work proportional to the batch: the depth mirror (exact, O(touched levels)),
recent trades, candles and tickers, and *enqueuing* encoded messages on the hub. Sockets
are written by the hub's per-client writers; a slow client never slows the engine.

Public channel payloads (docs/websocket.md) are built here, in decimal strings: prices
are ticks x ``tick_size``, quantities lots x ``step_size``, amounts atoms at the asset's
ledger decimals; the private ones (orders, fills, balances) in :mod:`mercato.wire.native`,
with REST's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.candles import INTERVALS, Candle
from mercato.core.events import (
    AssetUpserted,
    MarketUpserted,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
    Transfer,
)
from mercato.core.model import LOCKED
from mercato.marketdata.depth import DepthChange, DepthTracker, Touched
from mercato.marketdata.history import recent_history
from mercato.marketdata.hub import Client, Hub
from mercato.marketdata.stats import MarketStats, TickerStats
from mercato.port import AppliedBatch, ExchangeView
from mercato.wire.decimals import MarketFormat
from mercato.wire.native import balance_row, ws_fill, ws_open_order, ws_order_event

log = logging.getLogger(__name__)

MAX_DEPTH = 5000
"""Most levels per side in a snapshot (REST ``depth`` and the WebSocket snapshot)."""
STATS_INTERVAL = 0.25
"""Ticker and candle channels publish a market at most this often (seconds)."""
PUBLIC_KINDS = ("depth", "trades", "ticker", "candles")
PRIVATE_CHANNELS = ("orders", "fills", "balances")

_encode = msgspec.json.Encoder().encode
_PERCENT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_CENT = Decimal("0.01")


def encode(message: Any) -> str:
    """A message as the JSON text sent on the wire."""
    return _encode(message).decode()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Pending:
    """Depth changes of one market not yet published (merged: the last value wins)."""

    __slots__ = ("asks", "bids", "first", "last", "ts")

    def __init__(self, first: int) -> None:
        self.first = first
        self.last = first
        self.ts = 0
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class MarketData:
    """Market data of one engine, read through its ``view``. ``on_batch`` is the listener
    of the port's durable batches."""

    def __init__(self, view: ExchangeView, hub: Hub | None = None) -> None:
        self.view = view
        self.hub = hub if hub is not None else Hub()
        self.depth = DepthTracker(view)
        self.decimals: dict[str, int] = {s: a.decimals for s, a in view.assets().items()}
        self.stats: dict[str, MarketStats] = {}
        self.formats: dict[str, MarketFormat] = {}
        for symbol in view.market_symbols():
            self._add_market(symbol)
        self._pending: dict[str, _Pending] = {}
        self._stats_dirty: set[str] = set()
        self._last_stats = 0.0
        self.hub.before_flush.append(self._flush)
        self.batches = 0
        self.followers: list[Callable[[AppliedBatch, list[DepthChange]], None]] = []
        """Called after each batch with its depth changes (other dialects' streams)."""

    def _add_market(self, symbol: str) -> None:
        spec, rules = self.view.spec(symbol), self.view.rules(symbol)
        assert spec is not None and rules is not None, f"no market {symbol}"
        self.formats[symbol] = MarketFormat.of(spec, rules, self.decimals)
        if symbol not in self.stats:
            self.stats[symbol] = MarketStats(symbol)

    # -- the listener -------------------------------------------------------------------

    def on_batch(self, batch: AppliedBatch) -> None:
        """Fold one applied batch in and queue what its subscribers must see."""
        self.batches += 1
        hub = self.hub
        subscribers = hub.subscribers
        private = hub.private_users
        depth = self.depth
        touch = depth.touch
        touched: Touched = set()
        balances: set[tuple[int, str]] = set()
        seq = batch.seq0 - 1
        for result in batch.results:
            seq += 1
            for event in result.events:
                touch(event, touched)
                kind = type(event)
                if kind is Trade:
                    self._trade(event, seq, subscribers, private, balances)  # type: ignore[arg-type]
                elif kind is Transfer:
                    if private:
                        assert isinstance(event, Transfer)
                        user = event.debit_user
                        if user in private and event.debit_kind <= LOCKED:
                            balances.add((user, event.asset))
                        user = event.credit_user
                        if user in private and event.credit_kind <= LOCKED:
                            balances.add((user, event.asset))
                elif kind in _ORDER_EVENTS:
                    user = event.user  # type: ignore[union-attr]
                    if user in private and f"orders:{user}" in subscribers:
                        fmt = self.formats.get(event.market)  # type: ignore[union-attr]
                        hub.publish(f"orders:{user}", encode(ws_order_event(fmt, event, seq,
                                                                            batch.ts)))  # fmt: skip
                elif kind is MarketUpserted:
                    assert isinstance(event, MarketUpserted)
                    self._add_market(event.spec.symbol)
                elif kind is AssetUpserted:
                    assert isinstance(event, AssetUpserted)
                    self.decimals[event.symbol] = event.decimals
        changes = depth.commit(touched, batch.ts) if touched else []
        for change in changes:
            if f"depth.{change.market}" in subscribers:
                self._pend(change)
        for follower in self.followers:
            follower(batch, changes)
        if balances:
            self._publish_balances(balances, batch.last_seq, batch.ts)
        if self._pending or self._stats_dirty:
            hub.request_flush()

    def _trade(self, trade: Trade, seq: int, subscribers: dict[str, Any],
               private: dict[int, int], balances: set[tuple[int, str]]) -> None:  # fmt: skip
        market = trade.market
        self.stats[market].add(trade)
        self._stats_dirty.add(market)
        channel = f"trades.{market}"
        if channel in subscribers:
            self.hub.publish(channel, encode(self._trade_message(trade, channel)))
        if private:
            for user, maker in ((trade.maker_user, True), (trade.taker_user, False)):
                if user in private:
                    balances.add((user, trade.base))
                    balances.add((user, trade.quote))
                    if f"fills:{user}" in subscribers:
                        fill = ws_fill(self.formats[trade.market], trade, maker, seq)
                        self.hub.publish(f"fills:{user}", encode(fill))

    def _pend(self, change: DepthChange) -> None:
        pending = self._pending.get(change.market)
        if pending is None:
            pending = self._pending[change.market] = _Pending(change.seq)
        pending.last = change.seq
        pending.ts = change.ts
        for price, qty in change.bids:
            pending.bids[price] = qty
        for price, qty in change.asks:
            pending.asks[price] = qty

    def _flush(self) -> None:
        """Before the hub wakes the writers: publish merged depth updates, and (at most
        every ``STATS_INTERVAL``) tickers and current candles of markets that traded."""
        if self._pending:
            pending, self._pending = self._pending, {}
            for market, update in pending.items():
                channel = f"depth.{market}"
                if channel in self.hub.subscribers:
                    self.hub.publish(channel, encode(self._depth_update(market, update)))
        if self._stats_dirty:
            now = time.monotonic()
            wait = self._last_stats + STATS_INTERVAL - now
            if wait > 0:
                # Not yet: the hub flushes again no later than then.
                self.hub.flush_after(wait)
                return
            self._last_stats = now
            dirty, self._stats_dirty = self._stats_dirty, set()
            now_ms = _now_ms()
            for market in dirty:
                self.publish_stats(market, now_ms)

    def publish_stats(self, market: str, now_ms: int) -> None:
        channel = f"ticker.{market}"
        if channel in self.hub.subscribers:
            self.hub.publish(channel, encode({"channel": channel, "type": "ticker",
                                              **self.ticker(market, now_ms)}))  # fmt: skip
        stats = self.stats[market]
        for interval in INTERVALS:
            channel = f"candles.{market}.{interval}"
            if channel in self.hub.subscribers:
                candle = stats.current(interval)
                if candle is not None:
                    self.hub.publish(channel, encode(self._candle_message(candle, channel)))

    # -- message bodies ---------------------------------------------------------------------

    def _trade_message(self, trade: Trade, channel: str) -> dict[str, Any]:
        return {"channel": channel, "type": "trade", **self.trade_row(trade)}

    def trade_row(self, trade: Trade) -> dict[str, Any]:
        fmt = self.formats[trade.market]
        return {
            "trade_id": trade.trade_id,
            "price": fmt.price(trade.price),
            "quantity": fmt.qty(trade.quantity),
            "quote_amount": fmt.quote_amount(trade.quote_amount),
            "taker_side": trade.taker_side,
            "time": trade.ts,
        }

    def _publish_balances(self, touched: set[tuple[int, str]], seq: int, ts: int) -> None:
        subscribers = self.hub.subscribers
        balance = self.view.balance
        for user, asset in sorted(touched):
            channel = f"balances:{user}"
            if channel in subscribers:
                self.hub.publish(channel, encode(
                    {"channel": "balances", "type": "balance", "seq": seq, "ts": ts,
                     **self.balance_row(asset, *balance(user, asset))}))  # fmt: skip

    def balance_row(self, asset: str, available: int, locked: int) -> dict[str, Any]:
        return balance_row(asset, available, locked, self.decimals[asset])

    def _depth_update(self, market: str, update: _Pending) -> dict[str, Any]:
        fmt = self.formats[market]
        price, qty = fmt.price, fmt.qty
        return {
            "channel": f"depth.{market}", "type": "update",
            "first_seq": update.first, "last_seq": update.last, "ts": update.ts,
            "bids": [[price(p), qty(q)] for p, q in sorted(update.bids.items(), reverse=True)],
            "asks": [[price(p), qty(q)] for p, q in sorted(update.asks.items())],
        }  # fmt: skip

    def _candle_message(self, candle: Candle, channel: str) -> dict[str, Any]:
        return {"channel": channel, "type": "candle", **self.candle_row(candle)}

    def candle_row(self, candle: Candle) -> dict[str, Any]:
        fmt = self.formats[candle.market]
        return {
            "open_time": candle.open_time, "close_time": candle.close_time,
            "open": fmt.price(candle.open), "high": fmt.price(candle.high),
            "low": fmt.price(candle.low), "close": fmt.price(candle.close),
            "volume": fmt.base_amount(candle.volume),
            "quote_volume": fmt.quote_amount(candle.quote_volume), "trades": candle.trades,
        }  # fmt: skip

    # -- queries (REST, and the first message of a subscription) ------------------------------

    def snapshot(self, market: str, limit: int) -> dict[str, Any]:
        """The mirror's best ``limit`` levels per side and the sequence they are at."""
        book = self.depth.books[market]
        fmt = self.formats[market]
        price, qty = fmt.price, fmt.qty
        bids, asks = book.top(limit)
        return {"market": market, "seq": book.seq, "ts": _now_ms(),
                "bids": [[price(p), qty(q)] for p, q in bids],
                "asks": [[price(p), qty(q)] for p, q in asks]}  # fmt: skip

    def recent_trades(self, market: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` trades, oldest first."""
        trades = self.stats[market].trades
        start = max(0, len(trades) - limit)
        row = self.trade_row
        return [row(trades[i]) for i in range(start, len(trades))]

    def ticker(self, market: str, now_ms: int) -> dict[str, Any]:
        stats: TickerStats = self.stats[market].ticker(now_ms)
        fmt = self.formats[market]
        book = self.depth.books[market]
        last = self.view.last_price(market)
        bid, ask = book.best_bid(), book.best_ask()
        traded = stats.trades > 0
        change = stats.close - stats.open if traded else 0
        return {
            "market": market, "open_time": stats.open_time, "close_time": stats.close_time,
            "open": fmt.price(stats.open) if traded else None,
            "high": fmt.price(stats.high) if traded else None,
            "low": fmt.price(stats.low) if traded else None,
            "last": fmt.price(last) if last else None,
            "change": (("-" if change < 0 else "") + fmt.price(abs(change))) if traded else None,
            "change_percent": _percent(change, stats.open) if traded else None,
            "volume": fmt.base_amount(stats.volume),
            "quote_volume": fmt.quote_amount(stats.quote_volume),
            "trades": stats.trades,
            "first_trade_id": stats.first_trade_id or None,
            "last_trade_id": stats.last_trade_id or None,
            "best_bid": fmt.price(bid[0]) if bid else None,
            "best_bid_qty": fmt.qty(bid[1]) if bid else None,
            "best_ask": fmt.price(ask[0]) if ask else None,
            "best_ask_qty": fmt.qty(ask[1]) if ask else None,
        }  # fmt: skip

    def memory_candles(self, market: str, interval: str) -> list[Candle]:
        """The recent candles of ``interval`` held in memory (time order)."""
        return list(self.stats[market].candles[interval])

    # -- subscriptions ------------------------------------------------------------------------

    def initial_messages(self, client: Client, channel: str) -> Iterable[str]:
        """What a new subscriber of ``channel`` gets first (after the acknowledgement)."""
        kind, _, rest = channel.partition(".")
        if kind == "depth":
            # Publish what is pending first, so the snapshot's seq is exactly where the
            # next update starts (first_seq == seq + 1).
            pending = self._pending.pop(rest, None)
            if pending is not None:
                self.hub.publish(channel, encode(self._depth_update(rest, pending)))
            yield encode({"channel": channel, "type": "snapshot",
                          **self.snapshot(rest, MAX_DEPTH)})  # fmt: skip
        elif kind == "ticker":
            yield encode({"channel": channel, "type": "ticker", **self.ticker(rest, _now_ms())})
        elif kind == "candles":
            market, _, interval = rest.rpartition(".")
            candle = self.stats[market].current(interval)
            if candle is not None:
                yield encode(self._candle_message(candle, channel))
        elif channel == "orders":
            formats = self.formats
            opened = self.view.open_orders(client.user)
            orders = [ws_open_order(formats[o.market], o) for o in opened]
            yield encode({"channel": "orders", "type": "snapshot", "seq": self.view.last_seq,
                          "orders": orders})  # fmt: skip
        elif channel == "balances":
            # Every asset the exchange lists, zeros included, as REST /balances answers:
            # the engine keeps no rows for assets a user never held.
            balance = self.view.balance
            rows = [self.balance_row(a, *balance(client.user, a)) for a in sorted(self.decimals)]
            yield encode({"channel": "balances", "type": "snapshot",
                          "seq": self.view.last_seq, "balances": rows})  # fmt: skip

    def channel_error(self, channel: str) -> tuple[str, str] | None:
        """Why ``channel`` cannot be subscribed to, as (code, message), or None."""
        if channel in PRIVATE_CHANNELS:
            return None
        kind, dot, rest = channel.partition(".")
        if not dot or kind not in PUBLIC_KINDS:
            return ("UNKNOWN_CHANNEL", f"no channel {channel!r}: use depth.<market>, "
                    "trades.<market>, ticker.<market>, candles.<market>.<interval>, "
                    "orders, fills or balances")  # fmt: skip
        market = rest
        if kind == "candles":
            market, _, interval = rest.rpartition(".")
            if interval not in INTERVALS:
                return ("INVALID_REQUEST", f"{channel!r}: interval must be one of "
                        + ", ".join(INTERVALS))  # fmt: skip
        if not self.view.has_market(market):
            return ("UNKNOWN_MARKET", f"market {market!r} does not exist")
        return None

    # -- history ----------------------------------------------------------------------------

    def seed(self, market: str, trades: list[Trade], candles: dict[str, list[Candle]]) -> None:
        """Start ``market`` from stored history (see mercato.marketdata.history)."""
        if market in self.stats:
            self.stats[market].seed(trades, candles)

    async def load_history(self, db: AsyncEngine) -> None:
        """Seed the recent trades, candles and so the 24 h tickers from the SQL projection.
        Call it before any trading command is applied, once the projection has caught up
        with the journal; a store without the tables only logs a warning."""
        try:
            history = await recent_history(db, self.view)
        except Exception as error:
            log.warning("market data starts without history: %s", error)
            return
        for market, (trades, candles) in history.items():
            self.seed(market, trades, candles)


_ORDER_EVENTS = frozenset({OrderAccepted, OrderUpdated, OrderAmended, OrderTriggered})


def _percent(change: int, base: int) -> str:
    """``change / base`` in percent, rounded half-even to 0.01 (prices in the same unit)."""
    value = _PERCENT.divide(_PERCENT.multiply(Decimal(change), Decimal(100)), Decimal(base))
    return f"{value.quantize(_CENT, rounding=ROUND_HALF_EVEN):f}"
