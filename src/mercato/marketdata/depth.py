"""L2 depth with a per-market sequence number, kept exact from the engine's events.

After each applied batch the tracker knows which (market, side, price) levels the batch
may have changed, from the events alone:

- an order that can rest (limit-priced, GTC or GTD) is remembered as
  ``order_id -> (market, side, price)`` when accepted, moved by ``OrderAmended``, and
  forgotten when an ``OrderUpdated`` gives it a final status; each of these touches its
  level, and so do ``OrderTriggered`` (a stop-limit joining the book) and a ``RELEASE``
  transfer naming the order (self-trade prevention by DECREMENT shrinks a resting order
  without any other event);
- a ``Trade`` touches the maker's level at the trade price.

It then reads the engine's visible quantity at exactly those levels and keeps the ones
that differ from its mirror: one update per market per batch that changed its book,
numbered by the market's sequence. O(touched levels), never a scan of the book.

Sequence numbers start at the engine's ``last_seq`` when the tracker is built: a market
has at most one update per batch, hence per command, so after a restart the numbers
still only grow (with a gap, which makes clients resynchronise, as they must).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from typing import NamedTuple

from mercato.core.events import (
    Event,
    MarketUpserted,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
    Transfer,
)
from mercato.core.model import LIMIT_PRICED_TYPES, RELEASE, TERMINAL_STATUSES
from mercato.core.view import view_of
from mercato.port import ExchangeView

RESTING_TIME_IN_FORCE = frozenset({"GTC", "GTD"})

Touched = set[tuple[str, bool, int]]
"""(market, is_bid, price ticks) of the levels a batch may have changed."""


class L2Book:
    """One market's mirror: visible lots per price on each side, prices kept sorted
    ascending (best bid last, best ask first), and the market's depth sequence."""

    __slots__ = ("ask_prices", "asks", "bid_prices", "bids", "seq", "symbol")

    def __init__(self, symbol: str, seq: int) -> None:
        self.symbol = symbol
        self.seq = seq
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_prices: list[int] = []
        self.ask_prices: list[int] = []

    def set(self, is_bid: bool, price: int, qty: int) -> None:
        """Set a level's visible lots; 0 removes it."""
        levels, prices = (self.bids, self.bid_prices) if is_bid else (self.asks, self.ask_prices)
        if qty:
            if price not in levels:
                insort(prices, price)
            levels[price] = qty
        elif levels.pop(price, None) is not None:
            del prices[bisect_left(prices, price)]

    def top(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) of at most ``limit`` levels each, best first."""
        bids = self.bids
        asks = self.asks
        bid_prices = self.bid_prices[-limit:] if limit else []
        return (
            [(p, bids[p]) for p in reversed(bid_prices)],
            [(p, asks[p]) for p in self.ask_prices[:limit]],
        )

    def best_bid(self) -> tuple[int, int] | None:
        if not self.bid_prices:
            return None
        price = self.bid_prices[-1]
        return price, self.bids[price]

    def best_ask(self) -> tuple[int, int] | None:
        if not self.ask_prices:
            return None
        price = self.ask_prices[0]
        return price, self.asks[price]


class DepthChange(NamedTuple):
    """A market's book after one batch: the levels that changed (lots 0 = removed),
    bids best first then asks best first, and the new sequence number."""

    market: str
    seq: int
    ts: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class DepthTracker:
    """Per-market L2 mirrors of an engine, updated batch by batch (see the module doc).

    Build it on the engine the listener will follow (after recovery, before any batch
    it has not seen), then for each applied batch call :meth:`touch` on every event and
    :meth:`commit` once; or :meth:`apply` for a whole list of results."""

    def __init__(self, view: ExchangeView) -> None:
        self.view: ExchangeView = view_of(view)  # tests build it on an Engine
        view = self.view
        self.books: dict[str, L2Book] = {}
        self.orders: dict[int, tuple[str, bool, int]] = {}
        for symbol in view.market_symbols():
            book = self.books[symbol] = L2Book(symbol, view.last_seq)
            bids, asks = view.levels(symbol)
            for price, qty in bids:
                book.set(True, price, qty)
            for price, qty in asks:
                book.set(False, price, qty)
        for order in view.open_orders():
            if order.type in LIMIT_PRICED_TYPES and order.time_in_force in RESTING_TIME_IN_FORCE:
                self.orders[order.order_id] = (order.market, order.side == "BUY", order.price)

    def touch(self, event: Event, touched: Touched) -> None:
        """Note the levels ``event`` may have changed (and follow the resting orders)."""
        if isinstance(event, Trade):
            touched.add((event.market, event.taker_side == "SELL", event.price))
        elif isinstance(event, Transfer):
            if event.reason == RELEASE and event.ref:
                key = self.orders.get(event.ref)
                if key is not None:
                    touched.add(key)
        elif isinstance(event, OrderAccepted):
            if (event.type in LIMIT_PRICED_TYPES
                    and event.time_in_force in RESTING_TIME_IN_FORCE):  # fmt: skip
                key = (event.market, event.side == "BUY", event.price)
                self.orders[event.order_id] = key
                touched.add(key)
        elif isinstance(event, OrderUpdated):
            if event.status in TERMINAL_STATUSES:
                found = self.orders.pop(event.order_id, None)
            else:
                found = self.orders.get(event.order_id)
            if found is not None:
                touched.add(found)
        elif isinstance(event, OrderAmended):
            found = self.orders.get(event.order_id)
            if found is not None:
                touched.add(found)
                moved = (found[0], found[1], event.price)
                self.orders[event.order_id] = moved
                touched.add(moved)
        elif isinstance(event, OrderTriggered):
            found = self.orders.get(event.order_id)
            if found is not None:
                touched.add(found)
        elif isinstance(event, MarketUpserted) and event.spec.symbol not in self.books:
            self.books[event.spec.symbol] = L2Book(event.spec.symbol, self.view.last_seq)

    def commit(self, touched: Touched, ts: int) -> list[DepthChange]:
        """Read the engine at the touched levels; update the mirrors; one change per
        market whose book changed, with its next sequence number."""
        if not touched:
            return []
        level_qty = self.view.level_qty
        books = self.books
        changed: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
        for market, is_bid, price in touched:
            qty = level_qty(market, is_bid, price)
            book = books[market]
            if (book.bids if is_bid else book.asks).get(price, 0) == qty:
                continue
            book.set(is_bid, price, qty)
            sides = changed.get(market)
            if sides is None:
                sides = changed[market] = ([], [])
            sides[0 if is_bid else 1].append((price, qty))
        out = []
        for market, (bids, asks) in changed.items():
            book = books[market]
            book.seq += 1
            bids.sort(reverse=True)
            asks.sort()
            out.append(DepthChange(market, book.seq, ts, bids, asks))
        return out

    def apply(self, events: Iterable[Event], ts: int) -> list[DepthChange]:
        """:meth:`touch` every event, then :meth:`commit` (the events of one batch)."""
        touched: Touched = set()
        for event in events:
            self.touch(event, touched)
        return self.commit(touched, ts)
