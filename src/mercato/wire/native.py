"""Mercato's native API dialect: the JSON of orders, fills and balances.

REST (``/api/v1``: :class:`OrderView`, :class:`FillView`; its ``/balances`` entries have
the fields of :func:`balance_row`) and the private WebSocket channels (``orders``,
``fills``, ``balances``: the ``ws_*`` messages) read their numbers through the same
:class:`~mercato.wire.decimals.MarketFormat`, so a number never reads differently in two
places. The two keep the shapes their clients know
(docs/trading.md, docs/websocket.md), which differ on purpose: REST answers an order's
state (:class:`~mercato.core.order_state.OrderState`, folded from events or read from
the SQL projection), a WebSocket ``orders`` message is one event of the order (a change,
with the event's own fields), and a WebSocket fill gives its quantity in lots where REST
gives base atoms (the same value, each in its documented form).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from mercato.core.book import Order
from mercato.core.events import OrderAccepted, OrderAmended, OrderTriggered, OrderUpdated, Trade
from mercato.core.money import format_amount
from mercato.wire.decimals import MarketFormat, average_price, fee_amount, fee_asset


class OrderView(msgspec.Struct, kw_only=True):
    order_id: int
    client_order_id: str
    market: str
    side: str
    type: str
    time_in_force: str
    price: str | None
    stop_price: str | None
    quantity: str | None
    quote_quantity: str | None
    iceberg_quantity: str | None
    expire_at: int | None
    stp: str
    status: str
    filled: str
    filled_quote: str
    average_price: str | None
    fee: str
    fee_asset: str
    reason: str
    created_at: int
    updated_at: int


class FillView(msgspec.Struct, kw_only=True):
    trade_id: int
    order_id: int
    market: str
    side: str
    role: str
    price: str
    quantity: str
    quote_amount: str
    fee: str
    fee_asset: str
    time: int


class OrderRow(Protocol):
    """What an order view is made from: a projected SQL row or an
    :class:`~mercato.core.order_state.OrderState`."""

    @property
    def order_id(self) -> int: ...

    @property
    def client_order_id(self) -> str: ...

    @property
    def market(self) -> str: ...

    @property
    def side(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def time_in_force(self) -> str: ...

    @property
    def price(self) -> int: ...

    @property
    def stop_price(self) -> int: ...

    @property
    def quantity(self) -> int: ...

    @property
    def quote_quantity(self) -> int: ...

    @property
    def iceberg_quantity(self) -> int: ...

    @property
    def expire_at(self) -> int: ...

    @property
    def stp(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def filled_base(self) -> int: ...

    @property
    def filled_quote(self) -> int: ...

    @property
    def fee(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def created_at(self) -> int: ...

    @property
    def updated_at(self) -> int: ...


class FillRow(Protocol):
    @property
    def trade_id(self) -> int: ...

    @property
    def order_id(self) -> int: ...

    @property
    def market(self) -> str: ...

    @property
    def side(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def price(self) -> int: ...

    @property
    def base_amount(self) -> int: ...

    @property
    def quote_amount(self) -> int: ...

    @property
    def fee(self) -> int: ...

    @property
    def fee_asset(self) -> str: ...

    @property
    def ts(self) -> int: ...


def order_view(fmt: MarketFormat, row: OrderRow) -> OrderView:
    return OrderView(
        order_id=row.order_id,
        client_order_id=row.client_order_id,
        market=row.market,
        side=row.side,
        type=row.type,
        time_in_force=row.time_in_force,
        price=fmt.price(row.price) if row.price > 0 else None,
        stop_price=fmt.price(row.stop_price) if row.stop_price else None,
        quantity=fmt.qty(row.quantity) if row.quantity else None,
        quote_quantity=fmt.quote_amount(row.quote_quantity) if row.quote_quantity else None,
        iceberg_quantity=fmt.qty(row.iceberg_quantity) if row.iceberg_quantity else None,
        expire_at=row.expire_at or None,
        stp=row.stp,
        status=row.status,
        filled=fmt.base_amount(row.filled_base),
        filled_quote=fmt.quote_amount(row.filled_quote),
        average_price=average_price(fmt, row.filled_base, row.filled_quote),
        fee=fee_amount(fmt, row.side, row.fee),
        fee_asset=fee_asset(fmt, row.side),
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def projected_fill_view(fmt: MarketFormat, fill: FillRow) -> FillView:
    """A projected fill (one user's side of a trade)."""
    return FillView(
        trade_id=fill.trade_id, order_id=fill.order_id, market=fill.market, side=fill.side,
        role=fill.role, price=fmt.price(fill.price), quantity=fmt.base_amount(fill.base_amount),
        quote_amount=fmt.quote_amount(fill.quote_amount),
        fee=fee_amount(fmt, fill.side, fill.fee), fee_asset=fill.fee_asset, time=fill.ts,
    )  # fmt: skip


def trade_fill_view(fmt: MarketFormat, trade: Trade, user: int) -> FillView:
    """``user``'s side of ``trade`` (a self-trade cannot happen: STP prevents it)."""
    taker = trade.taker_user == user
    side = trade.taker_side if taker else ("SELL" if trade.taker_side == "BUY" else "BUY")
    return FillView(
        trade_id=trade.trade_id,
        order_id=trade.taker_order_id if taker else trade.maker_order_id,
        market=trade.market,
        side=side,
        role="TAKER" if taker else "MAKER",
        price=fmt.price(trade.price),
        quantity=fmt.base_amount(trade.base_amount),
        quote_amount=fmt.quote_amount(trade.quote_amount),
        fee=fee_amount(fmt, side, trade.taker_fee if taker else trade.maker_fee),
        fee_asset=fee_asset(fmt, side),
        time=trade.ts,
    )


# One asset's balance, as REST /balances' entries and the ``balances`` channel give it (no
# docstring: it would become the OpenAPI schema's description).
class Balance(msgspec.Struct):
    asset: str
    available: str
    locked: str
    total: str


def balance(asset: str, available: int, locked: int, decimals: int) -> Balance:
    return Balance(asset, format_amount(available, decimals), format_amount(locked, decimals),
                   format_amount(available + locked, decimals))  # fmt: skip


def balance_row(asset: str, available: int, locked: int, decimals: int) -> dict[str, Any]:
    """:func:`balance` as a dict, for the ``balances`` channel's messages."""
    return msgspec.structs.asdict(balance(asset, available, locked, decimals))


# -- the private WebSocket channels (docs/websocket.md) ---------------------------------------


def ws_fill(fmt: MarketFormat, trade: Trade, maker: bool, seq: int) -> dict[str, Any]:
    """The fill of one side of ``trade`` (a self-trade gives its user both sides)."""
    side = trade.taker_side if not maker else ("SELL" if trade.taker_side == "BUY" else "BUY")
    fee = trade.maker_fee if maker else trade.taker_fee
    # Each side pays its fee in the asset it receives: buyers base, sellers quote.
    asset = trade.base if side == "BUY" else trade.quote
    return {
        "channel": "fills", "type": "fill", "seq": seq,
        "trade_id": trade.trade_id, "order_id": trade.maker_order_id if maker
        else trade.taker_order_id, "market": trade.market,
        "side": side, "role": "MAKER" if maker else "TAKER",
        "price": fmt.price(trade.price), "quantity": fmt.qty(trade.quantity),
        "quote_amount": fmt.quote_amount(trade.quote_amount),
        "fee": fmt.amount(fee, asset), "fee_asset": asset, "time": trade.ts,
    }  # fmt: skip


def ws_order_event(fmt: MarketFormat | None, event: Any, seq: int, ts: int) -> dict[str, Any]:
    """One event of an order (OrderAccepted, OrderUpdated, OrderAmended, OrderTriggered)
    as the ``orders`` channel sends it: what changed, not the folded state."""
    message: dict[str, Any] = {"channel": "orders", "type": "order", "seq": seq, "ts": ts,
                               "order_id": event.order_id, "market": event.market}  # fmt: skip
    if fmt is None:  # pragma: no cover - an order names a market the engine knows
        return message
    if isinstance(event, OrderAccepted):
        message.update(
            event="ACCEPTED", status=event.status, side=event.side, order_type=event.type,
            time_in_force=event.time_in_force, client_order_id=event.client_order_id,
            price=fmt.price(event.price) if event.price else None,
            quantity=fmt.qty(event.quantity) if event.quantity else None,
            quote_quantity=fmt.quote_amount(event.quote_quantity)
            if event.quote_quantity else None,
            stop_price=fmt.price(event.stop_price) if event.stop_price else None,
            iceberg_quantity=fmt.qty(event.iceberg_quantity)
            if event.iceberg_quantity else None,
            expire_at=event.expire_at or None, stp=event.stp,
        )  # fmt: skip
    elif isinstance(event, OrderUpdated):
        message.update(event="UPDATED", status=event.status, filled=fmt.qty(event.filled),
                       quantity=fmt.qty(event.quantity), reason=event.reason)  # fmt: skip
    elif isinstance(event, OrderAmended):
        message.update(event="AMENDED", price=fmt.price(event.price),
                       quantity=fmt.qty(event.quantity),
                       kept_priority=event.kept_priority)  # fmt: skip
    elif isinstance(event, OrderTriggered):
        message.update(event="TRIGGERED", status="NEW",
                       last_price=fmt.price(event.last_price))  # fmt: skip
    return message


def ws_open_order(fmt: MarketFormat, order: Order) -> dict[str, Any]:
    """An open order of the engine, in the ``orders`` channel's first message."""
    return {
        "order_id": order.order_id, "client_order_id": order.client_order_id,
        "market": order.market, "side": order.side, "order_type": order.type,
        "time_in_force": order.time_in_force, "status": order.status,
        "price": fmt.price(order.price) if order.price else None,
        "stop_price": fmt.price(order.stop_price) if order.stop_price else None,
        "quantity": fmt.qty(order.quantity), "filled": fmt.qty(order.filled),
        "ts": order.ts,
    }  # fmt: skip
