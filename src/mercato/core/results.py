"""The answer to every command: accepted with its events, or rejected with a code."""

from __future__ import annotations

from typing import Literal

import msgspec

from mercato.core.errors import CodedError
from mercato.core.events import Event

ResultStatus = Literal["ACCEPTED", "REJECTED", "DUPLICATE"]


class Result(msgspec.Struct, array_like=True, gc=False):
    """``ACCEPTED``: applied, ``events`` say what changed. ``REJECTED``: nothing changed,
    ``code`` is stable (docs/core.md lists them). ``DUPLICATE``: a deposit whose external id
    was already credited (within the id window); nothing changed. ``order_id`` is set for
    accepted orders."""

    seq: int
    status: ResultStatus
    events: list[Event]
    code: str = ""
    message: str = ""
    order_id: int = 0

    @property
    def accepted(self) -> bool:
        return self.status == "ACCEPTED"


class Rejection(CodedError):
    """Raised inside the engine before any state changes; becomes a REJECTED result."""
