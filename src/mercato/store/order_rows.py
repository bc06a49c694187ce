"""``orders`` rows and :class:`~mercato.core.order_state.OrderState`: one to one.

The state's fields are the table's columns in their order (``user`` is ``user_id``), so a
row to insert is the state as a tuple and a selected row is a state's arguments; the
projector and the in-memory read models load the open orders with
:func:`open_order_states`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.core.order_state import OrderState
from mercato.store.tables import OPEN_ORDER_STATUSES, orders

#: Column order of the bulk inserts.
ORDER_COLUMNS: Final = tuple(c.name for c in orders.c)
#: The ``orders`` columns an order's events change after it was accepted.
ORDER_MUTABLE_COLUMNS: Final[tuple[str, ...]] = (
    "status",
    "filled",
    "quantity",
    "price",
    "filled_base",
    "filled_quote",
    "fee",
    "fee_asset",
    "reason",
    "updated_at",
    "triggered_at",
    "updated_seq",
)
_FIELDS: Final = tuple("user" if name == "user_id" else name for name in ORDER_COLUMNS)
if OrderState.__struct_fields__ != _FIELDS:  # pragma: no cover - caught by any test run
    raise RuntimeError("OrderState's fields must be the orders columns, in their order")

#: The row to INSERT for a state: its fields in ORDER_COLUMNS order.
insert_row: Final[Callable[[OrderState], tuple[Any, ...]]] = msgspec.structs.astuple
_mutable: Final = operator.attrgetter(*ORDER_MUTABLE_COLUMNS)


def update_row(state: OrderState) -> tuple[Any, ...]:
    """The parameters of an order's UPDATE: the mutable columns, then the order id."""
    return (*_mutable(state), state.order_id)


async def open_order_states(connection: AsyncConnection) -> dict[int, OrderState]:
    """Every order still open in the projection, by id."""
    result = await connection.execute(
        sa.select(orders).where(orders.c.status.in_(OPEN_ORDER_STATUSES))
    )
    return {row.order_id: OrderState(*row) for row in result}
