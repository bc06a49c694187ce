"""The one table from Mercato's refusal codes to Binance's (HTTP status, code, message).

Binance's messages are reproduced exactly: CCXT maps errors by matching the message text
before the code. Where Binance's message names a value (a parameter), the builder
functions below fill it in. docs/binance.md lists the table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from mercato.core.errors import CodedError, ErrorKind
from mercato.core.model import MAX_ICEBERG_PARTS
from mercato.wire.binance import BinanceError

# Binance's -1003 text for a server-side budget (its other, for request weight, names the
# limit: api/binance/weights.py).
TOO_MANY = "Too many requests queued."
OUTSIDE_WINDOW = "Timestamp for this request is outside of the recvWindow."
OVERLOADED = (
    "Server is currently overloaded with other requests. Please try again in a few minutes."
)
UNKNOWN = (500, -1000, "An unknown error occurred while processing the request.")
TIMEOUT = (
    "Timeout waiting for response from backend server. Send status unknown; "
    "execution status unknown."
)
AHEAD = "Timestamp for this request was 1000ms ahead of the server's time."
MANDATORY = "Mandatory parameter '{name}' was not sent, was empty/null, or malformed."

KEY_REJECTED = (401, -2015, "Invalid API-key, IP, or permissions for action.")
DISABLED = (400, -2010, "This action is disabled on this account.")
CLOSED = (400, -2010, "Market is closed.")
UNKNOWN_ORDER_SENT = (400, -2011, "Unknown order sent.")


def filter_failure(name: str) -> tuple[int, int, str]:
    return (400, -1013, f"Filter failure: {name}")


def invalid_data(parameter: str) -> tuple[int, int, str]:
    return (400, -1130, f"Data sent for parameter '{parameter}' is not valid.")


#: Mercato code -> (HTTP status, Binance code, Binance message): every code an /api/v3 or
#: /ws-api/v3 request can meet. Where one code covers several of Binance's answers (a
#: quantity off the step or out of range: LOT_SIZE, MARKET_LOT_SIZE or ICEBERG_PARTS),
#: :func:`order_refusal` picks the precise one from the order's parameters.
BY_CODE: dict[str, tuple[int, int, str]] = {
    # orders: the engine's and the trading service's refusals
    "UNKNOWN_MARKET": (400, -1121, "Invalid symbol."),
    "INSUFFICIENT_BALANCE": (400, -2010, "Account has insufficient balance for requested action."),
    "INVALID_PRICE": filter_failure("PRICE_FILTER"),
    "INVALID_STOP_PRICE": filter_failure("PRICE_FILTER"),
    "INVALID_QUANTITY": filter_failure("LOT_SIZE"),
    "INVALID_ICEBERG_QUANTITY": filter_failure("LOT_SIZE"),
    "INVALID_QUOTE_QUANTITY": (400, -1111, "Parameter 'quoteOrderQty' has too much precision."),
    "NOTIONAL_TOO_SMALL": filter_failure("MIN_NOTIONAL"),  # the filter exchangeInfo lists
    "ORDER_WOULD_TAKE": (400, -2010, "Order would immediately match and take."),
    "ORDER_WOULD_TRIGGER_IMMEDIATELY": (400, -2010, "Order would trigger immediately."),
    "DUPLICATE_CLIENT_ORDER_ID": (400, -2010, "Duplicate order sent."),
    "MARKET_HALTED": CLOSED,
    "MARKET_CANCEL_ONLY": CLOSED,
    "STP_MODE_NOT_ALLOWED": invalid_data("selfTradePreventionMode"),
    "INVALID_ORDER": (400, -1014, "Unsupported order combination."),
    "INVALID_EXPIRY": invalid_data("goodTillDate"),
    "UNKNOWN_ORDER": (400, -2013, "Order does not exist."),
    "ORDER_NOT_OPEN": UNKNOWN_ORDER_SENT,
    "ORDER_NOT_AMENDABLE": (400, -2038, "Unsupported order combination"),
    "INVALID_AMEND": (400, -2038, "The requested action would change no state; rejecting"),
    # who may trade
    "EMAIL_NOT_VERIFIED": DISABLED,
    "USER_FROZEN": DISABLED,
    "USER_DELETED": DISABLED,
    # signed requests and credentials
    "INVALID_SIGNATURE": (400, -1022, "Signature for this request is not valid."),
    "TIMESTAMP_OUTSIDE_WINDOW": (400, -1021, OUTSIDE_WINDOW),
    "TIMESTAMP_AHEAD": (400, -1021, AHEAD),
    "INVALID_TIMESTAMP": (400, -1102, MANDATORY.format(name="timestamp")),
    "UNAUTHORIZED": (401, -2014, "API-key format invalid."),
    "UNKNOWN_API_KEY": KEY_REJECTED,
    "IP_NOT_ALLOWED": KEY_REJECTED,
    "MISSING_PERMISSION": KEY_REJECTED,
    "INVALID_TOKEN": KEY_REJECTED,
    "TOKEN_EXPIRED": KEY_REJECTED,
    "SESSION_REVOKED": KEY_REJECTED,
    # the web layer and the service
    "INVALID_REQUEST": (400, -1100, "Illegal characters found in a parameter."),
    "RATE_LIMITED": (429, -1003, TOO_MANY),
    "NOT_READY": (503, -1016, "This service is no longer available."),
    "PROJECTION_LAGGING": (503, -1007, TIMEOUT),
    # The engine's Binance rules (issue 15, docs/core.md "Binance's market and amend rules"):
    # errors.md, "Messages for -2010 ... and -2038 ORDER_AMEND_REJECTED".
    # a query's orderId and origClientOrderId name different orders (errors.md -2039)
    "CLIENT_ORDER_ID_MISMATCH": (400, -2039, "Client order ID is not correct for this order ID."),
    "NO_LIQUIDITY": (400, -2010, "Order book liquidity is less than symbol minimum quantity."),
    "AMEND_QUANTITY_INCREASE": (400, -2038, "Order amend (quantity increase) is not supported."),
}

#: Mercato's codes no Binance spot endpoint can meet (accounts, 2FA, custody, admin,
#: withdrawals, the faucet): answered by their kind (BY_KIND) if they ever are.
OUTSIDE_SPOT: tuple[str, ...] = (
    "ACCOUNT_LOCKED", "ADMIN_REQUIRED", "ALERT_ACKNOWLEDGED", "ALERT_NOT_FOUND",
    "ASSET_DECIMALS_IMMUTABLE", "CHAIN_UNAVAILABLE", "COMMAND_NOT_ALLOWED", "EMAIL_TAKEN",
    "NO_SEED", "SEED_EXISTS", "CUSTODY_UNAVAILABLE", "DUPLICATE_WITHDRAWAL", "FAUCET_DISABLED",
    "HOLD_NOT_FOUND",
    "HOLD_RELEASED", "INVALID_AMOUNT", "INVALID_API_KEY", "INVALID_ASSET",
    "INVALID_CREDENTIALS", "INVALID_DEPOSIT", "INVALID_EMAIL", "INVALID_FEE_TIER",
    "INVALID_MARKET", "INVALID_MNEMONIC", "INVALID_ROLE", "INVALID_STATUS", "INVALID_TOTP",
    "INVALID_WITHDRAWAL", "MARKET_HAS_ORDERS", "NOT_FOUND", "SUPPLY_LIMIT", "TOKEN_REUSED",
    "TOO_MANY_API_KEYS", "TOTP_ALREADY_ENABLED", "TOTP_NOT_ENABLED", "TOTP_NOT_ENROLLED",
    "TOTP_REQUIRED", "TOTP_REUSED", "UNKNOWN_ASSET", "UNKNOWN_USER", "UNKNOWN_WITHDRAWAL",
)  # fmt: skip

#: A cancel's answers where they differ from the table (Binance: -2011 for any order a
#: cancel cannot find or finish) ...
CANCEL_REFUSALS: dict[str, tuple[int, int, str]] = {
    "UNKNOWN_ORDER": UNKNOWN_ORDER_SENT,
    "ORDER_NOT_OPEN": UNKNOWN_ORDER_SENT,
}
#: ... and a query's (-2013 for an order not found).
QUERY_REFUSALS: dict[str, tuple[int, int, str]] = {
    "UNKNOWN_ORDER": (400, -2013, "Order does not exist."),
}

#: When a code is not in the table: the answer for its kind.
BY_KIND: dict[ErrorKind, tuple[int, int, str]] = {
    ErrorKind.INVALID: (400, -1013, "Invalid message."),
    ErrorKind.UNAUTHENTICATED: (401, -2015, "Invalid API-key, IP, or permissions for action."),
    ErrorKind.FORBIDDEN: (401, -2015, "Invalid API-key, IP, or permissions for action."),
    ErrorKind.NOT_FOUND: (400, -2013, "Order does not exist."),
    ErrorKind.CONFLICT: (400, -2010, "Order was not processed."),
    ErrorKind.RATE_LIMITED: (429, -1003, TOO_MANY),
    ErrorKind.UNAVAILABLE: (503, -1008, OVERLOADED),
}


def from_coded(
    error: CodedError, overrides: dict[str, tuple[int, int, str]] | None = None
) -> BinanceError:
    """Binance's answer to ``error``; ``overrides``: an operation's own answers for some
    codes (a cancel's -2011 where a query says -2013)."""
    triple = (overrides or {}).get(error.code) or BY_CODE.get(error.code)
    status, code, msg = triple or BY_KIND.get(error.kind, UNKNOWN)
    return BinanceError(status, code, msg)


class OrderParams(Protocol):
    """What :func:`order_refusal` reads of an order (the dialect's ticket)."""

    @property
    def type(self) -> str: ...
    @property
    def quantity(self) -> str | None: ...
    @property
    def iceberg_quantity(self) -> str | None: ...


def order_refusal(error: CodedError, order: OrderParams) -> BinanceError:
    """Binance's answer to a refused placement: a bad quantity is MARKET_LOT_SIZE for a
    market order, "IcebergQty exceeds QTY." for an iceberg slice not below the quantity
    and ICEBERG_PARTS for one in too many parts, as Binance answers; the rest goes
    through the table."""
    if error.code == "INVALID_QUANTITY":
        if order.type in ("MARKET", "STOP_LOSS", "TAKE_PROFIT"):
            return BinanceError(*filter_failure("MARKET_LOT_SIZE"))
        if order.iceberg_quantity and order.quantity:
            if Decimal(order.iceberg_quantity) >= Decimal(order.quantity):
                return BinanceError(400, -2010, "IcebergQty exceeds QTY.")  # errors.md
            if _too_many_parts(order):
                return BinanceError(*filter_failure("ICEBERG_PARTS"))
    return from_coded(error)


def _too_many_parts(order: OrderParams) -> bool:
    assert order.iceberg_quantity is not None and order.quantity is not None
    visible, total = Decimal(order.iceberg_quantity), Decimal(order.quantity)
    return visible > 0 and -(-total // visible) > MAX_ICEBERG_PARTS


def mandatory_parameter(name: str) -> BinanceError:
    return BinanceError(400, -1102, MANDATORY.format(name=name))


def illegal_characters(name: str, legal: str) -> BinanceError:
    return BinanceError(
        400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'."
    )


def invalid_parameter(name: str) -> BinanceError:
    return BinanceError(*invalid_data(name))


def not_required(name: str) -> BinanceError:
    return BinanceError(400, -1106, f"Parameter '{name}' sent when not required.")


def too_many_requests(retry_after: int) -> BinanceError:
    return BinanceError(
        429, -1003, TOO_MANY,
        {"Retry-After": str(retry_after)},
    )  # fmt: skip


def too_many_orders(limit: int | None, interval: str, retry_after: int) -> BinanceError:
    """-1015: the account placed too many orders in ``interval`` (Binance's words)."""
    shown = "" if limit is None else f" current limit is {limit} orders per {interval}."
    return BinanceError(
        429, -1015, f"Too many new orders;{shown}" if shown else "Too many new orders.",
        {"Retry-After": str(retry_after)},
    )  # fmt: skip
