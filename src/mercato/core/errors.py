"""The one shape of every refusal Mercato gives: a stable ``code``, a ``message`` that says
what to fix, and a protocol-neutral ``kind``.

The kind says what went wrong (the input, the caller's identity, their rights, a missing
thing, a conflict with the current state); each dialect turns it into its own answer, and
only there: `api/errors.py` maps kinds to HTTP statuses, a Binance-compatible dialect will map
codes to Binance's numeric codes. Core, auth and the application services never know HTTP.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID = "INVALID"  # the request itself is wrong: fix the input
    UNAUTHENTICATED = "UNAUTHENTICATED"  # who is calling is unknown or not proven
    FORBIDDEN = "FORBIDDEN"  # the caller is known but may not do this
    NOT_FOUND = "NOT_FOUND"  # the thing named does not exist (for this caller)
    CONFLICT = "CONFLICT"  # valid, but the current state does not allow it
    RATE_LIMITED = "RATE_LIMITED"  # over a budget: retry later
    UNAVAILABLE = "UNAVAILABLE"  # the service cannot take it now


class CodedError(Exception):
    """Base of every coded error (money parsing, engine rejections, users, sessions,
    application services, the HTTP layer's own)."""

    kind: ErrorKind = ErrorKind.INVALID

    def __init__(self, code: str, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if kind is not None:
            self.kind = kind
