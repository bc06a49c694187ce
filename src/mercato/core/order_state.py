"""An order's state folded from the engine's events: the one reducer every consumer uses.

The engine says what happened to an order in five events (:class:`OrderAccepted`,
:class:`Trade`, :class:`OrderUpdated`, :class:`OrderAmended`, :class:`OrderTriggered`);
what an order *is* after them (status, filled amounts, fees, the latest price and
quantity, when it last changed) is folded here, once, for the SQL projection, the REST
answers and the in-memory read models alike, so they cannot disagree.

Pure: no I/O, no clock. ``seq`` and ``ts`` are the sequence number and the batch time of
the command whose events are applied. For speed (the projector folds every event of the
exchange) a state is updated in place: the functions below change the state they are
given and return it; copy one with ``msgspec.structs.replace`` to keep the old value.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from mercato.core.events import (
    Event,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
)
from mercato.core.model import OrderStatus, OrderType, Side, StpMode, TimeInForce


class OrderState(msgspec.Struct, gc=False):
    """One order as its events leave it. The fields are in the order of the SQL
    ``orders`` columns (``user`` is ``user_id`` there), so a row is ``astuple(state)``
    and a state is ``OrderState(*row)``. Positional and without defaults on purpose:
    built for every accepted order, keyword construction cost several times as much."""

    order_id: int
    user: int
    market: str
    side: Side
    type: OrderType  # as placed: a triggered stop keeps its type
    time_in_force: TimeInForce
    client_order_id: str
    price: int  # ticks; 0 for market orders
    stop_price: int  # ticks; 0 unless a stop
    quantity: int  # lots: the latest (amends and self-trade decrements change it)
    iceberg_quantity: int
    quote_quantity: int
    expire_at: int
    stp: StpMode
    status: OrderStatus
    filled: int  # lots
    filled_base: int  # base atoms
    filled_quote: int  # quote atoms
    fee: int  # atoms of fee_asset
    fee_asset: str | None  # base for buys, quote for sells; set by the first fill
    reason: str  # of the last status change
    created_at: int  # the OrderAccepted event's time
    updated_at: int  # batch time of the last event that changed it
    triggered_at: int | None  # stops: batch time their condition held
    created_seq: int
    updated_seq: int


def accepted(event: OrderAccepted, seq: int, ts: int) -> OrderState:
    """A new order's state, from the event that accepted it."""
    return OrderState(
        event.order_id, event.user, event.market, event.side, event.type,
        event.time_in_force, event.client_order_id, event.price, event.stop_price,
        event.quantity, event.iceberg_quantity, event.quote_quantity, event.expire_at,
        event.stp, event.status,
        0, 0, 0, 0, None, "",  # filled, filled_base, filled_quote, fee, fee_asset, reason
        event.ts, ts, None, seq, seq,  # created_at, updated_at, triggered_at, *_seq
    )  # fmt: skip


def filled(state: OrderState, trade: Trade, seq: int, ts: int) -> OrderState:
    """One fill of the order (it is the trade's maker or its taker; never both: self-trade
    prevention forbids it). A resting order's later fills come with no OrderUpdated."""
    taker = trade.taker_order_id == state.order_id
    state.filled += trade.quantity
    state.filled_base += trade.base_amount
    state.filled_quote += trade.quote_amount
    state.fee += trade.taker_fee if taker else trade.maker_fee
    # Each side pays its fee in the asset it receives: the buyer base, the seller quote.
    state.fee_asset = trade.base if state.side == "BUY" else trade.quote
    state.updated_at, state.updated_seq = ts, seq
    return state


def updated(state: OrderState, event: OrderUpdated, seq: int, ts: int) -> OrderState:
    """A status change, or self-trade prevention (DECREMENT) shrinking the order."""
    state.status = event.status
    state.filled = event.filled
    state.quantity = event.quantity
    state.reason = event.reason
    state.updated_at, state.updated_seq = ts, seq
    return state


def amended(state: OrderState, event: OrderAmended, seq: int, ts: int) -> OrderState:
    state.price = event.price
    state.quantity = event.quantity
    state.updated_at, state.updated_seq = ts, seq
    return state


def triggered(state: OrderState, event: OrderTriggered, seq: int, ts: int) -> OrderState:
    """A stop's condition held: it is a live MARKET or LIMIT order now (status NEW)."""
    state.status = "NEW"
    state.triggered_at = ts
    state.updated_at, state.updated_seq = ts, seq
    return state


def apply_event(state: OrderState, event: Event, seq: int, ts: int) -> OrderState:
    """``state`` after ``event``: changed in place if the event concerns the order,
    returned as it is otherwise."""
    kind = type(event)
    if kind is Trade:
        trade: Trade = event  # type: ignore[assignment]
        if state.order_id in (trade.maker_order_id, trade.taker_order_id):
            return filled(state, trade, seq, ts)
    elif kind is OrderUpdated:
        update: OrderUpdated = event  # type: ignore[assignment]
        if update.order_id == state.order_id:
            return updated(state, update, seq, ts)
    elif kind is OrderAmended:
        amend: OrderAmended = event  # type: ignore[assignment]
        if amend.order_id == state.order_id:
            return amended(state, amend, seq, ts)
    elif kind is OrderTriggered:
        trigger: OrderTriggered = event  # type: ignore[assignment]
        if trigger.order_id == state.order_id:
            return triggered(state, trigger, seq, ts)
    return state


def fold(events: Iterable[Event], order_id: int, ts: int, seq: int = 0) -> OrderState | None:
    """The order ``order_id`` as one command's events leave it (None unless they accepted
    it). ``ts`` and ``seq`` stamp every change (one command: one batch time, one seq; 0
    when the caller has no use for it)."""
    state: OrderState | None = None
    for event in events:
        if type(event) is OrderAccepted and event.order_id == order_id:
            state = accepted(event, seq, ts)
        elif state is not None:
            apply_event(state, event, seq, ts)
    return state


def fills_of(events: Iterable[Event], order_id: int) -> list[Trade]:
    """The trades among ``events`` that filled the order ``order_id``."""
    trades = [event for event in events if type(event) is Trade]
    return [t for t in trades if order_id in (t.taker_order_id, t.maker_order_id)]
