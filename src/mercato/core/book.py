"""Orders and the per-market order book (price levels, FIFO queues, stop orders).

A side keeps its price levels in a dict and their keys in a sorted list whose *last*
element is the best price (bids: the price; asks: minus the price), so the best level
is ``keys[-1]`` and removing it is ``keys.pop()``. Each level is a FIFO deque. An order
that leaves the book mid-queue (cancel, expiry, re-queue) is only flagged
``in_book = False`` and skipped when it reaches the head: O(1) cancels. A level whose
last live order leaves is dropped at once, so dead entries never outlive their level.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

from mercato.core.model import (
    MarketRules,
    MarketSpec,
    MarketStatus,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)


class Order:
    """An open order (resting, in matching, or an untriggered stop).

    ``quantity`` and ``filled`` in lots, ``price`` and ``stop_price`` in ticks. ``display``
    is the lots visible in the book (the current iceberg slice, else the remainder).
    ``reserved`` is the atoms locked for it: quote for buys, base for sells. For a market
    order ``price`` is its protection limit, set at arrival. ``queued`` orders the
    queue of a level (FIFO). A plain class rather than a struct: mypyc compiles it to a
    native class, which makes the matching loop twice as fast.
    """

    __slots__ = (
        "client_order_id",
        "display",
        "expire_at",
        "filled",
        "iceberg_quantity",
        "in_book",
        "market",
        "order_id",
        "price",
        "quantity",
        "queued",
        "quote_quantity",
        "reserved",
        "side",
        "status",
        "stop_price",
        "stp",
        "time_in_force",
        "ts",
        "type",
        "user",
    )

    def __init__(
        self,
        order_id: int,
        user: int,
        market: str,
        side: Side,
        type: OrderType,
        quantity: int,
        price: int,
        time_in_force: TimeInForce,
        client_order_id: str,
        quote_quantity: int,
        stop_price: int,
        expire_at: int,
        iceberg_quantity: int,
        stp: StpMode,
        status: OrderStatus,
        ts: int,
        filled: int = 0,
        display: int = 0,
        reserved: int = 0,
        in_book: bool = False,
        queued: int = 0,
    ) -> None:
        self.order_id = order_id
        self.user = user
        self.market = market
        self.side = side
        self.type = type
        self.quantity = quantity
        self.price = price
        self.time_in_force = time_in_force
        self.client_order_id = client_order_id
        self.quote_quantity = quote_quantity
        self.stop_price = stop_price
        self.expire_at = expire_at
        self.iceberg_quantity = iceberg_quantity
        self.stp = stp
        self.status = status
        self.ts = ts
        self.filled = filled
        self.display = display
        self.reserved = reserved
        self.in_book = in_book
        self.queued = queued

    def as_list(self) -> list[object]:
        """All fields in constructor order: ``Order(*order.as_list())`` is a copy."""
        return [
            self.order_id,
            self.user,
            self.market,
            self.side,
            self.type,
            self.quantity,
            self.price,
            self.time_in_force,
            self.client_order_id,
            self.quote_quantity,
            self.stop_price,
            self.expire_at,
            self.iceberg_quantity,
            self.stp,
            self.status,
            self.ts,
            self.filled,
            self.display,
            self.reserved,
            self.in_book,
            self.queued,
        ]

    def copy(self) -> Order:
        return Order(*self.as_list())  # type: ignore[arg-type]


class Level:
    """One price level: live orders in time priority and their visible total."""

    __slots__ = ("live", "orders", "qty")

    def __init__(self) -> None:
        self.orders: deque[Order] = deque()
        self.qty = 0
        self.live = 0


class BookSide:
    __slots__ = ("is_bid", "keys", "levels", "queued")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.queued = 0
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def best(self) -> int:
        """The best price, or 0 when the side is empty."""
        if not self.keys:
            return 0
        key = self.keys[-1]
        return key if self.is_bid else -key

    def next_queued(self) -> int:
        self.queued += 1
        return self.queued

    def add(self, order: Order) -> None:
        """Queue ``order`` at the back of its price level."""
        self.queued += 1
        order.queued = self.queued
        price = order.price
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level()
            insort(self.keys, price if self.is_bid else -price)
        level.orders.append(order)
        level.qty += order.display
        level.live += 1
        order.in_book = True

    def remove(self, order: Order) -> None:
        """Take ``order`` out of the book wherever it stands in its queue."""
        order.in_book = False
        price = order.price
        level = self.levels[price]
        level.qty -= order.display
        level.live -= 1
        if level.live == 0:
            self.drop_level(price)

    def drop_level(self, price: int) -> None:
        del self.levels[price]
        keys = self.keys
        key = price if self.is_bid else -price
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def prices_best_first(self) -> list[int]:
        keys = reversed(self.keys)
        return [k for k in keys] if self.is_bid else [-k for k in keys]

    def live_orders(self, price: int) -> list[Order]:
        return [o for o in self.levels[price].orders if o.in_book]

    def depth(self, limit: int) -> list[tuple[int, int]]:
        """(price, visible quantity) of the best ``limit`` levels."""
        return [(p, self.levels[p].qty) for p in self.prices_best_first()[:limit]]


class MarketState:
    """Everything the engine keeps per market.

    The market's rules are also copied into plain attributes by :meth:`configure`: the
    matching path reads them on every order, and native attributes are much cheaper to
    read than fields of the msgspec structs ``spec`` and ``rules``.
    """

    __slots__ = (
        "allowed_stp",
        "asks",
        "base",
        "bids",
        "default_stp",
        "last_price",
        "lot_atoms",
        "maker_fee",
        "max_lots",
        "min_lots",
        "min_notional",
        "notional_unit",
        "protection_bps",
        "quote",
        "rules",
        "spec",
        "status",
        "stops_above",
        "stops_below",
        "symbol",
        "taker_fee",
    )

    def __init__(self, spec: MarketSpec, rules: MarketRules) -> None:
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.last_price = 0
        # Untriggered stops: heaps of (stop_price, order_id) that fire when the last trade
        # price rises to the stop (above) and of (-stop_price, order_id) that fire when it
        # falls to it (below).
        self.stops_above: list[tuple[int, int]] = []
        self.stops_below: list[tuple[int, int]] = []
        self.configure(spec, rules)

    def configure(self, spec: MarketSpec, rules: MarketRules) -> None:
        self.spec = spec
        self.rules = rules
        self.status: MarketStatus = spec.status
        self.symbol = spec.symbol
        self.base = spec.base
        self.quote = spec.quote
        self.default_stp: StpMode = spec.default_stp
        self.allowed_stp: tuple[StpMode, ...] = spec.allowed_stp
        self.protection_bps = spec.protection_bps
        self.lot_atoms = rules.lot_atoms
        self.notional_unit = rules.notional_unit
        self.min_lots = rules.min_lots
        self.max_lots = rules.max_lots
        self.min_notional = rules.min_notional
        self.maker_fee = rules.maker_fee
        self.taker_fee = rules.taker_fee
