"""Any refusal raised under a Binance route -> the Binance triple it answers as.

Mercato's own refusals (``CodedError`` with a stable code) go through the one table,
:data:`mercato.wire.binance_errors.BY_CODE`; the web layer's own (a malformed parameter,
a rate limit) are mapped here."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mercato.api.ratelimit import RateLimited
from mercato.core.errors import CodedError
from mercato.wire.binance import BinanceError
from mercato.wire.binance_errors import from_coded, mandatory_parameter, too_many_requests


def binance_error_of(exc: Exception) -> BinanceError | None:
    """The Binance refusal for ``exc``, or None for an exception that is not a refusal (a
    bug: it stays a 500)."""
    if isinstance(exc, BinanceError):
        return exc
    if isinstance(exc, RateLimited):
        return too_many_requests(exc.retry_after)
    if isinstance(exc, CodedError):
        return from_coded(exc)
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        where = errors[0].get("loc", ("", "?"))[-1] if errors else "?"
        return mandatory_parameter(str(where))
    if isinstance(exc, HTTPException):
        return BinanceError(exc.status_code, -1000, str(exc.detail))
    return None
