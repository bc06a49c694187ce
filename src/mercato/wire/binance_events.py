"""Binance's user data stream events (user-data-stream.md), in Binance's field names and
order: ``executionReport`` (an order's change), ``outboundAccountPosition`` (the balances
a change touched), ``balanceUpdate`` (a deposit or a withdrawal) and
``eventStreamTerminated``; and the WebSocket API's envelope of an event,
``{"subscriptionId": n, "event": {...}}``.

Numbers are decimal strings padded to at least 8 places, as Binance sends them
(``"0.01000000"``); an amount finer than that keeps its digits.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from mercato.core.events import Trade
from mercato.core.model import LIMIT_PRICED_TYPES
from mercato.core.order_state import OrderState
from mercato.wire.decimals import MarketFormat

EIGHT = Decimal("0.00000001")
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


def padded(text: str) -> str:
    """``"0.01"`` -> ``"0.01000000"``: at least 8 decimal places, never fewer digits."""
    value = Decimal(text)
    if value.as_tuple().exponent >= -8:  # type: ignore[operator]
        value = value.quantize(EIGHT)
    return f"{value:f}"


def binance_status(status: str) -> str:
    """An untriggered stop is NEW on Binance (it is accepted, not yet working)."""
    return "NEW" if status == "UNTRIGGERED" else status


def working(state: OrderState, status: str) -> bool:
    """On the book with ``status``: a limit-priced, resting order that is live (not an
    untriggered stop)."""
    return (status in ("NEW", "PARTIALLY_FILLED") and state.type in LIMIT_PRICED_TYPES
            and state.time_in_force not in ("IOC", "FOK")
            and (state.triggered_at is not None or state.stop_price == 0))  # fmt: skip


def _quantity(state: OrderState) -> int:
    return state.filled if state.quantity >= QUOTE_BUY_SENTINEL else state.quantity


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
        "q": padded(fmt.qty(_quantity(state))),
        "p": padded(fmt.price(state.price)),
        "P": padded(fmt.price(state.stop_price)),
        "F": padded(fmt.qty(state.iceberg_quantity)),
        "g": -1,
        "C": state.client_order_id if execution == "CANCELED" else "",
        "x": execution,
        "X": binance_status(state.status),
        "r": "NONE",
        "i": state.order_id,
        "l": padded(fmt.qty(trade.quantity)) if trade is not None else padded("0"),
        "z": padded(fmt.qty(state.filled)),
        "L": padded(fmt.price(trade.price)) if trade is not None else padded("0"),
        "n": padded(fmt.amount(fee, fee_asset)) if fee_asset is not None else "0",
        "N": fee_asset,
        "T": transact_time,
        "t": trade.trade_id if trade is not None else -1,
        "I": execution_id,
        "w": working(state, state.status),
        "m": trade is not None and not taker,
        "M": False,
        "O": state.created_at,
        "Z": padded(fmt.quote_amount(state.filled_quote)),
        "Y": padded(fmt.quote_amount(trade.quote_amount)) if trade is not None else padded("0"),
        "Q": padded(fmt.quote_amount(state.quote_quantity)),
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


def account_position(event_time: int, update_time: int,
                     balances: Iterable[tuple[str, str, str]]) -> dict[str, Any]:  # fmt: skip
    """``outboundAccountPosition``: (asset, free, locked) of each asset that changed."""
    rows = [{"a": asset, "f": padded(free), "l": padded(locked)}
            for asset, free, locked in balances]  # fmt: skip
    return {"e": "outboundAccountPosition", "E": event_time, "u": update_time, "B": rows}


def balance_update(event_time: int, asset: str, delta: str, clear_time: int) -> dict[str, Any]:
    """``balanceUpdate``: ``delta`` (signed) reached or left the account outside trading."""
    sign = "-" if delta.startswith("-") else ""
    return {"e": "balanceUpdate", "E": event_time, "a": asset,
            "d": sign + padded(delta.lstrip("-")), "T": clear_time}  # fmt: skip


def stream_terminated(event_time: int) -> dict[str, Any]:
    return {"e": "eventStreamTerminated", "E": event_time}


def in_envelope(subscription_id: int, event_json: str) -> str:
    """An encoded event as the WebSocket API sends it to one subscription (the event is
    encoded once for every subscriber)."""
    return f'{{"subscriptionId":{subscription_id},"event":{event_json}}}'
