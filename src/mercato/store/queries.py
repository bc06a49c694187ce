"""Reads of the trading projection (the tables :mod:`mercato.store.projector` writes), for
the REST layer: a user's orders, fills and ledger entries, a market's trades and candles.

Everything is the engine's integers (ticks, lots, atoms, ids, ms); formatting them as
decimal strings is the API's job. Every function takes an open ``AsyncConnection``, so a
caller can run several reads in one transaction (one consistent snapshot). On SQLite use a
read engine, ``create_engine(url, sqlite_begin="DEFERRED")``: the default ``BEGIN
IMMEDIATE`` would queue every read behind the projector's write transactions.

The tables are as fresh as the projector's cursor: after a command of its own, a caller
awaits ``Projector.wait_for(result.seq)`` before reading (read-your-writes).

Paginated reads return a :class:`Page`, newest first, keyed by an id: pass
``page.next_before`` as ``before`` to get the next (older) page; it is None on the last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.core.candles import INTERVALS, Candle
from mercato.core.positions import Position
from mercato.store.tables import (
    OPEN_ORDER_STATUSES,
    candles,
    fills,
    ledger_entries,
    orders,
    positions,
    projection_cursor,
    trades,
)

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "FillRecord",
    "LedgerEntryRecord",
    "OrderRecord",
    "Page",
    "TradeRecord",
    "get_order",
    "ledger_history",
    "market_candles",
    "market_trades",
    "open_orders",
    "order_history",
    "projected_seq",
    "user_fills",
    "user_positions",
]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class OrderRecord:
    """A row of ``orders`` (docs/store.md): prices in ticks, quantities in lots, amounts in
    atoms, times in ms. ``fee_asset`` is None until the first fill; the average fill price
    is ``filled_quote / filled_base`` (in the assets' atoms)."""

    order_id: int
    user_id: int
    market: str
    side: str
    type: str
    time_in_force: str
    client_order_id: str
    price: int
    stop_price: int
    quantity: int
    iceberg_quantity: int
    quote_quantity: int
    expire_at: int
    stp: str
    status: str
    filled: int
    filled_base: int
    filled_quote: int
    fee: int
    fee_asset: str | None
    reason: str
    created_at: int
    updated_at: int
    triggered_at: int | None
    created_seq: int
    updated_seq: int

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ORDER_STATUSES


@dataclasses.dataclass(frozen=True, slots=True)
class TradeRecord:
    """A row of ``trades``: the public tape."""

    trade_id: int
    market: str
    price: int
    quantity: int
    base_amount: int
    quote_amount: int
    taker_side: str
    maker_order_id: int
    taker_order_id: int
    ts: int
    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class FillRecord:
    """A row of ``fills``: one user's side of a trade (``role`` MAKER or TAKER)."""

    id: int
    user_id: int
    trade_id: int
    order_id: int
    market: str
    side: str
    role: str
    price: int
    quantity: int
    base_amount: int
    quote_amount: int
    fee: int
    fee_asset: str
    ts: int
    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerEntryRecord:
    """A row of ``ledger_entries``: ``delta`` atoms on the user's ``account`` (available or
    locked) of ``asset``, leaving ``balance_after``."""

    id: int
    user_id: int
    asset: str
    account: str
    delta: int
    balance_after: int
    reason: str
    ref: int
    seq: int
    ts: int


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    """One page, newest first; ``next_before`` is the ``before`` of the next page, or
    None when there is no older row."""

    items: list[_T]
    next_before: int | None


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
    return limit


def _statuses(status: str | Iterable[str]) -> list[str]:
    return [status] if isinstance(status, str) else list(status)


def _within(query: Any, column: Any, start: int | None, end: int | None) -> Any:
    """``query`` limited to ``start <= column <= end`` (either bound optional)."""
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column <= end)
    return query


async def _page(
    connection: AsyncConnection,
    query: sa.Select[Any],
    key: sa.Column[int],
    make: type[_T],
    before: int | None,
    limit: int,
) -> Page[_T]:
    """Rows of ``query`` with ``key < before``, newest first, one page of ``limit``."""
    limit = _limit(limit)
    if before is not None:
        query = query.where(key < before)
    rows = (await connection.execute(query.order_by(key.desc()).limit(limit + 1))).mappings()
    items = [make(**row) for row in rows]
    if len(items) > limit:
        items.pop()
        return Page(items, getattr(items[-1], key.name))
    return Page(items, None)


async def open_orders(
    connection: AsyncConnection, user_id: int, *, market: str | None = None
) -> list[OrderRecord]:
    """The user's open orders (UNTRIGGERED, NEW, PARTIALLY_FILLED), oldest first."""
    query = sa.select(orders).where(
        orders.c.status.in_(OPEN_ORDER_STATUSES), orders.c.user_id == user_id
    )
    if market is not None:
        query = query.where(orders.c.market == market)
    result = await connection.execute(query.order_by(orders.c.order_id))
    return [OrderRecord(**row) for row in result.mappings()]


async def order_history(
    connection: AsyncConnection,
    user_id: int,
    *,
    market: str | None = None,
    status: str | Iterable[str] | None = None,
    start_time: int | None = None,
    end_time: int | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[OrderRecord]:
    """The user's orders, open and finished, newest (highest order id) first; optionally
    of one ``market``, with a ``status`` (or any of several), created within
    ``[start_time, end_time]`` (ms, inclusive). ``before``: an order id, exclusive."""
    query = sa.select(orders).where(orders.c.user_id == user_id)
    if market is not None:
        query = query.where(orders.c.market == market)
    if status is not None:
        query = query.where(orders.c.status.in_(_statuses(status)))
    query = _within(query, orders.c.created_at, start_time, end_time)
    return await _page(connection, query, orders.c.order_id, OrderRecord, before, limit)


async def get_order(
    connection: AsyncConnection,
    user_id: int,
    *,
    order_id: int | None = None,
    client_order_id: str | None = None,
) -> OrderRecord | None:
    """One of the user's orders by ``order_id`` or ``client_order_id`` (give exactly one);
    None if there is none, or it is another user's. A client order id is unique among a
    user's open orders only: of several orders with it, the newest is returned."""
    if (order_id is None) == (client_order_id is None):
        raise ValueError("give exactly one of order_id and client_order_id")
    query = sa.select(orders).where(orders.c.user_id == user_id)
    if order_id is not None:
        query = query.where(orders.c.order_id == order_id)
    else:
        query = query.where(orders.c.client_order_id == client_order_id)
    query = query.order_by(orders.c.order_id.desc()).limit(1)
    row = (await connection.execute(query)).mappings().first()
    return OrderRecord(**row) if row is not None else None


async def user_fills(
    connection: AsyncConnection,
    user_id: int,
    *,
    market: str | None = None,
    order_id: int | None = None,
    start_time: int | None = None,
    end_time: int | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[FillRecord]:
    """The user's fills, newest first; optionally of one ``market`` or one ``order_id``,
    within ``[start_time, end_time]`` (ms, inclusive). ``before``: a fill id, exclusive."""
    query = sa.select(fills).where(fills.c.user_id == user_id)
    if market is not None:
        query = query.where(fills.c.market == market)
    if order_id is not None:
        query = query.where(fills.c.order_id == order_id)
    query = _within(query, fills.c.ts, start_time, end_time)
    return await _page(connection, query, fills.c.id, FillRecord, before, limit)


async def ledger_history(
    connection: AsyncConnection,
    user_id: int,
    *,
    asset: str | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[LedgerEntryRecord]:
    """The user's ledger entries, newest first; optionally of one ``asset``.
    ``before``: an entry id, exclusive."""
    query = sa.select(ledger_entries).where(ledger_entries.c.user_id == user_id)
    if asset is not None:
        query = query.where(ledger_entries.c.asset == asset)
    return await _page(connection, query, ledger_entries.c.id, LedgerEntryRecord, before, limit)


async def user_positions(connection: AsyncConnection, user: int) -> dict[str, Position]:
    """The user's position in every market they have traded, by market name."""
    query = (
        sa.select(positions.c.market, positions.c.quantity, positions.c.cost, positions.c.realised)
        .where(positions.c.user_id == user)
        .order_by(positions.c.market)
    )
    return {
        market: Position(quantity, int(cost), int(realised))
        for market, quantity, cost, realised in await connection.execute(query)
    }


async def market_trades(
    connection: AsyncConnection, market: str, *, limit: int = DEFAULT_LIMIT
) -> list[TradeRecord]:
    """The market's latest ``limit`` trades, newest first."""
    query = (
        sa.select(trades)
        .where(trades.c.market == market)
        .order_by(trades.c.trade_id.desc())
        .limit(_limit(limit))
    )
    return [TradeRecord(**row) for row in (await connection.execute(query)).mappings()]


async def market_candles(
    connection: AsyncConnection,
    market: str,
    interval: str,
    *,
    start_time: int | None = None,
    end_time: int | None = None,
    limit: int = 500,
) -> list[Candle]:
    """The market's ``interval`` candles opening within ``[start_time, end_time]`` (ms,
    inclusive), oldest first: the first ``limit`` from ``start_time`` if it is given, else
    the latest ``limit`` up to ``end_time``. Periods without trades have no candle."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    limit = _limit(limit)
    query = sa.select(candles).where(candles.c.market == market, candles.c.interval == interval)
    query = _within(query, candles.c.open_time, start_time, end_time)
    if start_time is not None:
        query = query.order_by(candles.c.open_time).limit(limit)
    else:
        query = query.order_by(candles.c.open_time.desc()).limit(limit)
    rows = [_candle(row) for row in await connection.execute(query)]
    if start_time is None:
        rows.reverse()
    return rows


def _candle(row: sa.Row[Any]) -> Candle:
    return Candle(
        row.market, row.interval, row.open_time, row.open, row.high, row.low, row.close,
        int(row.volume), int(row.quote_volume), row.trades, row.first_trade_id,
        row.last_trade_id,
    )  # fmt: skip


async def projected_seq(connection: AsyncConnection, name: str = "sql") -> int:
    """The projection's cursor as committed (0 if it never ran): the tables hold the
    effects of every command up to this seq and of none after it."""
    query = sa.select(projection_cursor.c.last_seq).where(projection_cursor.c.name == name)
    return (await connection.execute(query)).scalar_one_or_none() or 0
