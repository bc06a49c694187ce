"""JSON shapes of orders, fills and balances: engine integers in, decimal strings out.

One formatting path for every endpoint (REST and WebSocket), so a number never reads
differently in two places. Prices are ticks x tick size, quantities lots x step size,
amounts atoms / 10^decimals; nothing here ever uses a float.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Protocol

import msgspec

from mercato.core.engine import Engine
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


class Formatter(MarketFormat):
    """One market's integers as the REST shapes; the primitives (price, quantity and
    amount strings) are market data's, so REST and WebSocket always read the same."""

    __slots__ = ("market",)

    def __init__(self, engine: Engine, market: str) -> None:
        state = engine.markets[market]
        super().__init__(
            state.rules.tick_size, state.rules.step_size, state.base,
            engine.assets[state.base].decimals, state.quote,
            engine.assets[state.quote].decimals,
        )  # fmt: skip
        self.market = market

    def fee_asset(self, side: str) -> str:
        """Fees are taken from what a side receives: base for buys, quote for sells."""
        return self.base if side == "BUY" else self.quote

    def fee(self, side: str, atoms: int) -> str:
        return self.base_amount(atoms) if side == "BUY" else self.quote_amount(atoms)

    def average_price(self, base_atoms: int, quote_atoms: int) -> str | None:
        """Quote per base of the fills so far, to the quote asset's precision (half even)."""
        if base_atoms == 0:
            return None
        quote = EXACT.scaleb(Decimal(quote_atoms), -self.quote_decimals)
        base = EXACT.scaleb(Decimal(base_atoms), -self.base_decimals)
        exponent = Decimal(1).scaleb(-self.quote_decimals)
        average = AVERAGE.divide(quote, base).quantize(exponent, context=AVERAGE)
        return f"{average.normalize(AVERAGE):f}"

    def order(self, row: OrderRow) -> OrderView:
        limit_priced = row.price > 0
        return OrderView(
            order_id=row.order_id,
            client_order_id=row.client_order_id,
            market=row.market,
            side=row.side,
            type=row.type,
            time_in_force=row.time_in_force,
            price=self.price(row.price) if limit_priced else None,
            stop_price=self.price(row.stop_price) if row.stop_price else None,
            quantity=self.qty(row.quantity) if row.quantity else None,
            quote_quantity=self.quote_amount(row.quote_quantity) if row.quote_quantity else None,
            iceberg_quantity=self.qty(row.iceberg_quantity) if row.iceberg_quantity else None,
            expire_at=row.expire_at or None,
            stp=row.stp,
            status=row.status,
            filled=self.base_amount(row.filled_base),
            filled_quote=self.quote_amount(row.filled_quote),
            average_price=self.average_price(row.filled_base, row.filled_quote),
            fee=self.fee(row.side, row.fee),
            fee_asset=self.fee_asset(row.side),
            reason=row.reason,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def fill_record(self, fill: FillRow) -> FillView:
        """A projected fill (one user's side of a trade)."""
        return FillView(
            trade_id=fill.trade_id, order_id=fill.order_id, market=fill.market, side=fill.side,
            role=fill.role, price=self.price(fill.price),
            quantity=self.base_amount(fill.base_amount),
            quote_amount=self.quote_amount(fill.quote_amount),
            fee=self.fee(fill.side, fill.fee), fee_asset=fill.fee_asset, time=fill.ts,
        )  # fmt: skip

    def fill(self, trade: Trade, user: int) -> FillView:
        """``user``'s side of ``trade`` (a self-trade cannot happen: STP prevents it)."""
        taker = trade.taker_user == user
        side = trade.taker_side if taker else ("SELL" if trade.taker_side == "BUY" else "BUY")
        return FillView(
            trade_id=trade.trade_id,
            order_id=trade.taker_order_id if taker else trade.maker_order_id,
            market=trade.market,
            side=side,
            role="TAKER" if taker else "MAKER",
            price=self.price(trade.price),
            quantity=self.base_amount(trade.base_amount),
            quote_amount=self.quote_amount(trade.quote_amount),
            fee=self.fee(side, trade.taker_fee if taker else trade.maker_fee),
            fee_asset=self.fee_asset(side),
            time=trade.ts,
        )


def fold_order(events: list[Event], order_id: int, updated_at: int) -> OrderState | None:
    """The order ``order_id`` as a command's events leave it (None if it was not created
    by them). Fills add their amounts; status and reason follow the last update."""
    state: OrderState | None = None
    for event in events:
        kind = type(event)
        if kind is OrderAccepted and event.order_id == order_id:  # type: ignore[union-attr]
            accepted: OrderAccepted = event  # type: ignore[assignment]
            state = OrderState(
                order_id=order_id, client_order_id=accepted.client_order_id,
                market=accepted.market, side=accepted.side, type=accepted.type,
                time_in_force=accepted.time_in_force, price=accepted.price,
                stop_price=accepted.stop_price, quantity=accepted.quantity,
                quote_quantity=accepted.quote_quantity,
                iceberg_quantity=accepted.iceberg_quantity, expire_at=accepted.expire_at,
                stp=accepted.stp, status=accepted.status, created_at=accepted.ts,
                updated_at=updated_at,
            )  # fmt: skip
        elif state is None:
            continue
        elif kind is Trade:
            trade: Trade = event  # type: ignore[assignment]
            if trade.taker_order_id == order_id:
                fee = trade.taker_fee
            elif trade.maker_order_id == order_id:
                fee = trade.maker_fee
            else:
                continue
            state.filled_base += trade.base_amount
            state.filled_quote += trade.quote_amount
            state.fee += fee
        elif kind is OrderUpdated and event.order_id == order_id:  # type: ignore[union-attr]
            update: OrderUpdated = event  # type: ignore[assignment]
            state.status, state.reason = update.status, update.reason
        elif kind is OrderAmended and event.order_id == order_id:  # type: ignore[union-attr]
            amended: OrderAmended = event  # type: ignore[assignment]
            state.price, state.quantity = amended.price, amended.quantity
    return state


def fills_of(events: list[Event], order_id: int) -> list[Trade]:
    trades = [event for event in events if isinstance(event, Trade)]
    return [t for t in trades if order_id in (t.taker_order_id, t.maker_order_id)]
