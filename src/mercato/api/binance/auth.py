"""Binance's signed requests (SIGNED endpoints): ``X-MBX-APIKEY``, ``timestamp``,
``recvWindow`` and ``signature``, the hex HMAC-SHA256 of the query string followed by
the form body exactly as sent.

The check itself is Mercato's (:func:`mercato.auth.api_keys.authenticate_signed`, via
:func:`mercato.api.auth_routes.caller_with`, which also charges the account's budget);
this module adds what Binance checks first and answers in Binance's words: a missing or
malformed key (-2014), a missing ``timestamp`` or ``signature`` (-1102), a too large
``recvWindow``, and a timestamp ahead of the server's clock rather than behind it.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal

from starlette.requests import Request

from mercato.api.auth_routes import caller_with
from mercato.api.binance.errors import binance_error_of
from mercato.auth.api_keys import MAX_RECV_WINDOW_MS, form_fields
from mercato.auth.sessions import Principal
from mercato.core.errors import CodedError
from mercato.wire.binance import BinanceError
from mercato.wire.binance_errors import BY_CODE, from_coded, mandatory_parameter

FORM = "application/x-www-form-urlencoded"
KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{1,128}$")
RECV_WINDOW = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,3})?$")


def bad_key_format() -> BinanceError:
    return BinanceError(*BY_CODE["UNAUTHORIZED"])


async def request_params(request: Request) -> dict[str, str]:
    """The parameters of a request: its query string, then its form body (Binance takes
    both, mixed); an empty value is kept (empty counts as not sent)."""
    params = form_fields(request.scope["query_string"])
    if request.headers.get("content-type", "").startswith(FORM):
        form_fields(await request.body(), params)
    return params


def _check_window(params: dict[str, str]) -> None:
    for name in ("timestamp", "signature"):
        if not params.get(name):
            raise mandatory_parameter(name)
    window = params.get("recvWindow")
    if not window:
        return
    if not RECV_WINDOW.match(window):  # up to 3 decimal places, as Binance takes it
        raise mandatory_parameter("recvWindow")
    if Decimal(window) > MAX_RECV_WINDOW_MS:
        raise BinanceError(
            400, -1102,
            f"'recvWindow' contains unexpected value. Cannot be greater than {MAX_RECV_WINDOW_MS}.",
        )  # fmt: skip


def _ahead(params: dict[str, str]) -> bool:
    """The request's timestamp is 1 s or more ahead of the server's clock."""
    stamp = params.get("timestamp", "")
    return stamp.isdigit() and int(stamp) >= time.time() * 1000 + 1000


async def signed_caller(request: Request, params: dict[str, str], permission: str) -> Principal:
    """The principal of a signed request whose key holds ``permission`` (Binance's
    answer otherwise). Never a bearer session: the Binance dialect has only keys."""
    key = request.headers.get("x-mbx-apikey")
    if not key or not KEY_FORMAT.match(key):
        raise bad_key_format()
    _check_window(params)
    try:
        return await caller_with(request, permission, params)
    except CodedError as error:
        if error.code == "TIMESTAMP_OUTSIDE_WINDOW" and _ahead(params):
            raise BinanceError(*BY_CODE["TIMESTAMP_AHEAD"]) from None
        raise binance_error_of(error) or from_coded(error) from None
