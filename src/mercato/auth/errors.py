"""The authentication error, in a module of its own so that every auth module (sessions,
2FA, API keys) can raise it without importing the others."""

from __future__ import annotations


class AuthError(Exception):
    """Authentication failed; ``status`` and ``code`` are the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
