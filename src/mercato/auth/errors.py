"""The authentication error, in a module of its own so that every auth module (sessions,
2FA, API keys) can raise it without importing the others."""

from __future__ import annotations

from mercato.core.errors import CodedError, ErrorKind


class AuthError(CodedError):
    """Authentication or authorisation refused. ``kind`` is UNAUTHENTICATED unless given:
    FORBIDDEN for a known caller who may not act, INVALID for a malformed credential
    (the HTTP status of each kind is api/errors.py's business)."""

    kind = ErrorKind.UNAUTHENTICATED
