"""The error of an application service: a stable code and a message for the user."""

from __future__ import annotations

from mercato.core.errors import CodedError, ErrorKind
from mercato.core.results import Result

#: The codes the services raise that are not INVALID input (UNKNOWN_* is NOT_FOUND: an
#: unknown market, asset or order, the engine's rejection included).
KIND_OF_CODE = {
    "EMAIL_NOT_VERIFIED": ErrorKind.FORBIDDEN,
    "FAUCET_DISABLED": ErrorKind.FORBIDDEN,
    "ORDER_NOT_OPEN": ErrorKind.CONFLICT,
    "PROJECTION_LAGGING": ErrorKind.UNAVAILABLE,
}


def kind_of(code: str) -> ErrorKind:
    kind = KIND_OF_CODE.get(code)
    if kind is not None:
        return kind
    return ErrorKind.NOT_FOUND if code.startswith("UNKNOWN_") else ErrorKind.INVALID


class ServiceError(CodedError):
    """Refused with a stable ``code`` (docs/errors.md); its kind follows from the code and
    the adapter picks the status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, kind_of(code))

    @classmethod
    def unknown_market(cls, symbol: str) -> ServiceError:
        return cls("UNKNOWN_MARKET", f"no market {symbol!r}; see GET /api/v1/markets")

    @classmethod
    def unknown_asset(cls, symbol: str) -> ServiceError:
        return cls("UNKNOWN_ASSET", f"no asset {symbol!r}; see GET /api/v1/assets")

    @classmethod
    def rejected(cls, result: Result) -> ServiceError:
        """The engine's rejection, with the engine's code."""
        return cls(result.code, result.message)
