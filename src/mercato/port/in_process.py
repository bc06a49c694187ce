"""The port in this process: over an :class:`AsyncSequencer` and its engine."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mercato.core.commands import Command
from mercato.core.results import Result
from mercato.core.view import EngineView
from mercato.journal.async_sequencer import AsyncSequencer
from mercato.journal.sequencer import Listener


class InProcessPort:
    """:class:`mercato.port.ExchangePort` over ``sequencer``. The caller keeps owning the
    sequencer (opening, snapshots, closing); the port only submits, subscribes and reads."""

    __slots__ = ("_sequencer", "view")

    def __init__(self, sequencer: AsyncSequencer) -> None:
        self._sequencer = sequencer
        self.view = EngineView(sequencer.engine)

    @property
    def last_seq(self) -> int:
        return self._sequencer.last_seq

    def submit(self, cmd: Command) -> asyncio.Future[Result]:
        # The sequencer's own future: the order path pays no extra coroutine. Cancelling
        # the await before the command is taken into a batch withdraws it.
        return self._sequencer.submit_nowait(cmd)

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        return await self._sequencer.submit_many(commands)

    def subscribe(self, listener: Listener) -> None:
        self._sequencer.subscribe(listener)
