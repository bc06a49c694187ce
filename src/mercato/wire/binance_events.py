"""Binance's user data stream events (user-data-stream.md), in Binance's field names and
order: ``executionReport`` (an order's change), ``outboundAccountPosition`` (the balances
a change touched), ``balanceUpdate`` (a deposit or a withdrawal) and
``eventStreamTerminated``; and the WebSocket API's envelope of an event,
``{"subscriptionId": n, "event": {...}}``.

Numbers are decimal strings of at least 8 places, as Binance sends them
(``"0.01000000"``), through the order shapes' formatting (:mod:`.binance_orders`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mercato.core.events import Trade
from mercato.core.model import LIMIT_PRICED_TYPES
from mercato.core.order_state import OrderState
from mercato.wire import binance_orders as shapes
from mercato.wire.decimals import MarketFormat

QUOTE_BUY_SENTINEL = 1 << 62
"""The engine's quantity of a quote-quantity market buy while it runs ("as many lots as
the quote amount buys"): such an order reports what it filled as its quantity."""

#: Mercato's reason for an order expiry -> Binance's ``eR`` (left out when Binance has none).
EXPIRY_REASONS = {
    "IOC_REMAINDER": "UNFILLED_IOC_QUANTITY_EXPIRED",
    "FOK_NOT_FILLABLE": "UNFILLED_FOK_ORDER_EXPIRED",
    "PROTECTION_LIMIT": "EXECUTION_RULE_PRICE_RANGE_EXCEEDED",
    "FUNDS_EXHAUSTED": "INSUFFICIENT_LIQUIDITY",
}


def working(state: OrderState, status: str) -> bool:
    """On the book with ``status``: a limit-priced, resting order that is live (not an
    untriggered stop)."""
    return (status in ("NEW", "PARTIALLY_FILLED") and state.type in LIMIT_PRICED_TYPES
            and state.time_in_force not in ("IOC", "FOK")
            and (state.triggered_at is not None or state.stop_price == 0))  # fmt: skip


def _quantity(state: OrderState) -> int:
    """The order's quantity; for a market buy by quote amount, what it has filled."""
    if state.quote_quantity or state.quantity >= QUOTE_BUY_SENTINEL:
        return state.filled
    return state.quantity


def status_after_fill(state: OrderState) -> str:
    """The status a fill leaves the order in. A buy by quote amount is only FILLED when
    the engine says so (its OrderUpdated follows the last fill and corrects the report)."""
    if state.quote_quantity == 0 and state.filled >= state.quantity:
        return "FILLED"
    return "PARTIALLY_FILLED"


def execution_report(
    fmt: MarketFormat, state: OrderState, execution: str, *, event_time: int,
    transact_time: int, execution_id: int, trade: Trade | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``executionReport`` of ``state`` (the order just after the change) for a change
    of kind ``execution`` (NEW, TRADE, CANCELED, EXPIRED, REPLACED, TRADE_PREVENTION);
    ``trade`` is the fill of a TRADE."""
    taker = trade is not None and trade.taker_order_id == state.order_id
    fee = (trade.taker_fee if taker else trade.maker_fee) if trade is not None else 0
    fee_asset = (fmt.base if state.side == "BUY" else fmt.quote) if trade is not None else None
    report: dict[str, Any] = {
        "e": "executionReport",
        "E": event_time,
        "s": fmt.base + fmt.quote,
        "c": state.client_order_id,
        "S": state.side,
        "o": state.type,
        "f": state.time_in_force,
        "q": shapes.qty(fmt, _quantity(state)),
        "p": shapes.price(fmt, state.price),
        "P": shapes.price(fmt, state.stop_price),
        "F": shapes.qty(fmt, state.iceberg_quantity),
        "g": -1,
        "C": state.client_order_id if execution == "CANCELED" else "",
        "x": execution,
        "X": shapes.status(state.status),
        "r": "NONE",
        "i": state.order_id,
        "l": shapes.qty(fmt, trade.quantity) if trade is not None else shapes.ZERO,
        "z": shapes.qty(fmt, state.filled),
        "L": shapes.price(fmt, trade.price) if trade is not None else shapes.ZERO,
        "n": _fee(fmt, state, fee) if trade is not None else "0",
        "N": fee_asset,
        "T": transact_time,
        "t": trade.trade_id if trade is not None else -1,
        "I": execution_id,
        "w": working(state, state.status),
        "m": trade is not None and not taker,
        "M": False,
        "O": state.created_at,
        "Z": shapes.quote(fmt, state.filled_quote),
        "Y": shapes.quote(fmt, trade.quote_amount) if trade is not None else shapes.ZERO,
        "Q": shapes.quote(fmt, state.quote_quantity),
    }
    if state.status not in ("UNTRIGGERED", "REJECTED"):
        report["W"] = state.triggered_at or state.created_at
    report["V"] = state.stp
    if state.status in ("EXPIRED", "EXPIRED_IN_MATCH"):
        reason = EXPIRY_REASONS.get(state.reason)
        if state.reason == "IOC_REMAINDER" and state.type == "MARKET":
            reason = "INSUFFICIENT_LIQUIDITY"
        if reason is not None:
            report["eR"] = reason
    return report


def _fee(fmt: MarketFormat, state: OrderState, fee: int) -> str:
    """The fill's fee, in the asset the side receives (base for buys, quote for sells)."""
    return shapes.base(fmt, fee) if state.side == "BUY" else shapes.quote(fmt, fee)


def account_position(event_time: int, update_time: int,
                     balances: Iterable[tuple[str, int, int, int]]) -> dict[str, Any]:  # fmt: skip
    """``outboundAccountPosition``: (asset, free, locked, decimals) of each asset that
    changed, in atoms."""
    rows = [{"a": asset, "f": _amount(free, decimals), "l": _amount(locked, decimals)}
            for asset, free, locked, decimals in balances]  # fmt: skip
    return {"e": "outboundAccountPosition", "E": event_time, "u": update_time, "B": rows}


def _amount(atoms: int, decimals: int) -> str:
    return shapes.atoms(atoms, decimals)


def balance_update(event_time: int, asset: str, delta: int, decimals: int,
                   clear_time: int) -> dict[str, Any]:  # fmt: skip
    """``balanceUpdate``: ``delta`` atoms (negative: out) reached or left the account
    outside trading (a deposit, a faucet credit, a withdrawal)."""
    text = ("-" if delta < 0 else "") + _amount(abs(delta), decimals)
    return {"e": "balanceUpdate", "E": event_time, "a": asset, "d": text, "T": clear_time}


def stream_terminated(event_time: int) -> dict[str, Any]:
    return {"e": "eventStreamTerminated", "E": event_time}


def in_envelope(subscription_id: int, event_json: str) -> str:
    """An encoded event as the WebSocket API sends it to one subscription (the event is
    encoded once for every subscriber)."""
    return f'{{"subscriptionId":{subscription_id},"event":{event_json}}}'
