"""The one table from Mercato's refusal codes to Binance's (HTTP status, code, message).

Binance's messages are reproduced exactly: CCXT maps errors by matching the message text
before the code. Where Binance's message names a value (a parameter), the builder
functions below fill it in. docs/binance.md lists the table.
"""

from __future__ import annotations

from mercato.core.errors import CodedError, ErrorKind
from mercato.wire.binance import BinanceError

TOO_MANY = "Too many requests; please use the websocket for live updates."
OUTSIDE_WINDOW = "Timestamp for this request is outside of the recvWindow."
OVERLOADED = (
    "Server is currently overloaded with other requests. Please try again in a few minutes."
)
UNKNOWN = (500, -1000, "An unknown error occurred while processing the request.")

#: Mercato code -> (HTTP status, Binance code, Binance message).
BY_CODE: dict[str, tuple[int, int, str]] = {
    "UNKNOWN_MARKET": (400, -1121, "Invalid symbol."),
    "INSUFFICIENT_BALANCE": (400, -2010, "Account has insufficient balance for requested action."),
    "INVALID_SIGNATURE": (400, -1022, "Signature for this request is not valid."),
    "UNKNOWN_API_KEY": (401, -2015, "Invalid API-key, IP, or permissions for action."),
    "IP_NOT_ALLOWED": (401, -2015, "Invalid API-key, IP, or permissions for action."),
    "MISSING_PERMISSION": (401, -2015, "Invalid API-key, IP, or permissions for action."),
    "TIMESTAMP_OUTSIDE_WINDOW": (400, -1021, OUTSIDE_WINDOW),
    # The engine's Binance rules (issue 15, docs/core.md "Binance's market and amend rules"):
    # errors.md, "Messages for -2010 ... and -2038 ORDER_AMEND_REJECTED".
    "NO_LIQUIDITY": (400, -2010, "Order book liquidity is less than symbol minimum quantity."),
    "AMEND_QUANTITY_INCREASE": (400, -2038, "Order amend (quantity increase) is not supported."),
    "INVALID_AMEND": (400, -2038, "The requested action would change no state; rejecting"),
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


def from_coded(error: CodedError) -> BinanceError:
    status, code, msg = BY_CODE.get(error.code) or BY_KIND.get(error.kind, UNKNOWN)
    return BinanceError(status, code, msg)


def mandatory_parameter(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def too_many_requests(retry_after: int) -> BinanceError:
    return BinanceError(
        429, -1003, TOO_MANY,
        {"Retry-After": str(retry_after)},
    )  # fmt: skip
