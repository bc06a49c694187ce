"""The caller's orders and fills as the SQL projection holds them, read only once the
projection holds everything acknowledged so far (a client reads what it was told
happened). Every dialect's history endpoints (REST /orders, /orders/history, /trades;
Binance's openOrders, allOrders, myTrades) are these reads, formatted their own way."""

from __future__ import annotations

from mercato.application.projection import ProjectionReads
from mercato.store import queries
from mercato.store.queries import FillRecord, OrderRecord, Page


class History:
    def __init__(self, projection: ProjectionReads) -> None:
        self._projection = projection

    async def open_orders(self, user: int, *, market: str | None = None) -> list[OrderRecord]:
        """Resting, partially filled and untriggered orders, oldest first."""
        return await self._projection.current(queries.open_orders, user, market=market)

    async def orders(
        self,
        user: int,
        *,
        market: str | None = None,
        status: str | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        before: int | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> Page[OrderRecord]:
        """Every order of the user, newest first (``before``: an order id, exclusive)."""
        return await self._projection.current(
            queries.order_history, user, market=market, status=status, start_time=start_time,
            end_time=end_time, before=before, limit=limit,
        )  # fmt: skip

    async def fills(
        self,
        user: int,
        *,
        market: str | None = None,
        order_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        before: int | None = None,
        limit: int = queries.DEFAULT_LIMIT,
    ) -> Page[FillRecord]:
        """The user's fills, newest first."""
        return await self._projection.current(
            queries.user_fills, user, market=market, order_id=order_id,
            start_time=start_time, end_time=end_time, before=before, limit=limit,
        )  # fmt: skip
