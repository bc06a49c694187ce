"""The folded state of every open order, in memory: what the SQL projection knows of an
order beyond the engine's own ``Order`` (quote filled, fees, creation time), available
the moment a command is applied. Cancel and amend answers use it instead of waiting for
the projection, and read exactly what the projection will hold: both fold the events with
:mod:`mercato.core.order_state`.

States follow every applied batch (a sequencer listener); a finished order's state is
kept for a while after it leaves the book, so the answer to the command that finished it
can still read it. At start they are seeded from the projection's open orders, which has
caught up with the journal by then.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.events import OrderAccepted, OrderAmended, OrderTriggered, OrderUpdated, Trade
from mercato.core.model import TERMINAL_STATUSES
from mercato.core.order_state import OrderState, accepted, amended, filled, triggered, updated
from mercato.port import AppliedBatch
from mercato.store.order_rows import open_order_states

RECENTLY_CLOSED = 10_000


class OrderStates:
    """Open orders' states by id (and the last ``RECENTLY_CLOSED`` finished ones)."""

    def __init__(self) -> None:
        self._open: dict[int, OrderState] = {}
        self._closed: OrderedDict[int, OrderState] = OrderedDict()

    def state(self, order_id: int) -> OrderState | None:
        """The order as the batches applied so far leave it, or None if unknown."""
        state = self._open.get(order_id)
        return state if state is not None else self._closed.get(order_id)

    async def seed(self, db: AsyncEngine) -> None:
        async with db.connect() as connection:
            self._open.update(await open_order_states(connection))

    def on_batch(self, batch: AppliedBatch) -> None:
        opened = self._open
        ts = batch.ts
        seq = batch.seq0 - 1
        for result in batch.results:
            seq += 1
            for event in result.events:
                kind = type(event)
                if kind is Trade:
                    trade: Trade = event  # type: ignore[assignment]
                    for order_id in (trade.maker_order_id, trade.taker_order_id):
                        state = opened.get(order_id)
                        if state is not None:
                            filled(state, trade, seq, ts)
                elif kind is OrderAccepted:
                    accept: OrderAccepted = event  # type: ignore[assignment]
                    opened[accept.order_id] = accepted(accept, seq, ts)
                elif kind is OrderUpdated:
                    update: OrderUpdated = event  # type: ignore[assignment]
                    state = opened.get(update.order_id)
                    if state is not None:
                        updated(state, update, seq, ts)
                        if update.status in TERMINAL_STATUSES:
                            self._close(update.order_id)
                elif kind is OrderAmended:
                    amend: OrderAmended = event  # type: ignore[assignment]
                    state = opened.get(amend.order_id)
                    if state is not None:
                        amended(state, amend, seq, ts)
                elif kind is OrderTriggered:
                    trigger: OrderTriggered = event  # type: ignore[assignment]
                    state = opened.get(trigger.order_id)
                    if state is not None:
                        triggered(state, trigger, seq, ts)

    def _close(self, order_id: int) -> None:
        state = self._open.pop(order_id, None)
        if state is None:
            return
        self._closed[order_id] = state
        if len(self._closed) > RECENTLY_CLOSED:
            self._closed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._open)
