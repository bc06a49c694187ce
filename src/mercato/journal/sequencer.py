"""The sequencer: stamps commands, makes them durable (group commit), applies them.

Order of operations for a batch, which is what makes a result safe to act on:

1. stamp every command with the next sequence number and the batch timestamp,
2. encode and append the whole batch to the journal: one ``write``, one ``fdatasync``,
3. only then apply the commands to the engine, in sequence order,
4. release the results; every ``snapshot_every`` commands, snapshot the engine.

A result is therefore never released before its command is durable, and recovery
(newest valid snapshot, then the journal records after it) rebuilds exactly the state
the results described. See docs/journal.md. The asyncio driver of the same phases is
:mod:`mercato.journal.async_sequencer`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, get_args

from mercato.core.codec import encode_record
from mercato.core.commands import Command
from mercato.core.engine import Engine
from mercato.core.results import Result
from mercato.journal.segments import (
    DEFAULT_SEGMENT_BYTES,
    FramedBatch,
    JournalError,
    JournalWriter,
    list_segments,
    read_records,
    scan_segment,
)
from mercato.journal.snapshots import SnapshotStore

__all__ = [
    "AppliedBatch",
    "CommandEncodeError",
    "Listener",
    "RecoveryError",
    "Sequencer",
    "SequencerClosedError",
    "StampedBatch",
    "check_command",
    "encode_error",
    "journal_dir",
    "journal_last_seq",
    "journal_ts",
    "lock_directory",
    "recover_engine",
    "replay_applied",
    "replay_dir",
    "snapshot_dir",
    "wall_clock_ms",
]

log = logging.getLogger(__name__)

Clock = Callable[[], int]


@dataclasses.dataclass(frozen=True, slots=True)
class AppliedBatch:
    """A durable batch as applied: what consumers of the event stream receive. The
    command at index i has seq ``seq0 + i`` and its result is ``results[i]``."""

    seq0: int
    ts: int
    commands: Sequence[Command]
    results: Sequence[Result]

    @property
    def last_seq(self) -> int:
        return self.seq0 + len(self.commands) - 1


Listener = Callable[[AppliedBatch], None]


@dataclasses.dataclass(frozen=True, slots=True)
class StampedBatch:
    """A batch given its seqs and timestamp and framed for the journal, not durable yet."""

    seq0: int
    ts: int
    framed: FramedBatch


JOURNAL_SUBDIR: Final = "journal"
SNAPSHOT_SUBDIR: Final = "snapshots"
LOCK_FILE: Final = "LOCK"
_COMMAND_TYPES: Final = tuple(get_args(Command))


class RecoveryError(JournalError):
    """The data directory cannot be recovered into a consistent engine."""


class CommandEncodeError(ValueError):
    """A command cannot be encoded for the journal; it was not sequenced."""

    def __init__(self, index: int, command: object, cause: BaseException) -> None:
        super().__init__(f"command {index} cannot be encoded ({cause!r}): {command!r}")
        self.index = index
        self.command = command


class SequencerClosedError(JournalError):
    """The sequencer is closed, or stopped after a fatal error (restart to recover)."""


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (the default clock)."""
    return time.time_ns() // 1_000_000


def journal_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / JOURNAL_SUBDIR


def snapshot_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / SNAPSHOT_SUBDIR


def _durable_last_seq(directory: Path) -> int:
    """Last seq of the valid records of a journal directory (read-only)."""
    segments = list_segments(directory)
    for name_seq, path in reversed(segments):
        scan = scan_segment(path)
        if scan.count:
            return scan.last_seq
        if name_seq > 1:
            return name_seq - 1
    return 0


def journal_last_seq(data_dir: str | os.PathLike[str]) -> int:
    """Last seq of the durable records of the sequencer directory ``data_dir`` (0 if it
    has none); read-only, a torn tail is ignored."""
    return _durable_last_seq(journal_dir(data_dir))


def journal_ts(data_dir: str | os.PathLike[str], seq: int) -> int | None:
    """The timestamp of the durable record ``seq`` of ``data_dir``, or None if the journal
    does not hold it; read-only."""
    for found, ts, _ in read_records(journal_dir(data_dir), after_seq=seq - 1):
        return ts if found == seq else None
    return None


def _restore_newest(store: SnapshotStore, journal_last_seq: int) -> tuple[Engine, int]:
    """The engine of the newest usable snapshot and its seq, or a fresh engine and 0."""
    for seq, data in store.iter_valid():
        if seq > journal_last_seq:
            raise RecoveryError(
                f"snapshot at seq {seq} is ahead of the journal, whose last durable record "
                f"is seq {journal_last_seq}: acknowledged journal records are missing "
                f"(is {store.directory} paired with the right journal?)"
            )
        try:
            engine = Engine.restore(data)
        except Exception as exc:  # a CRC-valid snapshot the engine cannot read
            log.warning("snapshot at seq %d cannot be restored, trying an older one: %r", seq, exc)
            continue
        if engine.last_seq != seq:
            log.warning(
                "snapshot at seq %d restores an engine at seq %d; trying an older one",
                seq,
                engine.last_seq,
            )
            continue
        return engine, seq
    return Engine(), 0


def recover_engine(
    data_dir: str | os.PathLike[str], *, use_snapshots: bool = True
) -> tuple[Engine, int, int]:
    """Rebuild the engine of ``data_dir`` without modifying anything on disk.

    Returns (engine, snapshot seq used or 0, number of journal records replayed). With
    ``use_snapshots`` the newest valid snapshot is restored and only the journal records
    after it are replayed; otherwise the whole journal is replayed into a fresh engine.
    A torn journal tail is ignored (its records were never acknowledged).
    """
    jdir = journal_dir(data_dir)
    if use_snapshots:
        store = SnapshotStore(snapshot_dir(data_dir), create=False)
        engine, snap_seq = _restore_newest(store, _durable_last_seq(jdir))
    else:
        engine, snap_seq = Engine(), 0
    replayed = 0
    apply = engine.apply
    for seq, ts, cmd in read_records(jdir, after_seq=snap_seq):
        apply(seq, ts, cmd)
        replayed += 1
    return engine, snap_seq, replayed


def replay_applied(
    data_dir: str | os.PathLike[str], after_seq: int, until_seq: int
) -> Iterator[AppliedBatch]:
    """The applied records ``after_seq < seq <= until_seq``, one per batch of one, with
    their results exactly as the live engine produced them: for a consumer (projector)
    catching up after a restart. Restores the newest snapshot at or before ``after_seq``
    (a fresh engine if none is left) and replays silently up to it. Read-only."""
    store = SnapshotStore(snapshot_dir(data_dir), create=False)
    engine, start = Engine(), 0
    for seq, data in store.iter_valid(max_seq=after_seq):
        with contextlib.suppress(Exception):
            engine = Engine.restore(data)
            start = seq
            break
    apply = engine.apply
    for seq, ts, cmd in read_records(journal_dir(data_dir), after_seq=start):
        if seq > until_seq:
            break
        result = apply(seq, ts, cmd)
        if seq > after_seq:
            yield AppliedBatch(seq, ts, (cmd,), (result,))


def replay_dir(data_dir: str | os.PathLike[str], use_snapshots: bool = False) -> Engine:
    """The engine rebuilt from the journal alone (or newest snapshot + journal tail)."""
    return recover_engine(data_dir, use_snapshots=use_snapshots)[0]


def encode_error(cmd: Command) -> Exception | None:
    """Why ``cmd`` cannot be encoded for the journal, or None."""
    try:
        encode_record(0, 0, cmd)
    except Exception as exc:
        return exc
    return None


def check_command(cmd: object) -> None:
    """Raise TypeError unless ``cmd`` is a command."""
    if not isinstance(cmd, _COMMAND_TYPES):
        raise TypeError(f"not a command: {cmd!r}")


class Sequencer:
    """Single-writer, synchronous group commit over a data directory.

    The directory holds ``journal/`` (segments), ``snapshots/`` and a ``LOCK`` file that
    keeps a second sequencer out. Constructing a sequencer recovers: torn journal tail
    truncated, newest valid snapshot restored (else a fresh engine), journal records after
    it replayed, so that ``engine.last_seq`` equals the journal's last seq.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        max_batch: int = 1024,
        max_wait_us: int = 0,
        snapshot_every: int = 100_000,
        clock: Clock = wall_clock_ms,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        keep_snapshots: int = 3,
        lock_fd: int | None = None,
    ) -> None:
        """``lock_fd``: the directory's lock, already taken with :func:`lock_directory` (by a
        caller that checks more before recovering); the sequencer owns it from then on."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_us < 0:
            raise ValueError("max_wait_us must be >= 0")
        if snapshot_every < 0:
            raise ValueError("snapshot_every must be >= 0 (0 disables automatic snapshots)")
        self.data_dir = Path(data_dir)
        self.max_batch = max_batch
        self.max_wait_us = max_wait_us
        """Used by an :class:`AsyncSequencer` wrapping this one (``process`` never waits)."""
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._failed: BaseException | None = None
        self._closed = False
        self.listeners: list[Listener] = []
        """Called with every applied batch, in order (see :class:`AppliedBatch`)."""
        self._journal_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock_fd = lock_directory(self.data_dir) if lock_fd is None else lock_fd
        try:
            self.snapshots = SnapshotStore(snapshot_dir(self.data_dir), keep=keep_snapshots)
            self.snapshots.remove_temporary()
            self.writer = JournalWriter(journal_dir(self.data_dir), segment_bytes)
            try:
                self.engine, self.snapshot_seq = _restore_newest(
                    self.snapshots, self.writer.last_seq
                )
                self.replayed = 0
                apply = self.engine.apply
                for seq, ts, cmd in read_records(self.writer.directory, self.snapshot_seq):
                    apply(seq, ts, cmd)
                    self.replayed += 1
                if self.engine.last_seq != self.writer.last_seq:
                    raise RecoveryError(
                        f"recovered engine is at seq {self.engine.last_seq} but the journal "
                        f"ends at seq {self.writer.last_seq}"
                    )
            except BaseException:
                self.writer.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._next_seq = self.writer.last_seq + 1
        self._last_ts = max(self.writer.last_ts, self.engine.last_ts)
        self._since_snapshot = self.writer.last_seq - self.snapshot_seq
        log.info(
            "recovered %s: snapshot seq %d + %d journal records -> seq %d (%d torn bytes cut)",
            self.data_dir,
            self.snapshot_seq,
            self.replayed,
            self.writer.last_seq,
            self.writer.truncated_bytes,
        )

    # -- state ------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Seq of the last durable and applied command."""
        return self.engine.last_seq

    @property
    def last_ts(self) -> int:
        return self._last_ts

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise SequencerClosedError(
                "the sequencer stopped after a fatal error; reopen it to recover"
            ) from self._failed
        if self._closed:
            raise SequencerClosedError("the sequencer is closed")

    # -- the phases of a batch: the public API of a driver (Sequencer.process and
    # AsyncSequencer, which runs the commit on its own thread and the rest on the loop)

    def stamp(self, commands: Sequence[Command]) -> StampedBatch:
        """Assign seqs and the batch timestamp; encode and frame. Nothing is durable yet,
        and if a command cannot be encoded (e.g. an integer beyond 64 bits) nothing
        changes: :class:`CommandEncodeError` names the first such command."""
        seq0, ts, payloads = self._stamp_payloads(commands)
        return StampedBatch(seq0, ts, FramedBatch.of(payloads))

    def _stamp_payloads(self, commands: Sequence[Command]) -> tuple[int, int, list[bytes]]:
        ts = self.clock()
        if ts < self._last_ts:
            ts = self._last_ts  # the clock went back: time never does
        seq0 = self._next_seq
        try:
            payloads = [encode_record(seq0 + i, ts, cmd) for i, cmd in enumerate(commands)]
        except Exception as exc:
            bad = next(i for i, cmd in enumerate(commands) if encode_error(cmd) is not None)
            raise CommandEncodeError(bad, commands[bad], exc) from exc
        self._next_seq = seq0 + len(payloads)
        self._last_ts = ts
        return seq0, ts, payloads

    def commit(self, batch: FramedBatch) -> None:
        """One write + one fdatasync (releases the GIL: run it on a journal thread, frame
        on the caller's). A failure stops the sequencer for good."""
        try:
            self.writer.append_framed(batch)
        except BaseException as exc:
            self._failed = exc
            raise

    def apply_batch(self, seq0: int, ts: int, commands: Sequence[Command]) -> list[Result]:
        """Apply a durable batch to the engine, tell the listeners, return the results.
        Call it only once :meth:`commit` of the batch (and of all before it) returned."""
        apply = self.engine.apply
        try:
            results = [apply(seq0 + i, ts, cmd) for i, cmd in enumerate(commands)]
        except BaseException as exc:
            # The batch is durable but the engine failed half way: its state no longer
            # matches the journal. Stop; a restart replays the journal.
            self._failed = exc
            raise
        self._since_snapshot += len(commands)
        if self.listeners:
            self._notify(AppliedBatch(seq0, ts, commands, results))
        return results

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every batch applied from now on (see :attr:`listeners`)."""
        self.listeners.append(listener)

    def _notify(self, batch: AppliedBatch) -> None:
        # Listeners run on the applying thread, in seq order, before any result is
        # released; they must be quick and must not raise (a failure is logged only:
        # the batch is durable and applied whatever a consumer thinks of it).
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:
                log.exception("listener %r failed on batch at seq %d", listener, batch.seq0)

    @property
    def snapshot_due(self) -> bool:
        """``snapshot_every`` commands were applied since the last snapshot was taken."""
        return self.snapshot_every > 0 and self._since_snapshot >= self.snapshot_every

    def take_snapshot(self) -> tuple[int, bytes]:
        """Serialize the engine now (consistent: call it between batches): (seq, data)."""
        self._since_snapshot = 0
        return self.engine.last_seq, self.engine.snapshot()

    def store_snapshot(self, seq: int, data: bytes) -> None:
        """Write a snapshot taken by :meth:`take_snapshot` (may run on another thread)."""
        self.snapshots.write(seq, data)
        self.snapshot_seq = max(self.snapshot_seq, seq)

    # -- public ---------------------------------------------------------------------------

    def process(self, commands: Sequence[Command]) -> list[Result]:
        """Sequence, make durable and apply ``commands``; return their results in order.

        Commands are committed in batches of at most ``max_batch``: each batch is one
        ``write`` and one ``fdatasync``, and is applied only after that returned.
        """
        self._check_usable()
        for cmd in commands:
            check_command(cmd)
        # Encode everything first: a command that cannot be encoded fails the call
        # before anything is sequenced.
        seq0, ts, payloads = self._stamp_payloads(commands)
        step = self.max_batch
        starts = range(0, len(commands), step)
        if len(starts) == 1:
            self.commit(FramedBatch.of(payloads))
            results = self.apply_batch(seq0, ts, commands)
            self._snapshot_if_due()
            return results
        # Several batches: commit the next one on the journal thread (fdatasync releases
        # the GIL) while this one, already durable, is applied.
        results = []
        journal = self._journal_thread()
        commit = journal.submit(self.commit, FramedBatch.of(payloads[:step]))
        for start in starts:
            following = payloads[start + step : start + 2 * step]
            framed = FramedBatch.of(following) if following else None
            commit.result()  # this batch, and all before it, are durable
            if framed is not None:
                commit = journal.submit(self.commit, framed)
            results.extend(self.apply_batch(seq0 + start, ts, commands[start : start + step]))
            self._snapshot_if_due()
        return results

    def _journal_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._journal_executor is None:
            self._journal_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="mercato-journal"
            )
        return self._journal_executor

    def _snapshot_if_due(self) -> None:
        if self.snapshot_due:
            try:
                self.store_snapshot(*self.take_snapshot())
            except Exception:
                log.exception("automatic snapshot failed; will retry later")

    def snapshot_now(self) -> int:
        """Write a snapshot of the current state; return its seq."""
        self._check_usable()
        seq, data = self.take_snapshot()
        self.store_snapshot(seq, data)
        return seq

    def close(self) -> None:
        """Close the journal and release the directory lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._journal_executor is not None:
            self._journal_executor.shutdown(wait=True)
        self.writer.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Sequencer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def lock_directory(data_dir: str | os.PathLike[str]) -> int:
    """Take the ``LOCK`` of the sequencer directory ``data_dir`` (created if absent) and
    return its descriptor; raises JournalError if another process holds it. Closing the
    descriptor releases the lock."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"{path.parent} is already open by another sequencer") from None
    return fd
