"""Market data history from the SQL projection (``trades`` and ``candles``, written by
:mod:`mercato.store.projector`): the recent trades and candles that seed memory at start,
and older candles for ``GET /candles``. Read-only; the projector owns the tables."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.candles import INTERVALS, Candle
from mercato.core.events import Trade
from mercato.marketdata.stats import CANDLES_KEPT, RECENT_TRADES
from mercato.port import ExchangeView
from mercato.store.tables import candles as candles_table
from mercato.store.tables import trades as trades_table

log = logging.getLogger(__name__)


def _candle(market: str, interval: str, row: sa.Row[tuple[object, ...]]) -> Candle:
    return Candle(market, interval, int(row.open_time), int(row.open), int(row.high),
                  int(row.low), int(row.close), int(row.volume), int(row.quote_volume),
                  int(row.trades), int(row.first_trade_id), int(row.last_trade_id))  # fmt: skip


async def recent_history(
    db: AsyncEngine, view: ExchangeView
) -> dict[str, tuple[list[Trade], dict[str, list[Candle]]]]:
    """Per market of the engine ``view`` reads: its newest trades and newest candles of
    every interval (time order), as the projection holds them."""
    out: dict[str, tuple[list[Trade], dict[str, list[Candle]]]] = {}
    t = trades_table.c
    k = candles_table.c
    async with db.connect() as connection:
        for symbol in view.market_symbols():
            market = view.spec(symbol)
            assert market is not None
            rows = (
                await connection.execute(
                    sa.select(trades_table).where(t.market == symbol)
                    .order_by(t.trade_id.desc()).limit(RECENT_TRADES)
                )
            ).all()  # fmt: skip
            recent = [
                Trade(int(r.trade_id), symbol, market.base, market.quote, int(r.price),
                      int(r.quantity), int(r.base_amount), int(r.quote_amount), r.taker_side,
                      int(r.maker_order_id), int(r.taker_order_id), 0, 0, 0, 0, int(r.ts))
                for r in reversed(rows)
            ]  # fmt: skip
            by_interval: dict[str, list[Candle]] = {}
            for interval in INTERVALS:
                rows = (
                    await connection.execute(
                        sa.select(candles_table)
                        .where(k.market == symbol, k.interval == interval)
                        .order_by(k.open_time.desc()).limit(CANDLES_KEPT[interval])
                    )
                ).all()  # fmt: skip
                by_interval[interval] = [_candle(symbol, interval, r) for r in reversed(rows)]
            out[symbol] = (recent, by_interval)
    return out


async def stored_candles(
    db: AsyncEngine, market: str, interval: str, start: int | None, end: int | None, limit: int
) -> list[Candle]:
    """Candles of the projection with ``start <= open_time <= end``: the first ``limit``
    from ``start`` when it is given, else the last ``limit`` up to ``end``; time order."""
    k = candles_table.c
    query = sa.select(candles_table).where(k.market == market, k.interval == interval)
    if start is not None:
        query = query.where(k.open_time >= start)
    if end is not None:
        query = query.where(k.open_time <= end)
    order = k.open_time.asc() if start is not None else k.open_time.desc()
    async with db.connect() as connection:
        rows = (await connection.execute(query.order_by(order).limit(limit))).all()
    candles = [_candle(market, interval, r) for r in rows]
    return candles if start is not None else candles[::-1]


def merge_candles(stored: list[Candle], memory: list[Candle], start: int | None,
                  end: int | None, limit: int) -> list[Candle]:  # fmt: skip
    """Stored candles overlaid with the in-memory ones (which are at least as recent:
    the projection writes after the fact), cut to the range and ``limit`` like
    :func:`stored_candles`."""
    by_time = {c.open_time: c for c in stored}
    for candle in memory:
        if (start is None or candle.open_time >= start) and (
            end is None or candle.open_time <= end
        ):
            by_time[candle.open_time] = candle
    merged = [by_time[t] for t in sorted(by_time)]
    return merged[:limit] if start is not None else merged[-limit:]
