"""The projector: the engine's event stream into SQL tables, exactly once.

A :class:`Projector` listens to the sequencer (``Sequencer.listeners``) and writes the
orders, trades, fills, ledger entries and balances, and candles of every applied command
into the SQL store (tables in :mod:`mercato.store.tables`, see docs/store.md), many
batches per transaction. Its cursor (``projection_cursor``: the last seq projected) is
updated in the same transaction as the rows, so after any crash or restart the tables hold
exactly the effects of the commands up to the cursor: a new projector reads the cursor and
catches up from the journal (:func:`mercato.journal.replay_applied`) before it projects
live batches.

It is three modules: this one (the queue, catch-up from the journal, retries),
:mod:`~mercato.store.projector_plan` (events into rows, pure, over
:mod:`mercato.core.order_state`) and :mod:`~mercato.store.projector_sql` (rows and the
cursor into the tables, one transaction); :mod:`~mercato.store.projector_process` runs
it in a child process for the service.

Usage::

    projector = Projector(db)
    sequencer.sequencer.listeners.append(projector.on_batch)  # first: nothing is missed
    await projector.start(config.engine_dir, sequencer.last_seq)
    ...
    if await projector.wait_for(result.seq, timeout=2.0):  # read-your-writes
        rows = await queries.open_orders(connection, user_id)
    ...
    await projector.stop()  # on shutdown: projects what is queued

Unlike the rest of :mod:`mercato.store`, this module depends on the core (events, ledger
postings), the journal (catch-up) and :mod:`mercato.core.candles` (one candle fold
for SQL and memory).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.journal import replay_applied
from mercato.port import AppliedBatch
from mercato.store.order_rows import ORDER_MUTABLE_COLUMNS
from mercato.store.projector_plan import Plan, Planner, ProjectionError
from mercato.store.projector_sql import (
    CursorConflictError,
    load_balances,
    load_state,
    move_cursor,
    write_rows,
)

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_COMMANDS",
    "ORDER_MUTABLE_COLUMNS",
    "REFUSED_ERRORS",
    "RETRYABLE_ERRORS",
    "CursorConflictError",
    "ProjectionError",
    "ProjectionProgress",
    "Projector",
    "ProjectorStats",
]

log = logging.getLogger(__name__)

#: Commands per transaction, at most (a transaction ends at a batch boundary or inside a
#: batch larger than this).
DEFAULT_MAX_COMMANDS: Final = 5_000
#: Commands queued at most; beyond, batches are left to the journal and read from it once
#: the backlog drains (a database away for long must not exhaust memory).
DEFAULT_MAX_BACKLOG: Final = 200_000
#: Groups at least this large are folded into rows on a worker thread (the GIL still
#: switches every few ms, so the event loop keeps answering meanwhile).
THREAD_PLAN_COMMANDS: Final = 256

#: Rows the database refuses (a duplicate key, a value out of range): retrying cannot help,
#: it is a bug or a second writer. The projector stops (fatal), the cursor stays put.
REFUSED_ERRORS: Final = (
    sa.exc.IntegrityError,
    sa.exc.DataError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
)
#: What a database that is away or busy raises (through SQLAlchemy or, on the bulk path,
#: from the driver): retried. Anything else is a bug and stops the projector.
RETRYABLE_ERRORS: Final = (
    sa.exc.DBAPIError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

_T = TypeVar("_T")


class ProjectionProgress:
    """How far a projection has committed (:attr:`cursor`), and the callers waiting for a
    command to be projected (read-your-writes). Shared by :class:`Projector` and the
    service's :class:`~mercato.store.projector_process.ProjectorProcess`."""

    def __init__(self) -> None:
        self._cursor = 0
        self._waiters: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._waiter_ids = itertools.count()

    @property
    def cursor(self) -> int:
        """Seq of the last command whose effects are committed to the tables."""
        return self._cursor

    def lag(self, live_last_seq: int) -> int:
        """Commands the engine applied (up to ``live_last_seq``) that are not projected."""
        return max(0, live_last_seq - self._cursor)

    def _stopped(self) -> bool:
        """Whether the projection will move no further."""
        return False

    async def wait_for(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until the command ``seq`` is projected: True once it is, False after
        ``timeout`` seconds or, at once, if the projection stopped short of it."""
        if self._cursor >= seq:
            return True
        if self._stopped():
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if len(self._waiters) > 10_000:  # timed-out waits pile up while nothing commits
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
        heapq.heappush(self._waiters, (seq, next(self._waiter_ids), future))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return self._cursor >= seq

    def _advance(self, cursor: int) -> None:
        """The tables now hold every command up to ``cursor``."""
        self._cursor = cursor
        waiters = self._waiters
        while waiters and waiters[0][0] <= cursor:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(True)

    def _answer_waiters(self) -> None:
        """Answer every waiter now: the projection will move no further."""
        for seq, _, future in self._waiters:
            if not future.done():
                future.set_result(self._cursor >= seq)
        self._waiters.clear()


@dataclasses.dataclass(slots=True)
class ProjectorStats:
    """Counters since the projector started (for the benchmark and, later, metrics)."""

    transactions: int = 0
    commands: int = 0
    rows: int = 0
    retries: int = 0
    caught_up: int = 0  # commands projected from the journal rather than live


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _take(iterator: Iterator[_T], count: int) -> list[_T]:
    return list(itertools.islice(iterator, count))


class Projector(ProjectionProgress):
    """Projects applied batches into the SQL tables; see the module docstring.

    ``on_batch`` is the sequencer listener: it only queues the batch (thread-safe, never
    raises, never blocks). A background task takes what is queued, up to ``max_commands``
    commands, folds it into rows in memory (an order placed and filled within the group is
    one INSERT), and writes the rows and the new cursor in one transaction. A failed
    transaction is retried with backoff (``retry_initial`` doubling up to ``retry_max``
    seconds) with the same rows until it commits, and nothing else is projected meanwhile.
    A gap in what reaches ``on_batch`` (registered late, or batches left out while
    ``max_backlog`` commands were queued) is read from the journal.
    """

    def __init__(
        self,
        db: AsyncEngine,
        name: str = "sql",
        *,
        max_commands: int = DEFAULT_MAX_COMMANDS,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        if max_commands < 1 or max_backlog < 1:
            raise ValueError("max_commands and max_backlog must be at least 1")
        self.db = db
        self.name = name
        self.max_commands = max_commands
        self.max_backlog = max_backlog
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_commit = on_commit
        """Called with the new cursor after each committed transaction."""
        self.stats = ProjectorStats()
        self.error: BaseException | None = None
        """Why the projector stopped on its own (a :class:`ProjectionError`), else None."""
        super().__init__()
        self._last_ts = 0
        self._data_dir: Path | None = None
        self._queue: collections.deque[AppliedBatch] = collections.deque()
        # Commands ever queued (written by on_batch only) and taken off the queue (by the
        # drain task only): their difference is the backlog, without a lock.
        self._enqueued = 0
        self._dequeued = 0
        self._dropped_until = 0  # last seq left to the journal because the backlog was full
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._closed = False
        # In-memory state, seeded from the tables on start (see docs/store.md):
        self._planner = Planner()

    # -- what the service reads --------------------------------------------------------

    @property
    def last_ts(self) -> int:
        """Sequencer timestamp (ms) of the command at :attr:`cursor` (0 before any)."""
        return self._last_ts

    @property
    def queued(self) -> int:
        """Commands received from the sequencer and not yet taken into a transaction."""
        return self._enqueued - self._dequeued

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _stopped(self) -> bool:
        return self._closed or self.error is not None

    # -- the sequencer listener ----------------------------------------------------------

    def on_batch(self, batch: AppliedBatch) -> None:
        """Queue an applied batch (the sequencer listener). Safe from any thread; batches
        already projected are ignored, so registering before :meth:`start` is safe."""
        try:
            if self._closed or batch.last_seq <= self._cursor:
                return
            if self._enqueued - self._dequeued >= self.max_backlog:
                # Backlog full (the database has been away a while): leave the batch to
                # the journal, read once the backlog has drained.
                self._dropped_until = batch.last_seq
            else:
                self._queue.append(batch)
                self._enqueued += len(batch.commands)
            loop, wakeup = self._loop, self._wakeup
            if loop is None or wakeup is None:
                return  # not started: start() drains the queue
            if threading.get_ident() == self._loop_thread:
                wakeup.set()
            else:
                loop.call_soon_threadsafe(wakeup.set)
        except Exception:  # never fail the sequencer (a closed loop at shutdown, ...)
            log.exception("projector %s: cannot queue the batch at seq %d", self.name, batch.seq0)

    def journal_holds(self, last_seq: int) -> None:
        """Commands up to ``last_seq`` are durable in the journal but will not reach
        :meth:`on_batch`: read them from the journal. Call on the projector's loop."""
        if last_seq > self._dropped_until:
            self._dropped_until = last_seq
            if self._wakeup is not None:
                self._wakeup.set()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, journal_data_dir: str | os.PathLike[str], live_last_seq: int) -> None:
        """Read the cursor and the state behind it, catch up from the journal of
        ``journal_data_dir`` (the data directory the sequencer opened) to
        ``live_last_seq``, then start projecting queued and live batches. Register
        :meth:`on_batch` first. A projector starts once."""
        if self._started:
            raise RuntimeError("a projector starts once; create a new one")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._data_dir = Path(journal_data_dir)
        self._cursor, self._last_ts = await load_state(self.db, self.name, self._planner)
        log.info(
            "projector %s at seq %d (%d open orders), engine at seq %d",
            self.name,
            self._cursor,
            len(self._planner.open_orders),
            live_last_seq,
        )
        if live_last_seq > self._cursor:
            await self._catch_up(live_last_seq)
        self._task = self._loop.create_task(self._run(), name=f"mercato-projector-{self.name}")

    async def finished(self) -> None:
        """Return once the projector has stopped: after :meth:`stop`, or on its own (a
        fatal :attr:`error`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self, timeout: float | None = None) -> None:
        """Project everything queued (batches still arriving meanwhile included), then
        stop. After ``timeout`` seconds (a database that stays away) the task is cancelled
        instead: what was not committed is caught up from the journal at the next start."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning(
                    "projector %s: stop timed out at seq %d with %d commands queued; the "
                    "next start reads them from the journal",
                    self.name,
                    self._cursor,
                    self.queued,
                )
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._dequeued = self._enqueued
        self._answer_waiters()

    # -- state -------------------------------------------------------------------------

    # -- the drain task ----------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        try:
            while True:
                items, gap_until = self._take_group()
                if not items and not gap_until and self._dropped_until > self._cursor:
                    gap_until = self._dropped_until
                if gap_until:
                    log.warning(
                        "projector %s: commands %d..%d are not queued (the listener was "
                        "registered late, or the backlog was full); reading the journal",
                        self.name,
                        self._cursor + 1,
                        gap_until,
                    )
                    await self._catch_up(gap_until)
                    continue
                if items:
                    await self._project(items, live=True)
                    continue
                if self._stopping:
                    return
                wakeup.clear()
                if not self._queue and self._dropped_until <= self._cursor:
                    await wakeup.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("projector %s stopped at seq %d", self.name, self._cursor)
            self.error = exc
            self._close()

    def _take_group(self) -> tuple[list[tuple[AppliedBatch, int]], int]:
        """Queued batches after the cursor, up to ``max_commands`` commands, as
        (batch, index of its first unprojected command); or a gap to fill from the
        journal (the seq the journal must be read up to)."""
        queue = self._queue
        expected = self._cursor + 1
        items: list[tuple[AppliedBatch, int]] = []
        count = 0
        while queue and count < self.max_commands:
            batch = queue[0]
            if batch.last_seq < expected:
                queue.popleft()  # projected already (catch-up covered it)
                self._dequeued += len(batch.commands)
                continue
            if batch.seq0 > expected:
                if not items:
                    return [], batch.seq0 - 1
                break
            start = expected - batch.seq0
            items.append((batch, start))
            count += len(batch.commands) - start
            expected = batch.last_seq + 1
            queue.popleft()
            self._dequeued += len(batch.commands)
            # Popped, but not forgotten: the group is written (retried) until committed
            # before anything else happens, and a cancelled projector re-reads it from the
            # journal at its next start.
        return items, 0

    async def _catch_up(self, until_seq: int) -> None:
        """Project the journal's commands after the cursor up to ``until_seq``."""
        if self._data_dir is None:
            raise ProjectionError("no journal directory to catch up from")
        began, first = time.monotonic(), self._cursor
        records = replay_applied(self._data_dir, self._cursor, until_seq)
        while self._cursor < until_seq:
            chunk = await asyncio.to_thread(_take, records, self.max_commands)
            if not chunk:
                raise ProjectionError(
                    f"the journal in {self._data_dir} ends at seq {self._cursor}, "
                    f"before seq {until_seq}"
                )
            await self._project([(batch, 0) for batch in chunk], live=False)
        log.info(
            "projector %s caught up from the journal: seq %d..%d in %.1f s",
            self.name,
            first + 1,
            self._cursor,
            time.monotonic() - began,
        )

    async def _project(self, items: list[tuple[AppliedBatch, int]], *, live: bool) -> None:
        commands = sum(len(batch.commands) - start for batch, start in items)
        large = commands >= THREAD_PLAN_COMMANDS
        planner = self._planner
        if large:
            plan = await asyncio.to_thread(planner.plan, items, self._cursor)
        else:
            plan = planner.plan(items, self._cursor)
        if plan.users - planner.loaded_users:
            await self._retrying("loading balances", self._load_balances, plan.users)
        if large:
            await asyncio.to_thread(planner.finish, plan)
        else:
            planner.finish(plan)
        await self._retrying("writing", self._write, plan)
        self._last_ts = plan.last_ts
        stats = self.stats
        stats.transactions += 1
        stats.commands += plan.commands
        stats.rows += plan.rows
        if not live:
            stats.caught_up += plan.commands
        self._advance(plan.last_seq)
        if self.on_commit is not None:
            self.on_commit(plan.last_seq)

    async def _retrying(
        self, what: str, step: Callable[[_T], Awaitable[None]], argument: _T
    ) -> None:
        delay = self.retry_initial
        while True:
            try:
                await step(argument)
                return
            except REFUSED_ERRORS as exc:
                raise ProjectionError(f"the database refused the rows: {exc!r}") from exc
            except RETRYABLE_ERRORS as exc:
                self.stats.retries += 1
                log.warning(
                    "projector %s: %s seq %d.. failed (%r); retrying in %.2f s",
                    self.name,
                    what,
                    self._cursor + 1,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    async def _load_balances(self, users: set[int]) -> None:
        await load_balances(self.db, self._planner, users)

    # -- rows into the database --------------------------------------------------------

    async def _write(self, plan: Plan) -> None:
        """One transaction: the cursor moves from where the plan starts to where it ends,
        and its rows are written (nothing, if an earlier attempt already committed)."""
        plan.attempts += 1
        async with self.db.begin() as connection:
            if await move_cursor(connection, self.name, plan):
                await self._write_rows(connection, plan)

    async def _write_rows(self, connection: AsyncConnection, plan: Plan) -> None:
        await write_rows(connection, plan)
