"""Fill totals of open orders, in memory: what the SQL projection knows of an order
beyond the engine's own ``Order`` (quote filled, fees), available the moment a command is
applied. Cancel and amend answers use it instead of waiting for the projection.

Totals follow every applied batch (a sequencer listener); a finished order's totals are
kept for a while after it leaves the book, so the answer to the command that finished it
can still read them. At start they are seeded from the projection's open orders, which
has caught up with the journal by then.
"""

from __future__ import annotations

from collections import OrderedDict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.events import OrderAccepted, OrderUpdated, Trade
from mercato.core.model import TERMINAL_STATUSES
from mercato.port import AppliedBatch
from mercato.store.tables import OPEN_ORDER_STATUSES, orders

RECENTLY_CLOSED = 10_000


class FillTotals:
    def __init__(self) -> None:
        # order id -> [filled_base, filled_quote, fee, created_at]
        self._open: dict[int, list[int]] = {}
        self._closed: OrderedDict[int, list[int]] = OrderedDict()

    def totals(self, order_id: int) -> tuple[int, int, int, int]:
        """(filled base atoms, filled quote atoms, fee atoms, created at ms) of a known
        order; the engine's order keeps its latest queue time, not its creation time."""
        found = self._open.get(order_id) or self._closed.get(order_id) or (0, 0, 0, 0)
        return found[0], found[1], found[2], found[3]

    async def seed(self, db: AsyncEngine) -> None:
        query = sa.select(
            orders.c.order_id,
            orders.c.filled_base,
            orders.c.filled_quote,
            orders.c.fee,
            orders.c.created_at,
        ).where(orders.c.status.in_(OPEN_ORDER_STATUSES))
        async with db.connect() as connection:
            for row in await connection.execute(query):
                self._open[row.order_id] = [
                    row.filled_base,
                    row.filled_quote,
                    row.fee,
                    row.created_at,
                ]

    def on_batch(self, batch: AppliedBatch) -> None:
        opened = self._open
        for result in batch.results:
            for event in result.events:
                kind = type(event)
                if kind is Trade:
                    trade: Trade = event  # type: ignore[assignment]
                    for order_id, fee in ((trade.maker_order_id, trade.maker_fee),
                                          (trade.taker_order_id, trade.taker_fee)):  # fmt: skip
                        totals = opened.get(order_id)
                        if totals is None:
                            totals = opened[order_id] = [0, 0, 0, trade.ts]
                        totals[0] += trade.base_amount
                        totals[1] += trade.quote_amount
                        totals[2] += fee
                elif kind is OrderAccepted:
                    accepted: OrderAccepted = event  # type: ignore[assignment]
                    opened.setdefault(accepted.order_id, [0, 0, 0, accepted.ts])
                elif kind is OrderUpdated and event.status in TERMINAL_STATUSES:  # type: ignore[union-attr]
                    self._close(event.order_id)  # type: ignore[union-attr]

    def _close(self, order_id: int) -> None:
        totals = self._open.pop(order_id, None)
        if totals is None:
            return
        self._closed[order_id] = totals
        if len(self._closed) > RECENTLY_CLOSED:
            self._closed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._open)
