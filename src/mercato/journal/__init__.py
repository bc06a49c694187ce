"""Durability: append-only journal segments, snapshots and the group-commit sequencer.

See docs/journal.md for the file formats and the recovery procedure.
"""

from mercato.journal.async_sequencer import AsyncSequencer
from mercato.journal.segments import (
    DEFAULT_SEGMENT_BYTES,
    JournalCorruptError,
    JournalError,
    JournalWriter,
    list_segments,
    read_records,
    scan_segment,
)
from mercato.journal.sequencer import (
    AppliedBatch,
    CommandEncodeError,
    Listener,
    RecoveryError,
    Sequencer,
    SequencerClosedError,
    journal_dir,
    journal_last_seq,
    journal_ts,
    lock_directory,
    recover_engine,
    replay_applied,
    replay_dir,
    snapshot_dir,
    wall_clock_ms,
)
from mercato.journal.snapshots import SnapshotError, SnapshotStore

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "AppliedBatch",
    "AsyncSequencer",
    "CommandEncodeError",
    "JournalCorruptError",
    "JournalError",
    "JournalWriter",
    "Listener",
    "RecoveryError",
    "Sequencer",
    "SequencerClosedError",
    "SnapshotError",
    "SnapshotStore",
    "journal_dir",
    "journal_last_seq",
    "journal_ts",
    "list_segments",
    "lock_directory",
    "read_records",
    "recover_engine",
    "replay_applied",
    "replay_dir",
    "scan_segment",
    "snapshot_dir",
    "wall_clock_ms",
]
