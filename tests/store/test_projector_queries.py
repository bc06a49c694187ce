"""Reads of the projection (``mercato.store.queries``) over a projected scenario, against
the engine and plain filtering of the tables in Python. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.core.candles import INTERVALS
from mercato.core.commands import CancelOrder, PlaceOrder
from mercato.store import create_engine, migrate, queries
from mercato.store.queries import Page
from store.test_projector import Run, check_projection, live_projection, scenario

T = TypeVar("T")
DUPLICATE_CLIENT_ID = [
    [PlaceOrder(1, "SOL-USDT", "BUY", "LIMIT", 1, 500, client_order_id="dup")],
    [CancelOrder(1, client_order_id="dup")],
    [PlaceOrder(1, "SOL-USDT", "BUY", "LIMIT", 2, 501, client_order_id="dup")],
    [PlaceOrder(2, "SOL-USDT", "BUY", "LIMIT", 3, 502, client_order_id="dup")],
]


@pytest.fixture
def projected(database_url: str, tmp_path: Path) -> tuple[str, Run, dict[str, list[Any]]]:
    asyncio.run(migrate(database_url))
    run, projector = asyncio.run(
        live_projection(database_url, tmp_path, scenario(11, 900) + DUPLICATE_CLIENT_ID)
    )
    assert projector.error is None
    tables = check_projection(database_url, run)
    return database_url, run, tables


def read(url: str, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def run() -> T:
        db = create_engine(url, sqlite_begin="DEFERRED")  # reads do not queue behind writes
        try:
            async with db.connect() as connection:
                return await body(connection)
        finally:
            await db.dispose()

    return asyncio.run(run())


async def all_pages(fetch: Callable[[int | None], Awaitable[Page[T]]]) -> tuple[list[T], int]:
    """Follow ``next_before`` to the end; returns the items and the number of pages."""
    items: list[T] = []
    before = None
    pages = 0
    while True:
        page = await fetch(before)
        pages += 1
        items += page.items
        if page.next_before is None:
            return items, pages
        before = page.next_before


def test_open_orders_are_the_engines(projected: tuple[str, Run, Any]) -> None:
    url, run, _ = projected
    users = sorted({order.user for order in run.engine.open_orders()})
    assert users

    async def body(c: AsyncConnection) -> None:
        for user in [*users, 999]:
            got = await queries.open_orders(c, user)
            engine = run.engine.open_orders(user)
            assert [(o.order_id, o.status, o.filled, o.price, o.quantity) for o in got] == [
                (o.order_id, o.status, o.filled, o.price, o.quantity) for o in engine
            ]
            assert all(o.is_open and o.user_id == user for o in got)
            for market in ("BTC-USDT", "SOL-USDT"):
                mine = await queries.open_orders(c, user, market=market)
                assert mine == [o for o in got if o.market == market]

    read(url, body)


def test_order_history_pages_and_filters(projected: tuple[str, Run, Any]) -> None:
    url, _, tables = projected
    orders = tables["orders"]
    user = 1
    everything = sorted((o for o in orders if o.user_id == user), key=lambda o: -o.order_id)
    created = sorted({o.created_at for o in everything})
    start, end = created[len(created) // 4], created[len(created) // 2]

    async def body(c: AsyncConnection) -> None:
        items, pages = await all_pages(
            lambda before: queries.order_history(c, user, before=before, limit=37)
        )
        assert [o.order_id for o in items] == [o.order_id for o in everything]
        assert pages == len(everything) // 37 + 1
        assert [dataclasses.astuple(o) for o in items] == [tuple(r) for r in everything]
        cases: list[tuple[dict[str, Any], Callable[[Any], bool]]] = [
            ({"market": "ETH-USDT"}, lambda o: o.market == "ETH-USDT"),
            ({"status": "FILLED"}, lambda o: o.status == "FILLED"),
            ({"status": ["NEW", "CANCELED"]}, lambda o: o.status in ("NEW", "CANCELED")),
            ({"start_time": start}, lambda o: o.created_at >= start),
            ({"end_time": end}, lambda o: o.created_at <= end),
            (
                {"market": "BTC-USDT", "start_time": start, "end_time": end},
                lambda o: o.market == "BTC-USDT" and start <= o.created_at <= end,
            ),
        ]
        for filters, keep in cases:
            expected = [o.order_id for o in everything if keep(o)]
            assert expected, filters
            items, _ = await all_pages(
                lambda before, f=filters: queries.order_history(  # type: ignore[misc]
                    c, user, before=before, limit=25, **f
                )
            )
            assert [o.order_id for o in items] == expected, filters
        last = await queries.order_history(c, user, limit=len(everything))
        assert last.next_before is None and len(last.items) == len(everything)
        with pytest.raises(ValueError):
            await queries.order_history(c, user, limit=0)
        with pytest.raises(ValueError):
            await queries.order_history(c, user, limit=queries.MAX_LIMIT + 1)

    read(url, body)


def test_get_order_is_the_users_own_and_the_newest_client_id(
    projected: tuple[str, Run, Any],
) -> None:
    url, _, tables = projected
    mine = next(o for o in tables["orders"] if o.user_id == 3)
    dups = [o for o in tables["orders"] if o.client_order_id == "dup"]
    assert len(dups) == 3

    async def body(c: AsyncConnection) -> None:
        found = await queries.get_order(c, 3, order_id=mine.order_id)
        assert found is not None and found.order_id == mine.order_id
        assert await queries.get_order(c, 4, order_id=mine.order_id) is None  # not yours
        assert await queries.get_order(c, 3, order_id=10**12) is None
        newest = await queries.get_order(c, 1, client_order_id="dup")
        assert newest is not None
        assert (newest.quantity, newest.price, newest.status) == (2, 501, "NEW")
        other = await queries.get_order(c, 2, client_order_id="dup")
        assert other is not None and other.user_id == 2
        assert await queries.get_order(c, 5, client_order_id="dup") is None
        with pytest.raises(ValueError):
            await queries.get_order(c, 1)
        with pytest.raises(ValueError):
            await queries.get_order(c, 1, order_id=1, client_order_id="dup")

    read(url, body)


def test_fills_and_ledger_pages(projected: tuple[str, Run, Any]) -> None:
    url, _, tables = projected
    user = 2
    fills = sorted((f for f in tables["fills"] if f.user_id == user), key=lambda f: -f.id)
    entries = sorted((e for e in tables["entries"] if e.user_id == user), key=lambda e: -e.id)
    some_order = fills[len(fills) // 2].order_id
    times = sorted({f.ts for f in fills})
    start, end = times[len(times) // 3], times[2 * len(times) // 3]

    async def body(c: AsyncConnection) -> None:
        cases: list[tuple[dict[str, Any], Callable[[Any], bool]]] = [
            ({}, lambda f: True),
            ({"market": "BTC-USDT"}, lambda f: f.market == "BTC-USDT"),
            ({"order_id": some_order}, lambda f: f.order_id == some_order),
            ({"start_time": start, "end_time": end}, lambda f: start <= f.ts <= end),
        ]
        for filters, keep in cases:
            items, _ = await all_pages(
                lambda before, f=filters: queries.user_fills(  # type: ignore[misc]
                    c, user, before=before, limit=29, **f
                )
            )
            assert [f.id for f in items] == [f.id for f in fills if keep(f)], filters
            assert all(f.user_id == user for f in items)
        for asset in (None, "USDT", "SOL"):
            items, _ = await all_pages(
                lambda before, a=asset: queries.ledger_history(  # type: ignore[misc]
                    c, user, asset=a, before=before, limit=101
                )
            )
            expected = [e for e in entries if asset is None or e.asset == asset]
            assert [e.id for e in items] == [e.id for e in expected]
            assert [(e.delta, e.balance_after) for e in items] == [
                (e.delta, e.balance_after) for e in expected
            ]

    read(url, body)


def test_market_trades_candles_and_cursor(projected: tuple[str, Run, Any]) -> None:
    url, run, tables = projected

    async def body(c: AsyncConnection) -> None:
        for market in ("BTC-USDT", "SOL-USDT"):
            tape = sorted(
                (t for t in tables["trades"] if t.market == market), key=lambda t: -t.trade_id
            )
            got = await queries.market_trades(c, market, limit=10)
            assert [t.trade_id for t in got] == [t.trade_id for t in tape[:10]]
            assert all(type(t.price) is int for t in got)
        assert await queries.market_trades(c, "NOPE-USDT") == []

        for interval in INTERVALS:
            rows = sorted(
                (k for k in tables["candles"] if k.market == "BTC-USDT" and k.interval == interval),
                key=lambda k: k.open_time,
            )
            opens = [k.open_time for k in rows]
            assert opens
            every = await queries.market_candles(c, "BTC-USDT", interval)
            assert [k.open_time for k in every] == opens
            assert [(k.volume, k.quote_volume) for k in every] == [
                (int(k.volume), int(k.quote_volume)) for k in rows
            ]
            latest = await queries.market_candles(c, "BTC-USDT", interval, limit=2)
            assert [k.open_time for k in latest] == opens[-2:]
            first = await queries.market_candles(
                c, "BTC-USDT", interval, start_time=opens[0], limit=1
            )
            assert [k.open_time for k in first] == opens[:1]
            middle = opens[len(opens) // 2]
            window = await queries.market_candles(
                c, "BTC-USDT", interval, start_time=opens[0] + 1, end_time=middle
            )
            assert [k.open_time for k in window] == [t for t in opens if opens[0] < t <= middle]
            upto = await queries.market_candles(c, "BTC-USDT", interval, end_time=middle)
            assert [k.open_time for k in upto] == [t for t in opens if t <= middle]
        assert len({k.interval for k in tables["candles"]}) == len(INTERVALS)
        with pytest.raises(ValueError):
            await queries.market_candles(c, "BTC-USDT", "2m")

        assert await queries.projected_seq(c) == run.last_seq
        assert await queries.projected_seq(c, "other") == 0

    read(url, body)
