"""The error of an application service: a stable code and a message for the user."""

from __future__ import annotations

from mercato.core.results import Result


class ServiceError(Exception):
    """Refused with a stable ``code`` (docs/errors.md); the adapter picks the status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def rejected(cls, result: Result) -> ServiceError:
        """The engine's rejection, with the engine's code."""
        return cls(result.code, result.message)
