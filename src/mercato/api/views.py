"""JSON shapes of orders, fills and balances: engine integers in, decimal strings out.

One formatting path for every endpoint (REST and WebSocket), so a number never reads
differently in two places. Prices are ticks x tick size, quantities lots x step size,
amounts atoms / 10^decimals; nothing here ever uses a float.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Protocol

import msgspec

from mercato.core.events import Event, OrderAccepted, OrderAmended, OrderUpdated, Trade
from mercato.core.money import EXACT
from mercato.marketdata.formats import MarketFormat

# Averages are the one division here: rounded, never trapping as EXACT would.
AVERAGE = Context(prec=60, rounding=ROUND_HALF_EVEN)


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
    """What an order view is made from: a projected SQL row or :class:`OrderState`."""

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


class OrderState(msgspec.Struct, kw_only=True):
    """An order folded from a command's events (the answer to POST /orders)."""

    order_id: int
    client_order_id: str
    market: str
    side: str
    type: str
    time_in_force: str
    price: int
    stop_price: int
    quantity: int
    quote_quantity: int
    iceberg_quantity: int
    expire_at: int
    stp: str
    status: str
    filled_base: int = 0
    filled_quote: int = 0
    fee: int = 0
    reason: str = ""
    created_at: int
    updated_at: int


# The views below take market data's MarketFormat of the market (one per market, kept by
# mercato.marketdata.feed.MarketData), so REST and WebSocket read the same strings and no
# request builds a formatter of its own.


def fee_asset(fmt: MarketFormat, side: str) -> str:
    """Fees are taken from what a side receives: base for buys, quote for sells."""
    return fmt.base if side == "BUY" else fmt.quote


def fee_amount(fmt: MarketFormat, side: str, atoms: int) -> str:
    return fmt.base_amount(atoms) if side == "BUY" else fmt.quote_amount(atoms)


def average_price(fmt: MarketFormat, base_atoms: int, quote_atoms: int) -> str | None:
    """Quote per base of the fills so far, to the quote asset's precision (half even)."""
    if base_atoms == 0:
        return None
    quote = EXACT.scaleb(Decimal(quote_atoms), -fmt.quote_decimals)
    base = EXACT.scaleb(Decimal(base_atoms), -fmt.base_decimals)
    exponent = Decimal(1).scaleb(-fmt.quote_decimals)
    average = AVERAGE.divide(quote, base).quantize(exponent, context=AVERAGE)
    return f"{average.normalize(AVERAGE):f}"


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


def fold_order(events: list[Event], order_id: int, updated_at: int) -> OrderState | None:
    """The order ``order_id`` as a command's events leave it (None if it was not created
    by them). Fills add their amounts; status and reason follow the last update."""
    state: OrderState | None = None
    for event in events:
        if isinstance(event, OrderAccepted) and event.order_id == order_id:
            state = OrderState(
                order_id=order_id, client_order_id=event.client_order_id,
                market=event.market, side=event.side, type=event.type,
                time_in_force=event.time_in_force, price=event.price,
                stop_price=event.stop_price, quantity=event.quantity,
                quote_quantity=event.quote_quantity, iceberg_quantity=event.iceberg_quantity,
                expire_at=event.expire_at, stp=event.stp, status=event.status,
                created_at=event.ts, updated_at=updated_at,
            )  # fmt: skip
        elif state is None:
            continue
        elif isinstance(event, Trade) and order_id in (event.taker_order_id, event.maker_order_id):
            taker = event.taker_order_id == order_id
            state.filled_base += event.base_amount
            state.filled_quote += event.quote_amount
            state.fee += event.taker_fee if taker else event.maker_fee
        elif isinstance(event, OrderUpdated) and event.order_id == order_id:
            # quantity too: self-trade prevention (DECREMENT) can shrink an order
            state.status, state.reason = event.status, event.reason
            state.quantity = event.quantity
        elif isinstance(event, OrderAmended) and event.order_id == order_id:
            state.price, state.quantity = event.price, event.quantity
    return state


def fills_of(events: list[Event], order_id: int) -> list[Trade]:
    trades = [event for event in events if isinstance(event, Trade)]
    return [t for t in trades if order_id in (t.taker_order_id, t.maker_order_id)]
