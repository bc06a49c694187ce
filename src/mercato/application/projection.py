"""Reads of the SQL projection, after it has caught up with what was acknowledged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.application.errors import ServiceError
from mercato.port import ExchangePort

PROJECTION_WAIT_SECONDS = 5.0

_T = TypeVar("_T")


class ProjectionCursor(Protocol):
    """How far the SQL projection is (the projector, in its process or not)."""

    @property
    def cursor(self) -> int: ...
    async def wait_for(self, seq: int, timeout: float | None = None) -> bool: ...


class ProjectionReads:
    """Connections for reads of the projection, and the wait that makes them current."""

    def __init__(self, port: ExchangePort, cursor: ProjectionCursor, reads: AsyncEngine) -> None:
        self._port = port
        self._cursor = cursor
        self._reads = reads  # DEFERRED on SQLite: a read never queues for the write lock

    @property
    def cursor(self) -> int:
        """The last seq the projection holds."""
        return self._cursor.cursor

    async def caught_up(self, seq: int | None = None) -> None:
        """Wait until the projection holds every command acknowledged so far (or ``seq``):
        a client reads what it has been told happened. PROJECTION_LAGGING after 5 s."""
        wanted = self._port.last_seq if seq is None else seq
        if not await self._cursor.wait_for(wanted, PROJECTION_WAIT_SECONDS):
            raise ServiceError("PROJECTION_LAGGING", "history is catching up; retry shortly")

    def connect(self) -> AsyncConnection:
        """A read connection (``async with``)."""
        return self._reads.connect()

    async def current(self, query: Callable[..., Awaitable[_T]], *args: Any, **filters: Any) -> _T:
        """``query(connection, *args, **filters)`` once the projection holds everything
        acknowledged so far: what a client reads after it was told something happened."""
        await self.caught_up()
        async with self._reads.connect() as connection:
            return await query(connection, *args, **filters)
