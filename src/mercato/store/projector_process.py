"""The SQL projector in a process of its own.

Writing the projection (folding events into rows, SQLite or PostgreSQL round trips) costs
more CPU than accepting the orders it records. In the engine's process it competes for the
GIL with order entry: measured, the projector there took about a third of the order
throughput (docs/benchmarks.md). :class:`ProjectorProcess` runs the same
:class:`~mercato.store.projector.Projector` in a child process (``python -m
mercato.store.projector_process``) and feeds it over a pipe:

- **to the child (stdin):** each applied batch, exactly as the sequencer's listeners get it
  (commands and results, msgpack, length-prefixed), written after the batch is durable; and
  ``JournalHolds(seq)`` when batches were left out (the pipe's backlog was full, or no
  child was running): the child reads those from the journal, as the in-process projector
  does for a gap.
- **from the child (its fd 1; its own stdout and stderr go to the service's stderr):**
  ``Progress(cursor, ready)`` after the start-up catch-up and after every
  committed transaction, which answers :meth:`ProjectorProcess.wait_for` (read-your-writes)
  and the health endpoint's lag.

Exactly once is the projector's own guarantee (the cursor moves in the same transaction as
the rows, and only from where it stood), so the child can die at any moment: the service
starts a new one, which catches up from the journal. When the service stops, or dies, the
child reads the end of its stdin, writes what it has and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from typing import Final

import msgspec

from mercato.core.commands import Command
from mercato.core.results import Result
from mercato.port import AppliedBatch
from mercato.runtime import run_fast, tune_gc
from mercato.store.database import create_engine
from mercato.store.projector import ProjectionError, ProjectionProgress, Projector

__all__ = ["DATABASE_URL_ENV", "DEFAULT_MAX_BACKLOG_BYTES", "ProjectorProcess"]

log = logging.getLogger("mercato.store.projector_process")  # also when run as __main__

#: The child reads the database URL (which may hold a password) from here, not argv.
DATABASE_URL_ENV: Final = "MERCATO_PROJECTOR_DATABASE_URL"
#: Bytes of batches waiting for the child at most; beyond, batches are left to the journal.
DEFAULT_MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: Seconds between a child's death and its successor, doubling while successors die
#: before they have caught up (a database that refuses the rows), up to the maximum.
RESTART_DELAY: Final = 1.0
MAX_RESTART_DELAY: Final = 60.0
#: In the engine directory: held by the running child, so that a successor (a service
#: restarted at once after a crash) waits for its predecessor to finish writing.
LOCK_FILE: Final = "PROJECTOR.LOCK"
_HEADER: Final = 4  # a frame: its length (big-endian), then msgpack


class Batch(msgspec.Struct, tag="batch", array_like=True, gc=False):
    seq0: int
    ts: int
    commands: list[Command]
    results: list[Result]


class JournalHolds(msgspec.Struct, tag="journal", array_like=True, gc=False):
    last_seq: int


class Progress(msgspec.Struct, tag="progress", array_like=True, gc=False):
    cursor: int
    ready: bool


_encoder = msgspec.msgpack.Encoder()
_to_child = msgspec.msgpack.Decoder(Batch | JournalHolds)
_from_child = msgspec.msgpack.Decoder(Progress)


def _frame(message: Batch | JournalHolds | Progress) -> bytes:
    payload = _encoder.encode(message)
    return len(payload).to_bytes(_HEADER, "big") + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload; None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER)
        return await reader.readexactly(int.from_bytes(header, "big"))
    except asyncio.IncompleteReadError:
        return None


class ProjectorProcess(ProjectionProgress):
    """The service's projection: a :class:`~mercato.store.projector.Projector` in a child
    process, fed by :meth:`on_batch` (the sequencer listener; call it on the event loop).

    Answers what the service asks of a projector: :attr:`cursor`, :meth:`lag`,
    :meth:`wait_for`; :meth:`start` returns once the child has caught up with the journal.
    A child that exits on its own is replaced after :data:`RESTART_DELAY` seconds (longer
    while successors keep dying before they catch up).
    """

    def __init__(
        self, database_url: str, *, max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    ) -> None:
        super().__init__()
        self.database_url = database_url
        self.max_backlog_bytes = max_backlog_bytes
        self.restarts = 0
        self._failures = 0  # children that died since one last caught up
        self.error: str | None = None
        """Why the last child stopped on its own (its exit status), else None."""
        self._seen = 0  # the last seq handed to on_batch
        self._left_to_journal = 0  # the last seq not sent (backlog full, or no child)
        self._told_journal = 0  # the last JournalHolds sent
        self._engine_dir = ""
        self._child: asyncio.subprocess.Process | None = None
        self._pipe: asyncio.WriteTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def left_to_journal(self) -> int:
        """The last seq not sent to the child (its backlog was full, or none was running):
        the child reads such batches from the journal."""
        return self._left_to_journal

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def _stopped(self) -> bool:
        return self._stopping

    def on_batch(self, batch: AppliedBatch) -> None:
        """Send an applied batch to the child, or leave it to the journal when the child
        is away or its backlog is full. Never blocks, never raises."""
        self._seen = batch.last_seq
        pipe = self._pipe
        try:
            backlog = pipe.get_write_buffer_size() if pipe is not None else 0
            if pipe is None or pipe.is_closing() or backlog > self.max_backlog_bytes:
                self._left_to_journal = batch.last_seq
            else:
                commands, results = batch.commands, batch.results
                pipe.write(_frame(Batch(batch.seq0, batch.ts, commands, results)))  # type: ignore[arg-type]
        except Exception:  # never fail the sequencer
            log.exception("projector process: cannot send the batch at seq %d", batch.seq0)
            self._left_to_journal = batch.last_seq

    async def start(self, engine_dir: str | os.PathLike[str], live_last_seq: int) -> None:
        """Start the child and return once it has caught up to ``live_last_seq``. Register
        :meth:`on_batch` first: batches sent meanwhile are projected after the catch-up."""
        self._engine_dir = os.fspath(engine_dir)
        self._seen = max(self._seen, live_last_seq)
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(ready), name="mercato-projector")
        await ready

    async def stop(self, timeout: float | None = None) -> None:
        """Close the child's stdin (it projects what it was sent, then exits) and wait for
        it; after ``timeout`` seconds kill it (the journal has the rest)."""
        self._stopping = True
        if self._pipe is not None:
            self._pipe.close()
        task = self._task
        if task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("projector process: stop timed out at seq %d; killed", self._cursor)
                if self._child is not None and self._child.returncode is None:
                    self._child.kill()
                await asyncio.gather(task, return_exceptions=True)
        self._answer_waiters()

    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        """Run a child; when one exits on its own, start another."""
        while True:
            try:
                outcome = f"exited with status {await self._run_child(ready)}"
            except Exception as error:  # it could not be started
                outcome = f"could not be started: {error!r}"
            if self._stopping:
                if not ready.done():  # stopped during the start-up catch-up
                    ready.set_exception(ProjectionError("stopped before catching up"))
                return
            self.error = f"the projector process {outcome}"
            if not ready.done():
                message = f"{self.error} before catching up (its log says why)"
                ready.set_exception(ProjectionError(message))
                return
            self._failures += 1
            delay = min(RESTART_DELAY * 2 ** (self._failures - 1), MAX_RESTART_DELAY)
            log.error("%s at seq %d; another in %.1f s", self.error, self._cursor, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1

    async def _run_child(self, ready: asyncio.Future[None]) -> int:
        read_fd, write_fd = os.pipe()  # progress: child -> service
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mercato.store.projector_process",
                self._engine_dir, str(self._seen), str(write_fd),
                stdin=asyncio.subprocess.PIPE, pass_fds=(write_fd,),
                env={**os.environ, DATABASE_URL_ENV: self.database_url},
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._child = child
        assert child.stdin is not None
        self._pipe = child.stdin.transport
        if self._stopping:  # stop() came while the child was being spawned
            self._pipe.close()
        progress = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(progress), os.fdopen(read_fd, "rb")
        )
        try:
            while (payload := await _read_frame(progress)) is not None:
                self._progress(_from_child.decode(payload), ready)
        finally:
            transport.close()
            self._pipe = None
            if child.stdin is not None:
                child.stdin.close()
        return await child.wait()

    def _progress(self, report: Progress, ready: asyncio.Future[None]) -> None:
        self._advance(report.cursor)
        if report.ready:
            self.error = None
            self._failures = 0
            if not ready.done():
                ready.set_result(None)
        self._tell_journal()

    def _tell_journal(self) -> None:
        """Batches were left out: once there is room, say up to where the journal has them
        (a later batch would show the gap too, but the market may be quiet)."""
        pending, pipe = self._left_to_journal, self._pipe
        if pending <= self._told_journal or pipe is None or pipe.is_closing():
            return
        if pipe.get_write_buffer_size() <= self.max_backlog_bytes:
            pipe.write(_frame(JournalHolds(pending)))
            self._told_journal = pending


# -- the child -------------------------------------------------------------------------


async def _child(engine_dir: str, live_last_seq: int, progress_fd: int) -> None:
    loop = asyncio.get_running_loop()
    progress = os.fdopen(progress_fd, "wb", buffering=0)

    def report(cursor: int, ready: bool = False) -> None:
        # A few bytes to a pipe the service keeps reading: a blocking write is fine. The
        # service gone (EPIPE), the rows are committed all the same: nobody to tell.
        with contextlib.suppress(BrokenPipeError):
            progress.write(_frame(Progress(cursor, ready)))

    db = create_engine(os.environ[DATABASE_URL_ENV])
    projector = Projector(db, on_commit=report)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)

    async def receive() -> None:
        while (payload := await _read_frame(stdin)) is not None:
            message = _to_child.decode(payload)
            if isinstance(message, Batch):
                projector.on_batch(
                    AppliedBatch(message.seq0, message.ts, message.commands, message.results)
                )
            else:
                projector.journal_holds(message.last_seq)

    # Batches sent during the catch-up are queued behind it, as in the service's process.
    receiving = asyncio.create_task(receive())
    try:
        await projector.start(engine_dir, live_last_seq)
        tune_gc()
        report(projector.cursor, ready=True)
        stopped = asyncio.create_task(projector.finished())
        done, _ = await asyncio.wait({receiving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped in done:
            raise ProjectionError(f"the projector stopped: {projector.error!r}")
        await projector.stop(timeout=30)  # the service has stopped sending: write the rest
        stats = projector.stats
        log.info(
            "projector stopped at seq %d: %d commands in %d transactions (%d from the "
            "journal), %d rows, %d retries",
            projector.cursor, stats.commands, stats.transactions, stats.caught_up, stats.rows,
            stats.retries,
        )  # fmt: skip
    finally:
        receiving.cancel()
        await db.dispose()


def _hold_lock(engine_dir: str) -> None:
    """Wait for any predecessor to exit, then hold the lock until this process exits (the
    descriptor stays open)."""
    fd = os.open(os.path.join(engine_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)


def main() -> None:
    """``python -m mercato.store.projector_process ENGINE_DIR LIVE_LAST_SEQ PROGRESS_FD``"""
    engine_dir, live_last_seq, progress_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Ctrl-C, or a stop signal sent to the whole process group (systemd, a container's
    # init), reaches the child too: it is the service's to stop, by closing the child's
    # stdin once the engine is flushed. If the service dies instead, stdin ends as well.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.dup2(2, 1)  # a stray print must not reach the service's terminal as output
    # The service's log format; the pid tells the child's lines from the service's.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    _hold_lock(engine_dir)
    try:
        run_fast(_child(engine_dir, live_last_seq, progress_fd))
    except ProjectionError as error:
        log.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
