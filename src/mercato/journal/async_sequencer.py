"""The asyncio front of a :class:`Sequencer`: ``await submit(cmd)`` gives the result.

It drives the sequencer's public phases (``stamp`` on the loop, ``commit`` on a journal
thread, ``apply_batch`` back on the loop), pipelined so that one batch is made durable
while the previous one is applied (see :meth:`AsyncSequencer._run`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from types import TracebackType

from mercato.core.commands import Command
from mercato.core.engine import Engine
from mercato.core.results import Result
from mercato.journal.segments import DEFAULT_SEGMENT_BYTES
from mercato.journal.sequencer import (
    Clock,
    CommandEncodeError,
    Listener,
    Sequencer,
    SequencerClosedError,
    check_command,
    encode_error,
    wall_clock_ms,
)

__all__ = ["AsyncSequencer"]

log = logging.getLogger(__name__)

_Pending = tuple[Command, "asyncio.Future[Result]"]


@dataclasses.dataclass(slots=True)
class _Batch:
    """A stamped batch whose commit has been handed to the journal thread."""

    seq0: int
    ts: int
    commands: list[Command]
    futures: list[asyncio.Future[Result]]
    commit: asyncio.Future[None]


class AsyncSequencer:
    """An asyncio front for a :class:`Sequencer`: ``await submit(cmd)`` gives the result.

    A background task drains the queue in batches of up to ``max_batch`` commands (after
    the first command of a batch arrives it waits at most ``max_wait_us`` for more, and
    not at all once the batch is full), makes the batch durable in a worker thread, so
    that the next batch queues up meanwhile, then applies it and resolves the futures.
    A result is never released before its batch is durable.
    """

    def __init__(self, sequencer: Sequencer, *, max_wait_us: int | None = None) -> None:
        if max_wait_us is None:
            max_wait_us = sequencer.max_wait_us
        if max_wait_us < 0:
            raise ValueError("max_wait_us must be >= 0")
        self.sequencer = sequencer
        self.max_wait = max_wait_us / 1_000_000
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self.batches = 0
        """Number of batches committed (each one write + one fdatasync)."""

    @classmethod
    async def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        max_batch: int = 1024,
        max_wait_us: int = 0,
        snapshot_every: int = 100_000,
        clock: Clock = wall_clock_ms,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        keep_snapshots: int = 3,
        lock_fd: int | None = None,
    ) -> AsyncSequencer:
        """Recover ``data_dir`` in a worker thread and return a started sequencer."""
        sequencer = await asyncio.to_thread(
            Sequencer,
            data_dir,
            max_batch=max_batch,
            max_wait_us=max_wait_us,
            snapshot_every=snapshot_every,
            clock=clock,
            segment_bytes=segment_bytes,
            keep_snapshots=keep_snapshots,
            lock_fd=lock_fd,
        )
        front = cls(sequencer)
        front._start()
        return front

    @property
    def engine(self) -> Engine:
        return self.sequencer.engine

    @property
    def last_seq(self) -> int:
        return self.sequencer.last_seq

    @property
    def last_ts(self) -> int:
        return self.sequencer.last_ts

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every durable batch applied from now on, in seq order,
        on the event loop, before the batch's results are released."""
        self.sequencer.subscribe(listener)

    def _start(self) -> None:
        if self._task is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="mercato-journal"
            )
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="mercato-sequencer"
            )

    def _check_open(self) -> None:
        if self._error is not None:
            raise SequencerClosedError(
                "the sequencer stopped after a fatal error; reopen it to recover"
            ) from self._error
        if self._closing:
            raise SequencerClosedError("the sequencer is closing")

    def submit_nowait(self, cmd: Command) -> asyncio.Future[Result]:
        """Queue ``cmd``; the future resolves to its result once it is durable."""
        self._check_open()
        check_command(cmd)
        self._start()
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.append((cmd, fut))
        self._wakeup.set()
        if len(pending) >= self.sequencer.max_batch:
            self._full.set()
        return fut

    async def submit(self, cmd: Command) -> Result:
        """Sequence ``cmd`` and return its result, once its batch is durable and applied.

        Cancelling the call before the command is taken into a batch withdraws it;
        afterwards the command is committed anyway."""
        return await self.submit_nowait(cmd)

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        futures = [self.submit_nowait(cmd) for cmd in commands]
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        """Pipeline: while one batch's write + fdatasync runs on the journal thread (which
        releases the GIL), the previous batch, already durable, is applied and its
        results released. Commits run one at a time, in order, on that single thread, so
        a batch is applied only after its own commit, and every batch before it, is
        durable."""
        pending = self._pending
        loop = asyncio.get_running_loop()
        in_flight: _Batch | None = None
        while True:
            if not pending and in_flight is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait_for_more = self.max_wait > 0 and len(pending) < self.sequencer.max_batch
            if in_flight is None and wait_for_more and not self._closing:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait)
            following = self._begin_batch(loop) if pending else None
            if in_flight is not None and not await self._finish_batch(in_flight, following):
                return
            in_flight = following

    def _begin_batch(self, loop: asyncio.AbstractEventLoop) -> _Batch | None:
        """Take up to ``max_batch`` queued commands, stamp them, start their commit."""
        sequencer = self.sequencer
        pending = self._pending
        commands: list[Command] = []
        futures: list[asyncio.Future[Result]] = []
        while pending and len(commands) < sequencer.max_batch:
            cmd, fut = pending.popleft()
            if not fut.cancelled():
                commands.append(cmd)
                futures.append(fut)
        if not commands:
            return None
        try:
            stamped = sequencer.stamp(commands)
        except CommandEncodeError:
            # Fail only the commands that cannot be encoded; sequence the others.
            kept: list[tuple[Command, asyncio.Future[Result]]] = []
            for cmd, fut in zip(commands, futures, strict=True):
                error = encode_error(cmd)
                if error is None:
                    kept.append((cmd, fut))
                elif not fut.done():
                    fut.set_exception(CommandEncodeError(0, cmd, error))
            commands = [cmd for cmd, _ in kept]
            futures = [fut for _, fut in kept]
            if not commands:
                return None
            stamped = sequencer.stamp(commands)
        commit = loop.run_in_executor(self._executor, sequencer.commit, stamped.framed)
        return _Batch(stamped.seq0, stamped.ts, commands, futures, commit)

    async def _finish_batch(self, batch: _Batch, following: _Batch | None) -> bool:
        """Wait for ``batch`` to be durable, apply it, release its results. False after a
        fatal error (``batch``, ``following`` and everything queued are failed)."""
        sequencer = self.sequencer
        try:
            await batch.commit
            results = sequencer.apply_batch(batch.seq0, batch.ts, batch.commands)
        except BaseException as exc:
            futures = batch.futures
            if following is not None:
                # Its commit was queued behind this batch; it is never acknowledged.
                futures = futures + following.futures
                with contextlib.suppress(BaseException):
                    await following.commit
            self._fail(exc, futures)
            if not isinstance(exc, Exception):
                raise
            return False
        self.batches += 1
        for fut, result in zip(batch.futures, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        if sequencer.snapshot_due and self._snapshot_task is None:
            self._start_snapshot()
        return True

    def _fail(self, exc: BaseException, futures: list[asyncio.Future[Result]]) -> None:
        """A fatal error: the batch's outcome is unknown; fail it and everything queued."""
        log.error("sequencer stopped: %r", exc)
        self._error = exc
        error = SequencerClosedError("the sequencer stopped after a fatal error")
        error.__cause__ = exc
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)
        while self._pending:
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(error)

    def _start_snapshot(self) -> None:
        seq, data = self.sequencer.take_snapshot()
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._write_snapshot(seq, data)
        )

    async def _write_snapshot(self, seq: int, data: bytes) -> None:
        try:
            await asyncio.to_thread(self.sequencer.store_snapshot, seq, data)
        except Exception:
            log.exception("automatic snapshot at seq %d failed; will retry later", seq)
        finally:
            self._snapshot_task = None

    async def close(self, *, snapshot: bool = False) -> None:
        """Stop accepting commands, commit and apply everything queued, optionally take a
        final snapshot, then close the journal (idempotent)."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        self._full.set()
        try:
            if self._task is not None:
                await self._task
            if self._snapshot_task is not None:
                await self._snapshot_task
            if snapshot and self._error is None:
                seq, data = self.sequencer.take_snapshot()
                await asyncio.to_thread(self.sequencer.store_snapshot, seq, data)
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self.sequencer.close()

    async def __aenter__(self) -> AsyncSequencer:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
