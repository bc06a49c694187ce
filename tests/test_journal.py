"""Journal segments, snapshots and the group-commit sequencer."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import struct
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashload import flow_commands
from mercato.core.codec import encode_record
from mercato.core.commands import CancelOrder, Command, PlaceOrder, Tick, UpsertAsset
from mercato.core.engine import Engine
from mercato.flow import generate_flow
from mercato.journal import (
    AppliedBatch,
    AsyncSequencer,
    JournalCorruptError,
    JournalError,
    JournalWriter,
    RecoveryError,
    Sequencer,
    SequencerClosedError,
    SnapshotStore,
    journal_dir,
    list_segments,
    read_records,
    replay_applied,
    replay_dir,
    snapshot_dir,
)
from mercato.journal import segments as seg
from mercato.journal import snapshots as snap

FRAME = seg.FRAME_HEADER_SIZE


def cmd_for(seq: int) -> Command:
    """A varied, ~50-byte command for seq."""
    if seq % 3 == 0:
        return Tick()
    if seq % 3 == 1:
        return CancelOrder(user=seq % 7, client_order_id=f"c-{seq:012d}")
    return PlaceOrder(seq % 5, "BTC-USDT", "BUY", quantity=seq, price=1000 + seq)


def payloads(first: int, n: int, ts: int = 1_700_000_000_000) -> list[bytes]:
    return [encode_record(s, ts + s, cmd_for(s)) for s in range(first, first + n)]


def write_journal(directory: Path, batches: list[int], segment_bytes: int = 1 << 26) -> int:
    """Append batches of the given sizes; return the last seq."""
    seq = 0
    with JournalWriter(directory, segment_bytes) as w:
        for n in batches:
            w.append_batch(payloads(seq + 1, n))
            seq += n
        assert w.last_seq == seq
    return seq


def seqs_in(directory: Path, after: int = 0) -> list[int]:
    return [r[0] for r in read_records(directory, after)]


def only_segment(directory: Path) -> Path:
    segments = list_segments(directory)
    assert len(segments) == 1
    return segments[0][1]


# ---------------------------------------------------------------- framing


def test_framing_round_trip(tmp_path: Path) -> None:
    last = write_journal(tmp_path, [1, 5, 64, 3])
    records = list(read_records(tmp_path))
    assert [r[0] for r in records] == list(range(1, last + 1))
    for seq, ts, cmd in records:
        assert ts == 1_700_000_000_000 + seq
        assert cmd == cmd_for(seq)
    # The bytes on disk are exactly header + (len, crc, payload) frames.
    data = only_segment(tmp_path).read_bytes()
    assert data[:8] == seg.MAGIC
    _magic, fmt, schema, _crc = struct.unpack_from("<8sHHI", data)
    assert (fmt, schema) == (seg.FORMAT_VERSION, 1)
    expected = seg.encode_frames(payloads(1, last))
    assert data[seg.HEADER_SIZE :] == expected
    length, crc = struct.unpack_from("<II", expected)
    assert length == len(payloads(1, 1)[0])
    import zlib

    assert crc == zlib.crc32(payloads(1, 1)[0])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_framing_round_trip_property(batches: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        last = write_journal(Path(d), batches, segment_bytes=600)
        assert seqs_in(Path(d)) == list(range(1, last + 1))
        with JournalWriter(d) as w:
            assert w.last_seq == last
            assert w.truncated_bytes == 0


def test_reader_after_seq(tmp_path: Path) -> None:
    write_journal(tmp_path, [10, 10, 10], segment_bytes=300)
    assert len(list_segments(tmp_path)) > 2
    for after in (0, 1, 9, 10, 11, 25, 29, 30, 31):
        assert seqs_in(tmp_path, after) == list(range(after + 1, 31))


def test_append_rejects_out_of_order_batch(tmp_path: Path) -> None:
    with JournalWriter(tmp_path) as w:
        w.append_batch(payloads(1, 3))
        with pytest.raises(JournalError):
            w.append_batch(payloads(5, 2))  # gap
        with pytest.raises(JournalError):
            w.append_batch(payloads(3, 2))  # overlap
        w.append_batch(payloads(4, 2))
        assert w.last_seq == 5


def test_empty_directory(tmp_path: Path) -> None:
    with JournalWriter(tmp_path / "j") as w:
        assert w.last_seq == 0
        assert list_segments(w.directory) == []  # created lazily, with the first record
    assert seqs_in(tmp_path / "j") == []
    assert seqs_in(tmp_path / "missing") == []


# ---------------------------------------------------------------- torn tail


def test_torn_tail_at_every_offset_of_last_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_journal(src, [3, 4])
    path = only_segment(src)
    full = path.read_bytes()
    last_frame_start = len(full) - FRAME - len(payloads(7, 1)[0])
    for cut in range(last_frame_start, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / path.name).write_bytes(full[:cut])
        # A reader ignores the torn tail without modifying the file.
        assert seqs_in(d) == list(range(1, 7))
        assert (d / path.name).stat().st_size == cut
        with JournalWriter(d) as w:
            assert w.last_seq == 6
            assert w.last_ts == 1_700_000_000_000 + 6
            assert w.truncated_bytes == cut - last_frame_start
            assert (d / path.name).stat().st_size == last_frame_start
            w.append_batch(payloads(7, 2))
        assert seqs_in(d) == list(range(1, 9))
        assert [r[2] for r in read_records(d)] == [cmd_for(s) for s in range(1, 9)]
        shutil.rmtree(d)


def test_torn_tail_inside_a_batch_keeps_complete_records(tmp_path: Path) -> None:
    write_journal(tmp_path, [2, 5])
    path = only_segment(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3])  # the last record of the batch is torn
    with JournalWriter(tmp_path) as w:
        assert w.last_seq == 6
    assert seqs_in(tmp_path) == list(range(1, 7))


@pytest.mark.parametrize("where", ["payload", "crc", "length"])
def test_corrupt_tail_record_is_truncated(tmp_path: Path, where: str) -> None:
    write_journal(tmp_path, [4, 1])
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    start = len(data) - FRAME - len(payloads(5, 1)[0])
    offset = {"payload": len(data) - 5, "crc": start + 5, "length": start + 1}[where]
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    assert seqs_in(tmp_path) == [1, 2, 3, 4]
    with JournalWriter(tmp_path) as w:
        assert w.last_seq == 4
        assert w.truncation_problem
        assert path.stat().st_size == start
        w.append_batch(payloads(5, 1))
    assert seqs_in(tmp_path) == [1, 2, 3, 4, 5]


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=10_000),
    flips=st.lists(st.integers(min_value=0, max_value=10_000), max_size=3),
    junk=st.binary(max_size=30),
)
def test_damaged_last_segment_always_recovers_a_prefix(
    cut: int, flips: list[int], junk: bytes
) -> None:
    """Whatever happens to the tail of the last segment, readers and the writer see a
    prefix of what was written, never a changed record, and appending continues."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        write_journal(directory, [5, 5, 5])
        path = only_segment(directory)
        data = bytearray(path.read_bytes())
        body_len = len(data) - seg.HEADER_SIZE
        tail = bytearray(data[seg.HEADER_SIZE :][: cut % (body_len + 1)])
        for f in flips:
            if tail:
                tail[f % len(tail)] ^= 1 + f % 255
        path.write_bytes(bytes(data[: seg.HEADER_SIZE]) + bytes(tail) + junk)
        expected = [(s, 1_700_000_000_000 + s, cmd_for(s)) for s in range(1, 16)]
        records = list(read_records(directory))
        assert records == expected[: len(records)]
        with JournalWriter(directory) as w:
            assert w.last_seq == len(records)
            w.append_batch(payloads(w.last_seq + 1, 2))
        assert list(read_records(directory)) == expected[: len(records)] + [
            (s, 1_700_000_000_000 + s, cmd_for(s)) for s in (len(records) + 1, len(records) + 2)
        ]


def test_garbage_after_last_record_is_truncated(tmp_path: Path) -> None:
    write_journal(tmp_path, [4])
    path = only_segment(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\x00" * 100)  # a write whose size reached the disk, its data did not
    with JournalWriter(tmp_path) as w:
        assert w.last_seq == 4
        assert w.truncated_bytes == 100
    assert path.stat().st_size == size


def test_interrupted_segment_creation(tmp_path: Path) -> None:
    write_journal(tmp_path, [3])
    for partial in (b"", seg.MAGIC[:5], b"\x00" * seg.HEADER_SIZE):
        nxt = tmp_path / seg.segment_name(4)
        nxt.write_bytes(partial)
        assert seqs_in(tmp_path) == [1, 2, 3]
        with JournalWriter(tmp_path) as w:
            assert w.last_seq == 3
            assert w.last_ts == 1_700_000_000_003
            assert nxt.stat().st_size == seg.HEADER_SIZE
            w.append_batch(payloads(4, 2))
        assert seqs_in(tmp_path) == [1, 2, 3, 4, 5]
        nxt.unlink()
        shutil.rmtree(tmp_path)
        write_journal(tmp_path, [3])


def test_bad_header_with_records_raises(tmp_path: Path) -> None:
    write_journal(tmp_path, [3])
    path = only_segment(tmp_path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError):
        JournalWriter(tmp_path)
    with pytest.raises(JournalCorruptError):
        list(read_records(tmp_path))


def test_newer_schema_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seg, "COMMAND_SCHEMA_VERSION", 99)
    write_journal(tmp_path, [2])
    monkeypatch.undo()
    with pytest.raises(JournalError, match="schema"):
        list(read_records(tmp_path))


def test_older_schema_segment_gets_a_fresh_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seg, "COMMAND_SCHEMA_VERSION", 0)
    write_journal(tmp_path, [2])
    monkeypatch.undo()
    with JournalWriter(tmp_path) as w:
        w.append_batch(payloads(3, 2))
    assert [s for s, _ in list_segments(tmp_path)] == [1, 3]
    assert seqs_in(tmp_path) == [1, 2, 3, 4]


# ---------------------------------------------------------------- segments


def test_rotation_across_segments(tmp_path: Path) -> None:
    last = write_journal(tmp_path, [7] * 20, segment_bytes=1024)
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    for first_seq, path in segments:
        scan = seg.scan_segment(path)
        assert scan.clean
        assert scan.first_seq == first_seq
        # rotation happens at a batch boundary once the segment is full
        assert scan.size < 1024 + 7 * 80
    for (a, _), (b, pa) in itertools.pairwise(segments):
        assert seg.scan_segment(pa).first_seq == b > a
    assert seqs_in(tmp_path) == list(range(1, last + 1))
    # Reopening continues in the last segment, and rotates again when it is full.
    with JournalWriter(tmp_path, 1024) as w:
        assert w.last_seq == last
        for _ in range(5):
            w.append_batch(payloads(w.last_seq + 1, 7))
    assert seqs_in(tmp_path) == list(range(1, last + 36))


def test_corrupt_middle_segment_raises(tmp_path: Path) -> None:
    write_journal(tmp_path, [5] * 12, segment_bytes=800)
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    path = segments[1][1]
    data = bytearray(path.read_bytes())
    data[seg.HEADER_SIZE + FRAME + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="non-final segment"):
        list(read_records(tmp_path))
    # Reading only what follows the damaged segment does not need it.
    assert seqs_in(tmp_path, segments[2][0] - 1)[0] == segments[2][0]


def test_truncated_middle_segment_raises(tmp_path: Path) -> None:
    write_journal(tmp_path, [5] * 12, segment_bytes=800)
    path = list_segments(tmp_path)[0][1]
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(JournalCorruptError):
        list(read_records(tmp_path))


def test_missing_segment_raises(tmp_path: Path) -> None:
    write_journal(tmp_path, [5] * 12, segment_bytes=800)
    segments = list_segments(tmp_path)
    segments[1][1].unlink()
    with pytest.raises(JournalCorruptError):
        list(read_records(tmp_path))


def test_one_write_and_one_fdatasync_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_write, real_sync = os.write, os.fdatasync

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_sync(fd)

    with JournalWriter(tmp_path) as w:
        w.append_batch(payloads(1, 1))  # creates the segment
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        for n in (1, 64, 1024):
            calls.clear()
            w.append_batch(payloads(w.last_seq + 1, n))
            assert calls == ["write", "fdatasync"]


# ---------------------------------------------------------------- snapshots


def test_snapshot_write_load_and_prune(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load_latest() is None
    for seq in (10, 20, 30, 40):
        store.write(seq, f"state at {seq}".encode() * 10)
    assert store.seqs() == [20, 30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        snap.snapshot_name(s) for s in (20, 30, 40)
    ]
    assert store.load_latest() == (40, b"state at 40" * 10)
    header = (tmp_path / snap.snapshot_name(40)).read_bytes()[: snap.SNAPSHOT_HEADER_SIZE]
    magic, _fmt, _schema, seq, length, _crc = struct.unpack("<8sHHQQI", header)
    assert (magic, seq, length) == (snap.SNAPSHOT_MAGIC, 40, 110)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "rename"])
def test_snapshot_falls_back_to_older_when_newest_is_corrupt(tmp_path: Path, damage: str) -> None:
    store = SnapshotStore(tmp_path)
    store.write(100, b"a" * 1000)
    store.write(200, b"b" * 1000)
    newest = tmp_path / snap.snapshot_name(200)
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[500] ^= 1
        newest.write_bytes(bytes(data))
    elif damage == "truncate":
        newest.write_bytes(bytes(data[:700]))
    elif damage == "empty":
        newest.write_bytes(b"")
    else:  # a valid snapshot under the wrong name
        newest.unlink()
        (tmp_path / snap.snapshot_name(300)).write_bytes(bytes(data))
    assert store.load_latest() == (100, b"a" * 1000)


def test_snapshot_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path)
    store.write(100, b"old")

    def crash(*args: object) -> None:
        raise OSError("crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write(200, b"new" * 1000)
    monkeypatch.undo()
    # Only a temporary file was left: the final name never held a partial snapshot.
    assert store.seqs() == [100]
    assert store.load_latest() == (100, b"old")
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    store.remove_temporary()
    assert [p.name for p in tmp_path.iterdir()] == [snap.snapshot_name(100)]


# ---------------------------------------------------------------- sequencer


def flow(count: int, seed: int = 7) -> list[Command]:
    return flow_commands(seed, count, first_order_id=1)


class FakeClock:
    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.i = 0

    def __call__(self) -> int:
        v = self.values[min(self.i, len(self.values) - 1)]
        self.i += 1
        return v


def test_sequencer_recovery_snapshot_plus_tail_equals_clean_replay(tmp_path: Path) -> None:
    cmds = flow(3000)
    with Sequencer(tmp_path, max_batch=64, snapshot_every=700) as s:
        results = s.process(cmds[:1500])
        results += s.process(cmds[1500:])
        assert [r.seq for r in results] == list(range(1, len(cmds) + 1))
        assert sum(r.status == "ACCEPTED" for r in results) > len(cmds) // 2
        live_hash = s.engine.state_hash()
        last = s.last_seq
        s.engine.check_invariants()
    snaps = SnapshotStore(snapshot_dir(tmp_path)).seqs()
    assert len(snaps) == 3 and 0 < snaps[-1] < last

    clean = replay_dir(tmp_path)
    assert clean.last_seq == last
    assert clean.state_hash() == live_hash
    assert replay_dir(tmp_path, use_snapshots=True).state_hash() == live_hash
    with Sequencer(tmp_path, snapshot_every=700) as s2:
        assert s2.snapshot_seq == snaps[-1]
        assert s2.replayed == last - snaps[-1]
        assert s2.engine.state_hash() == live_hash
        # and it continues exactly where it stopped
        more = flow(200, seed=8)
        s2.process(more)
        after = s2.engine.state_hash()
    assert replay_dir(tmp_path).state_hash() == after


def test_sequencer_falls_back_to_older_snapshot(tmp_path: Path) -> None:
    with Sequencer(tmp_path, max_batch=100, snapshot_every=300) as s:
        s.process(flow(1000))
        live_hash = s.engine.state_hash()
    store = SnapshotStore(snapshot_dir(tmp_path))
    assert len(store.seqs()) == 3
    newest = store.path(store.seqs()[-1])
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))
    with Sequencer(tmp_path, snapshot_every=300) as s2:
        assert s2.snapshot_seq == store.seqs()[-2]
        assert s2.engine.state_hash() == live_hash
    # Without any snapshot at all: full replay.
    shutil.rmtree(snapshot_dir(tmp_path))
    with Sequencer(tmp_path, snapshot_every=0) as s3:
        assert s3.snapshot_seq == 0
        assert s3.engine.state_hash() == live_hash


def test_sequencer_truncates_torn_tail_on_open(tmp_path: Path) -> None:
    with Sequencer(tmp_path) as s:
        s.process(flow(100))
        live_hash = s.engine.state_hash()
        last = s.last_seq
    path = list_segments(journal_dir(tmp_path))[-1][1]
    with path.open("ab") as f:
        f.write(struct.pack("<II", 60, 12345) + b"partial")
    with Sequencer(tmp_path) as s2:
        assert s2.writer.truncated_bytes == 15
        assert s2.last_seq == last
        assert s2.engine.state_hash() == live_hash
        assert s2.process([Tick()])[0].seq == last + 1


def test_snapshot_ahead_of_journal_is_refused(tmp_path: Path) -> None:
    with Sequencer(tmp_path) as s:
        s.process(flow(50))
        s.snapshot_now()
    # Lose acknowledged journal records (a damaged disk, a wrong directory...).
    shutil.rmtree(journal_dir(tmp_path))
    with pytest.raises(RecoveryError, match="ahead of the journal"):
        Sequencer(tmp_path)


def test_corrupt_middle_segment_stops_recovery(tmp_path: Path) -> None:
    with Sequencer(tmp_path, max_batch=20, segment_bytes=2000, snapshot_every=0) as s:
        s.process(flow(300))
    segments = list_segments(journal_dir(tmp_path))
    assert len(segments) > 2
    data = bytearray(segments[0][1].read_bytes())
    data[100] ^= 0x10
    segments[0][1].write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError):
        Sequencer(tmp_path)
    with pytest.raises(JournalCorruptError):
        replay_dir(tmp_path)


def test_results_are_released_only_after_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is one fdatasync; a command is applied only after an fdatasync that
    covered its record. (The next batch's fdatasync may overlap this batch's applies.)"""
    events: list[tuple[str, int]] = []
    with Sequencer(tmp_path, max_batch=4, snapshot_every=0) as s:
        s.process(flow(0))  # setup; creates the first segment
        real_sync = os.fdatasync

        def fdatasync(fd: int) -> None:
            real_sync(fd)
            durable = max(r[0] for r in read_records(journal_dir(tmp_path)))
            events.append(("fdatasync", durable))

        real_apply = s.engine.apply

        def apply(seq: int, ts: int, cmd: Command) -> object:
            events.append(("apply", seq))
            return real_apply(seq, ts, cmd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(s.engine, "apply", apply)
        first = s.last_seq + 1
        results = s.process([Tick()] * 10)
    # 10 commands, max_batch 4: three batches, three fdatasyncs, covering 4, 8, 10 records
    synced = [v for k, v in events if k == "fdatasync"]
    assert synced == [first + 3, first + 7, first + 9]
    durable = 0
    for kind, value in events:
        if kind == "fdatasync":
            durable = value
        else:
            assert value <= durable, f"seq {value} applied before it was durable"
    assert [v for k, v in events if k == "apply"] == list(range(first, first + 10))
    assert [r.seq for r in results] == list(range(first, first + 10))


def test_failed_fdatasync_stops_the_sequencer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Sequencer(tmp_path) as s:
        s.process([UpsertAsset("BTC", 8)])
        before = s.engine.state_hash()

        def fail(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", fail)
        with pytest.raises(OSError):
            s.process([Tick()])
        monkeypatch.undo()
        assert s.engine.state_hash() == before  # nothing was applied
        with pytest.raises(SequencerClosedError):
            s.process([Tick()])


def test_timestamps_never_go_backwards(tmp_path: Path) -> None:
    clock = FakeClock([1000, 2000, 1500, 1500, 3000])
    with Sequencer(tmp_path, clock=clock) as s:
        for _ in range(5):
            s.process([Tick(), Tick()])
    stamps = [ts for _, ts, _ in read_records(journal_dir(tmp_path))]
    assert stamps == [1000, 1000, 2000, 2000, 2000, 2000, 2000, 2000, 3000, 3000]
    # ... across restarts too
    with Sequencer(tmp_path, clock=FakeClock([5])) as s:
        s.process([Tick()])
    assert [ts for _, ts, _ in read_records(journal_dir(tmp_path))][-1] == 3000


def test_non_command_is_refused_before_sequencing(tmp_path: Path) -> None:
    with Sequencer(tmp_path) as s:
        with pytest.raises(TypeError):
            s.process([Tick(), {"command": "Tick"}])  # type: ignore[list-item]
        assert s.last_seq == 0
        assert s.process([Tick()])[0].seq == 1


def test_second_sequencer_on_same_directory_is_refused(tmp_path: Path) -> None:
    with Sequencer(tmp_path), pytest.raises(JournalError, match="already open"):
        Sequencer(tmp_path)
    Sequencer(tmp_path).close()


# ---------------------------------------------------------------- async front


def test_async_submit_batches_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_sync = os.fdatasync

    async def main() -> None:
        front = await AsyncSequencer.open(tmp_path, max_batch=64, snapshot_every=250)
        writer = front.sequencer.writer
        await front.submit(Tick())  # creates the first segment (its own fdatasync)
        first_batches = front.batches

        def fdatasync(fd: int) -> None:
            real_sync(fd)
            syncs.append(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        cmds = flow(1000)
        released: list[tuple[int, int]] = []

        async def client(chunk: list[Command]) -> list[int]:
            seqs = []
            for cmd in chunk:
                result = await front.submit(cmd)
                # released only once durable: the journal's durable tip covers it
                released.append((result.seq, writer.last_seq))
                assert front.engine.last_seq >= result.seq
                seqs.append(result.seq)
            return seqs

        chunks = [cmds[i::50] for i in range(50)]
        per_client = await asyncio.gather(*(client(c) for c in chunks))
        for seqs in per_client:  # each client's commands are sequenced in its order
            assert seqs == sorted(seqs)
        assert sorted(s for seqs in per_client for s in seqs) == list(range(2, len(cmds) + 2))
        assert all(seq <= durable for seq, durable in released)
        assert front.batches - first_batches == len(syncs)
        live_hash = front.engine.state_hash()
        await front.close()
        assert replay_dir(tmp_path).state_hash() == live_hash
        assert replay_dir(tmp_path, use_snapshots=True).state_hash() == live_hash

    asyncio.run(main())
    n = 1032  # setup + flow
    assert len(syncs) < n / 10  # group commit: far fewer fdatasyncs than commands
    assert SnapshotStore(snapshot_dir(tmp_path)).seqs()


def test_async_max_wait_collects_a_batch(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncSequencer.open(tmp_path, max_wait_us=50_000) as front:
            loop = asyncio.get_running_loop()
            futures = []
            for _ in range(5):  # trickle in, 1 ms apart: all within one 50 ms window
                futures.append(front.submit_nowait(Tick()))
                await asyncio.sleep(0.001)
            started = loop.time()
            results = await asyncio.gather(*futures)
            assert loop.time() - started < 1.0
            assert [r.seq for r in results] == [1, 2, 3, 4, 5]
            assert front.batches == 1

    asyncio.run(main())


def test_async_close_drains_queue_and_refuses_more(tmp_path: Path) -> None:
    async def main() -> None:
        front = await AsyncSequencer.open(tmp_path)
        futures = [front.submit_nowait(Tick()) for _ in range(100)]
        await front.close(snapshot=True)
        assert all(f.done() and f.result().accepted for f in futures)
        with pytest.raises(SequencerClosedError):
            front.submit_nowait(Tick())

    asyncio.run(main())
    assert SnapshotStore(snapshot_dir(tmp_path)).load_latest() is not None
    assert replay_dir(tmp_path).last_seq == 100


def test_async_cancelled_submit_is_withdrawn(tmp_path: Path) -> None:
    async def main() -> None:
        front = await AsyncSequencer.open(tmp_path, max_wait_us=100_000)
        a = front.submit_nowait(Tick())
        b = front.submit_nowait(Tick())
        a.cancel()
        assert (await b).seq == 1
        await front.close()

    asyncio.run(main())
    assert replay_dir(tmp_path).last_seq == 1


def test_async_fatal_error_fails_pending_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        front = await AsyncSequencer.open(tmp_path)
        await front.submit(Tick())

        def fail(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", fail)
        futures = [front.submit_nowait(Tick()) for _ in range(3)]
        for fut in futures:
            with pytest.raises(SequencerClosedError):
                await fut
        monkeypatch.undo()
        with pytest.raises(SequencerClosedError):
            await front.submit(Tick())
        await front.close()

    asyncio.run(main())
    assert replay_dir(tmp_path).last_seq in (1, 4)  # the failed batch may or may not be there


def test_engine_restore_matches(tmp_path: Path) -> None:
    """The engine property the sequencer relies on: snapshot/restore keeps the hash."""
    e = Engine()
    for i, cmd in enumerate(flow(500), 1):
        e.apply(i, 1000 + i, cmd)
    restored = Engine.restore(e.snapshot())
    assert restored.state_hash() == e.state_hash()
    assert restored.last_seq == e.last_seq


# ---------------------------------------------------------------- CLI


def test_cli_replay_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from mercato.cli import app

    with Sequencer(tmp_path, max_batch=50, snapshot_every=200) as s:
        s.process(flow(600))
        live_hash, last = s.engine.state_hash(), s.last_seq
    runner = CliRunner()
    result = runner.invoke(app, ["replay", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"last_seq": last, "state_hash": live_hash}
    result = runner.invoke(app, ["replay", str(tmp_path)])
    assert result.exit_code == 0 and live_hash in result.output

    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "USDT" in result.output and "OK" in result.output
    report = json.loads(runner.invoke(app, ["audit", str(tmp_path), "--json"]).output)
    assert report["ok"] and report["last_seq"] == last and report["snapshot_seq"] > 0
    assert report["state_hash"] == live_hash
    assert set(report["balances"]) == {"BTC", "ETH", "USDT"}

    def broken(self: Engine) -> None:
        raise AssertionError("BTC: accounts sum to 1, not 0")

    monkeypatch.setattr(Engine, "check_invariants", broken)
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 1
    assert "invariant failed" in result.output
    monkeypatch.undo()

    def unbalanced(self: Engine) -> dict[str, dict[str, int]]:
        return {"BTC": dict.fromkeys(("users_available", "users_locked", "fees",
                "external_deposits", "external_withdrawals", "sum"), 1)}  # fmt: skip

    monkeypatch.setattr(Engine, "total_balances", unbalanced)
    monkeypatch.setattr(Engine, "check_invariants", lambda self: None)
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 1 and "sum to 1" in result.output


def test_cli_reports_corruption(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mercato.cli import app

    with Sequencer(tmp_path, max_batch=20, segment_bytes=2000, snapshot_every=0) as s:
        s.process(flow(300))
    first = list_segments(journal_dir(tmp_path))[0][1]
    data = bytearray(first.read_bytes())
    data[200] ^= 0x01
    first.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["replay", str(tmp_path)])
    assert result.exit_code == 2


def test_unencodable_command_is_refused_before_sequencing(tmp_path: Path) -> None:
    from mercato.core.commands import CreditDeposit
    from mercato.journal import CommandEncodeError

    too_big = CreditDeposit(1, "BTC", 10**20, "d-1")  # beyond msgpack's 64-bit integers
    with Sequencer(tmp_path, max_batch=2) as s:
        with pytest.raises(CommandEncodeError) as info:
            s.process([Tick(), Tick(), Tick(), too_big])
        assert info.value.index == 3
        assert s.last_seq == 0  # nothing of the call was sequenced
        assert s.process([Tick()])[0].seq == 1

    async def main() -> None:
        async with await AsyncSequencer.open(tmp_path) as front:
            futures = [front.submit_nowait(c) for c in (Tick(), too_big, Tick())]
            ok1, bad, ok2 = await asyncio.gather(*futures, return_exceptions=True)
            assert isinstance(bad, CommandEncodeError)
            assert (ok1.seq, ok2.seq) == (2, 3)  # type: ignore[union-attr]
            assert (await front.submit(Tick())).seq == 4

    asyncio.run(main())
    assert replay_dir(tmp_path).last_seq == 4


def test_listeners_see_every_applied_batch_in_order(tmp_path: Path) -> None:
    setup, flow = generate_flow(seed=3, count=600, users=4)
    seen: list[AppliedBatch] = []

    async def scenario() -> list[object]:
        sequencer = await AsyncSequencer.open(tmp_path, max_batch=64)
        sequencer.sequencer.listeners.append(seen.append)
        results = await sequencer.submit_many([*setup, *flow])
        await sequencer.close()
        return list(results)

    results = asyncio.run(scenario())
    assert [b.seq0 for b in seen] == sorted(b.seq0 for b in seen)
    streamed = [r for batch in seen for r in batch.results]
    assert [encode(r) for r in streamed] == [encode(r) for r in results]
    assert all(b.last_seq == b.seq0 + len(b.commands) - 1 for b in seen)
    assert len(seen) > 1  # several batches, each once


def test_replay_applied_reproduces_the_live_results(tmp_path: Path) -> None:
    setup, flow = generate_flow(seed=4, count=900, users=4)
    live: list[AppliedBatch] = []
    with Sequencer(tmp_path, max_batch=50, snapshot_every=200) as sequencer:
        sequencer.listeners.append(live.append)
        sequencer.process([*setup, *flow])
        last = sequencer.last_seq
    live_by_seq = {b.seq0 + i: r for b in live for i, r in enumerate(b.results)}
    assert snap.SnapshotStore(snapshot_dir(tmp_path)).seqs()  # snapshots exist to skip to
    for after, until in ((0, 40), (350, 700), (last - 5, last), (last, last)):
        replayed = list(replay_applied(tmp_path, after, until))
        assert [b.seq0 for b in replayed] == list(range(after + 1, until + 1))
        assert [encode(b.results[0]) for b in replayed] == [
            encode(live_by_seq[b.seq0]) for b in replayed
        ]


def test_a_failing_listener_does_not_stop_the_sequencer(tmp_path: Path) -> None:
    def broken(batch: AppliedBatch) -> None:
        raise RuntimeError("consumer bug")

    with Sequencer(tmp_path) as sequencer:
        sequencer.listeners.append(broken)
        first = sequencer.process([UpsertAsset("BTC", 8)])
        second = sequencer.process([UpsertAsset("USDT", 8)])
    assert [first[0].status, second[0].status] == ["ACCEPTED", "ACCEPTED"]


def encode(result: object) -> bytes:
    return msgspec.msgpack.encode(result)
