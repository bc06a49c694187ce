"""What `mercato custody run` needs to run the workers outside `mercato serve`: the
engine behind the internal port (``mercato.port.remote``) and a projection catch-up
that reads the shared store's cursor (docs/custody.md, "Process model")."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.errors import CodedError, ErrorKind
from mercato.port.remote import RemoteEnginePort
from mercato.store.tables import projection_cursor

CATCH_UP_SECONDS = 5.0
PROJECTION = "sql"  # the projector's cursor name (store/projector.py)


class StoreCatchUp:
    """Waits until the shared store's projection holds every command the engine has
    acknowledged (its sequence asked of the engine first)."""

    def __init__(self, db: AsyncEngine, port: RemoteEnginePort) -> None:
        self._db = db
        self._port = port

    async def caught_up(self, seq: int | None = None) -> None:
        wanted = (await self._port.refresh()).last_seq if seq is None else seq
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while await self._cursor() < wanted:
            if time.monotonic() > deadline:
                raise CodedError(
                    "PROJECTION_LAGGING", "the projection is catching up", ErrorKind.UNAVAILABLE
                )
            await asyncio.sleep(0.05)

    async def _cursor(self) -> int:
        async with self._db.connect() as connection:
            seq = await connection.scalar(
                sa.select(projection_cursor.c.last_seq).where(
                    projection_cursor.c.name == PROJECTION
                )
            )
        return int(seq or 0)
