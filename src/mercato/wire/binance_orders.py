"""Binance's spot order, fill, trade and account shapes, from Mercato's integers.

Keys are in the order Binance's documentation shows them (rest-api.md), and every
decimal is a string with 8 places ("0.00100000") as Binance sends them; a value finer
than 8 places (an asset with more ledger decimals) keeps its exact digits rather than
being rounded: money is never rounded for display.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from mercato.core.events import Trade
from mercato.core.money import EXACT
from mercato.wire.decimals import MarketFormat, fee_asset
from mercato.wire.native import FillRow, OrderRow

PLACES = 8
ZERO = "0.00000000"
NO_ORDER_LIST = -1  # Binance's orderListId of an order that is in no order list


def fixed(value: Decimal) -> str:
    """``value`` with 8 decimal places, or with its own when it needs more."""
    exponent = value.normalize(EXACT).as_tuple().exponent
    assert isinstance(exponent, int), "a finite amount"
    return f"{value:.{max(PLACES, -exponent)}f}"


# size -> (mantissa, places): size = mantissa / 10**places, so count * size is an exact
# integer at that many places and is formatted with integer arithmetic only (the order
# path formats a dozen numbers per answer).
_SCALES: dict[Decimal, tuple[int, int]] = {}


def _scale(size: Decimal) -> tuple[int, int]:
    found = _SCALES.get(size)
    if found is None:
        _, digits, exponent = size.as_tuple()
        assert isinstance(exponent, int), "a finite size"
        mantissa = int("".join(map(str, digits)))
        found = (mantissa * 10**exponent, 0) if exponent >= 0 else (mantissa, -exponent)
        if len(_SCALES) < 10_000:
            _SCALES[size] = found
    return found


def units(count: int, size: Decimal) -> str:
    """``count`` ticks or lots of ``size``."""
    mantissa, places = _scale(size)
    return atoms(count * mantissa, places)


def atoms(count: int, decimals: int) -> str:
    """``count`` (not negative) atoms of an asset with ``decimals`` ledger decimals, at
    8 places or at more when its digits need them."""
    if decimals == 0:
        return f"{count}.00000000"
    whole, fraction = divmod(count, 10**decimals)
    digits = f"{fraction:0{decimals}d}"
    if decimals < PLACES:
        digits += "0" * (PLACES - decimals)
    elif decimals > PLACES:
        digits = digits.rstrip("0").ljust(PLACES, "0")
    return f"{whole}.{digits}"


def price(fmt: MarketFormat, ticks: int) -> str:
    return units(ticks, fmt.tick)


def qty(fmt: MarketFormat, lots: int) -> str:
    return units(lots, fmt.step)


def base(fmt: MarketFormat, count: int) -> str:
    return atoms(count, fmt.base_decimals)


def quote(fmt: MarketFormat, count: int) -> str:
    return atoms(count, fmt.quote_decimals)


def status(mercato_status: str) -> str:
    """Binance's order status: a stop waiting for its trigger is NEW there (with
    ``isWorking`` false); the other statuses have the same names."""
    return "NEW" if mercato_status == "UNTRIGGERED" else mercato_status


class TriggeredRow(OrderRow, Protocol):
    @property
    def triggered_at(self) -> int | None: ...


def working_time(row: TriggeredRow) -> int:
    """When the order went on the book: at once, or when its stop triggered (-1 before,
    as Binance answers for a stop that has not triggered)."""
    if row.status == "UNTRIGGERED" or (row.stop_price and row.triggered_at is None):
        return -1
    return row.triggered_at or row.created_at


def _order_figures(fmt: MarketFormat, row: OrderRow) -> dict[str, object]:
    return {
        "price": price(fmt, row.price),
        "origQty": qty(fmt, row.quantity),
        "executedQty": base(fmt, row.filled_base),
        "origQuoteOrderQty": quote(fmt, row.quote_quantity),
        "cummulativeQuoteQty": quote(fmt, row.filled_quote),
        "status": status(row.status),
        "timeInForce": row.time_in_force,
        "type": row.type,
        "side": row.side,
    }


def _conditional(fmt: MarketFormat, row: OrderRow) -> dict[str, object]:
    """The fields Binance adds to order answers only for the orders they concern
    ("Conditional fields in order responses")."""
    extra: dict[str, object] = {}
    if row.stop_price:
        extra["stopPrice"] = price(fmt, row.stop_price)
    if row.iceberg_quantity:
        extra["icebergQty"] = qty(fmt, row.iceberg_quantity)
    return extra


def ack(symbol: str, row: OrderRow) -> dict[str, object]:
    """``newOrderRespType=ACK``."""
    return {
        "symbol": symbol, "orderId": row.order_id, "orderListId": NO_ORDER_LIST,
        "clientOrderId": row.client_order_id, "transactTime": row.created_at,
    }  # fmt: skip


def result(fmt: MarketFormat, symbol: str, row: TriggeredRow) -> dict[str, object]:
    """``newOrderRespType=RESULT``: the order as placed."""
    return {
        **ack(symbol, row),
        **_order_figures(fmt, row),
        "workingTime": working_time(row),
        **_conditional(fmt, row),
        "selfTradePreventionMode": row.stp,
    }


def full(fmt: MarketFormat, symbol: str, row: TriggeredRow, fills: list[dict[str, object]]
         ) -> dict[str, object]:  # fmt: skip
    """``newOrderRespType=FULL``: RESULT with the fills the order got at once."""
    return {**result(fmt, symbol, row), "fills": fills}


def placement_fill(fmt: MarketFormat, trade: Trade, user: int) -> dict[str, object]:
    """One fill of a FULL placement answer, from the user's side of ``trade``."""
    taker = trade.taker_user == user
    side = trade.taker_side if taker else ("SELL" if trade.taker_side == "BUY" else "BUY")
    fee = trade.taker_fee if taker else trade.maker_fee
    return {
        "price": price(fmt, trade.price),
        "qty": base(fmt, trade.base_amount),
        "commission": base(fmt, fee) if side == "BUY" else quote(fmt, fee),
        "commissionAsset": fee_asset(fmt, side),
        "tradeId": trade.trade_id,
    }


def queried(fmt: MarketFormat, symbol: str, row: TriggeredRow) -> dict[str, object]:
    """An order as ``GET /api/v3/order``, ``openOrders`` and ``allOrders`` answer it."""
    return {
        "symbol": symbol, "orderId": row.order_id, "orderListId": NO_ORDER_LIST,
        "clientOrderId": row.client_order_id,
        "price": price(fmt, row.price), "origQty": qty(fmt, row.quantity),
        "executedQty": base(fmt, row.filled_base),
        "cummulativeQuoteQty": quote(fmt, row.filled_quote), "status": status(row.status),
        "timeInForce": row.time_in_force, "type": row.type, "side": row.side,
        "stopPrice": price(fmt, row.stop_price), "icebergQty": qty(fmt, row.iceberg_quantity),
        "time": row.created_at, "updateTime": row.updated_at,
        "isWorking": working_time(row) != -1, "workingTime": working_time(row),
        "origQuoteOrderQty": quote(fmt, row.quote_quantity),
        "selfTradePreventionMode": row.stp,
    }  # fmt: skip


def canceled(fmt: MarketFormat, symbol: str, row: OrderRow, cancel_client_id: str,
             transact_time: int) -> dict[str, object]:  # fmt: skip
    """An order as ``DELETE /api/v3/order`` answers it: ``origClientOrderId`` is the
    order's client id, ``clientOrderId`` the cancel request's own."""
    return {
        "symbol": symbol, "origClientOrderId": row.client_order_id, "orderId": row.order_id,
        "orderListId": NO_ORDER_LIST, "clientOrderId": cancel_client_id,
        "transactTime": transact_time, **_order_figures(fmt, row), **_conditional(fmt, row),
        "selfTradePreventionMode": row.stp,
    }  # fmt: skip


def my_trade(fmt: MarketFormat, symbol: str, fill: FillRow) -> dict[str, object]:
    """One of the user's trades as ``GET /api/v3/myTrades`` answers it."""
    return {
        "symbol": symbol, "id": fill.trade_id, "orderId": fill.order_id,
        "orderListId": NO_ORDER_LIST, "price": price(fmt, fill.price),
        "qty": base(fmt, fill.base_amount), "quoteQty": quote(fmt, fill.quote_amount),
        "commission": base(fmt, fill.fee) if fill.side == "BUY" else quote(fmt, fill.fee),
        "commissionAsset": fill.fee_asset, "time": fill.ts, "isBuyer": fill.side == "BUY",
        "isMaker": fill.role == "MAKER", "isBestMatch": True,
    }  # fmt: skip


def rate(fraction: Decimal) -> str:
    return fixed(fraction)


def commission_rates(maker: Decimal, taker: Decimal) -> dict[str, str]:
    return {"maker": rate(maker), "taker": rate(taker), "buyer": ZERO, "seller": ZERO}


def balance(asset: str, decimals: int, free: int, locked: int) -> dict[str, str]:
    return {"asset": asset, "free": atoms(free, decimals), "locked": atoms(locked, decimals)}


def account(*, maker: Decimal, taker: Decimal, can_trade: bool, can_withdraw: bool,
            update_time: int, balances: Iterable[dict[str, str]], uid: int,
            ) -> dict[str, object]:  # fmt: skip
    """``GET /api/v3/account``: commissions in basis points and as rates."""
    return {
        "makerCommission": int(maker * 10_000), "takerCommission": int(taker * 10_000),
        "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": commission_rates(maker, taker),
        "canTrade": can_trade, "canWithdraw": can_withdraw, "canDeposit": True,
        "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
        "updateTime": update_time, "accountType": "SPOT", "balances": list(balances),
        "permissions": ["SPOT"], "uid": uid,
    }  # fmt: skip


def amended(fmt: MarketFormat, symbol: str, row: TriggeredRow) -> dict[str, object]:
    """``amendedOrder`` of an amend-keep-priority answer (Mercato keeps the client id)."""
    return {
        "symbol": symbol, "orderId": row.order_id, "orderListId": NO_ORDER_LIST,
        "origClientOrderId": row.client_order_id, "clientOrderId": row.client_order_id,
        "price": price(fmt, row.price), "qty": qty(fmt, row.quantity),
        "executedQty": base(fmt, row.filled_base), "preventedQty": ZERO,
        "quoteOrderQty": quote(fmt, row.quote_quantity),
        "cumulativeQuoteQty": quote(fmt, row.filled_quote), "status": status(row.status),
        "timeInForce": row.time_in_force, "type": row.type, "side": row.side,
        "workingTime": working_time(row), "selfTradePreventionMode": row.stp,
    }  # fmt: skip


class SequencedRow(TriggeredRow, Protocol):
    @property
    def created_seq(self) -> int: ...
    @property
    def updated_seq(self) -> int: ...
    @property
    def filled(self) -> int: ...


def prevented_match(fmt: MarketFormat, symbol: str, row: SequencedRow) -> dict[str, object]:
    """An order self-trade prevention expired, as a ``myPreventedMatches`` entry."""
    taker = row.updated_seq == row.created_seq  # expired in the batch that placed it
    return {
        "symbol": symbol, "preventedMatchId": row.order_id,
        "takerOrderId": row.order_id if taker else 0, "makerSymbol": symbol,
        "makerOrderId": 0 if taker else row.order_id, "tradeGroupId": -1,
        "selfTradePreventionMode": row.stp, "price": price(fmt, row.price),
        "makerPreventedQuantity": qty(fmt, row.quantity - row.filled),
        "transactTime": row.updated_at,
    }  # fmt: skip
