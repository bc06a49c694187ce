"""Append-only journal segments: framing, CRC, torn-tail recovery and group commit.

Layout of a journal directory: one file per segment, named after the sequence number of
its first record, zero padded to 20 digits (``00000000000000000001.seg``). A segment is::

    header   16 bytes  magic b"MRCTJRNL" | u16 format version | u16 command schema version
                       | u32 CRC32 of the 12 bytes before it            (all little endian)
    record*  u32 payload length | u32 CRC32(payload) | payload (``encode_record`` bytes)

Records are numbered by consecutive sequence numbers across segments. Only the tail of
the *last* segment can be torn by a crash (a batch is written with one ``write`` and made
durable with one ``fdatasync`` before it is acknowledged), so the first invalid frame of
the last segment and everything after it is discarded; an invalid frame anywhere else is
corruption of acknowledged data and raises :class:`JournalCorruptError`.
See docs/journal.md.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mercato.core.codec import JournalRecord, decode_record
from mercato.core.commands import COMMAND_SCHEMA_VERSION

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "FRAME_HEADER_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "JournalCorruptError",
    "JournalError",
    "JournalWriter",
    "SegmentScan",
    "encode_frames",
    "fsync_dir",
    "list_segments",
    "read_records",
    "scan_segment",
    "segment_name",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"MRCTJRNL"
FORMAT_VERSION: Final = 1
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
MAX_PAYLOAD: Final = 64 * 1024 * 1024
"""A frame announcing a longer payload is treated as garbage (torn or corrupt)."""

_HEADER_BODY = struct.Struct("<8sHH")
_HEADER = struct.Struct("<8sHHI")
HEADER_SIZE: Final = _HEADER.size  # 16
_FRAME = struct.Struct("<II")
FRAME_HEADER_SIZE: Final = _FRAME.size  # 8
_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
SEGMENT_SUFFIX: Final = ".seg"


class JournalError(Exception):
    """The journal cannot be used as asked (bad format, wrong sequence, I/O state)."""


class JournalCorruptError(JournalError):
    """Acknowledged data is damaged: an invalid record that is not a torn tail."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Segment files of ``directory`` as (first seq, path), in sequence order."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for entry in os.scandir(d):
        m = _SEGMENT_RE.match(entry.name)
        if m is not None and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    found.sort()
    return found


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_header() -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, COMMAND_SCHEMA_VERSION)
    return body + struct.pack("<I", zlib.crc32(body))


def _parse_uint(buf: bytes | memoryview, off: int) -> tuple[int, int]:
    """A msgpack unsigned integer at ``off``: (value, offset after it)."""
    b = buf[off]
    if b <= 0x7F:
        return b, off + 1
    if b == 0xCC:
        return buf[off + 1], off + 2
    if b == 0xCD:
        return int.from_bytes(buf[off + 1 : off + 3], "big"), off + 3
    if b == 0xCE:
        return int.from_bytes(buf[off + 1 : off + 5], "big"), off + 5
    if b == 0xCF:
        return int.from_bytes(buf[off + 1 : off + 9], "big"), off + 9
    raise ValueError(f"not a msgpack unsigned integer (0x{b:02x})")


def peek_seq_ts(payload: bytes | memoryview) -> tuple[int, int]:
    """(seq, ts) of an ``encode_record`` payload without decoding the command."""
    try:
        if payload[0] != 0x93:  # fixarray of 3: (seq, ts, command)
            raise ValueError("not a 3-element msgpack array")
        seq, off = _parse_uint(payload, 1)
        ts, _ = _parse_uint(payload, off)
    except (IndexError, ValueError) as exc:
        raise JournalError(f"payload is not a journal record: {exc}") from None
    return seq, ts


@dataclass(frozen=True, slots=True)
class FramedBatch:
    """Consecutive journal records, framed into the bytes one ``write`` appends."""

    first: int
    last: int
    last_ts: int
    frames: bytes

    @staticmethod
    def of(payloads: Sequence[bytes]) -> FramedBatch:
        """Frame ``encode_record`` payloads with consecutive seqs (checked)."""
        first = peek_seq_ts(payloads[0])[0]
        last, last_ts = peek_seq_ts(payloads[-1])
        if last != first + len(payloads) - 1:
            raise JournalError(f"batch seqs {first}..{last} are not {len(payloads)} in a row")
        return FramedBatch(first, last, last_ts, encode_frames(payloads))


def encode_frames(payloads: Sequence[bytes]) -> bytes:
    """Frame ``payloads`` (length + CRC32 + payload each) into one buffer."""
    pack = _FRAME.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    append = parts.append
    for p in payloads:
        append(pack(len(p), crc32(p)))
        append(p)
    return b"".join(parts)


@dataclass(slots=True)
class SegmentScan:
    """What one pass over a segment file found."""

    path: Path
    size: int
    """File size in bytes."""
    header_ok: bool
    schema_version: int
    valid_end: int
    """Offset just after the last valid frame (``HEADER_SIZE`` if none; 0 if bad header)."""
    count: int
    """Number of valid frames."""
    first_seq: int
    last_seq: int
    last_ts: int
    """seq/ts of the first and last valid records (0 if none)."""
    problem: str
    """Why the scan stopped before the end of file; empty if the whole file is valid."""

    @property
    def clean(self) -> bool:
        return self.header_ok and self.valid_end == self.size


def _check_header(data: bytes | memoryview) -> tuple[bool, int, str]:
    """(valid, schema version, problem) for the header at the start of ``data``."""
    if len(data) < HEADER_SIZE:
        return False, 0, f"short header ({len(data)} bytes)"
    magic, fmt, schema, crc = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        return False, 0, "bad magic"
    if zlib.crc32(data[: _HEADER_BODY.size]) != crc:
        return False, 0, "bad header CRC"
    if fmt != FORMAT_VERSION:
        raise JournalError(
            f"unsupported journal format version {fmt} (this build: {FORMAT_VERSION})"
        )
    if schema > COMMAND_SCHEMA_VERSION:
        raise JournalError(
            f"journal written with command schema {schema}, newer than this build's "
            f"{COMMAND_SCHEMA_VERSION}: upgrade before reading it"
        )
    return True, schema, ""


def _walk_frames(data: bytes | memoryview, start: int) -> tuple[int, str, list[tuple[int, int]]]:
    """Validate frames from ``start``: (end of the last valid frame, why the walk stopped
    early or "", (offset, length) of every valid payload)."""
    size = len(data)
    off = start
    unpack = _FRAME.unpack_from
    crc32 = zlib.crc32
    spans: list[tuple[int, int]] = []
    append = spans.append
    problem = ""
    while off < size:
        if off + FRAME_HEADER_SIZE > size:
            problem = f"torn frame header at offset {off}"
            break
        length, crc = unpack(data, off)
        if length == 0 or length > MAX_PAYLOAD:
            problem = f"invalid frame length {length} at offset {off}"
            break
        body = off + FRAME_HEADER_SIZE
        if body + length > size:
            problem = f"torn payload at offset {off} ({size - body} of {length} bytes)"
            break
        if crc32(data[body : body + length]) != crc:
            problem = f"CRC mismatch at offset {off}"
            break
        append((body, length))
        off = body + length
    return off, problem, spans


def _scan_bytes(path: Path, data: bytes) -> tuple[SegmentScan, list[tuple[int, int]]]:
    ok, schema, problem = _check_header(data)
    if not ok:
        return SegmentScan(path, len(data), False, 0, 0, 0, 0, 0, 0, problem), []
    end, problem, spans = _walk_frames(data, HEADER_SIZE)
    first = last = last_ts = 0
    if spans:
        view = memoryview(data)
        b, n = spans[0]
        first, _ = peek_seq_ts(view[b : b + n])
        b, n = spans[-1]
        last, last_ts = peek_seq_ts(view[b : b + n])
        view.release()
    scan = SegmentScan(
        path, len(data), True, schema, end, len(spans), first, last, last_ts, problem
    )
    return scan, spans


def scan_segment(path: str | os.PathLike[str]) -> SegmentScan:
    """Validate every frame of a segment file (read-only)."""
    p = Path(path)
    return _scan_bytes(p, p.read_bytes())[0]


def _check_sequence(scan: SegmentScan, name_seq: int) -> None:
    if scan.count and scan.first_seq != name_seq:
        raise JournalCorruptError(
            f"{scan.path.name}: first record has seq {scan.first_seq}, file name says {name_seq}"
        )
    if scan.count and scan.last_seq != name_seq + scan.count - 1:
        raise JournalCorruptError(
            f"{scan.path.name}: {scan.count} records from seq {scan.first_seq} end at "
            f"{scan.last_seq}: sequence numbers are not consecutive"
        )


def read_records(directory: str | os.PathLike[str], after_seq: int = 0) -> Iterator[JournalRecord]:
    """Yield every durable record (seq, ts, command) with seq > ``after_seq`` in order.

    CRCs and sequence continuity are verified. A torn or corrupt tail of the last segment
    ends the iteration (those records were never acknowledged); an invalid record in any
    other segment raises :class:`JournalCorruptError`. Read-only: nothing is truncated.
    """
    segments = list_segments(directory)
    expected = 0  # first seq of the next segment, once known
    for i, (name_seq, path) in enumerate(segments):
        is_last = i == len(segments) - 1
        next_first = None if is_last else segments[i + 1][0]
        if next_first is not None and next_first <= after_seq + 1:
            expected = next_first
            continue  # every record of this segment has seq <= after_seq
        if expected and name_seq != expected:
            raise JournalCorruptError(
                f"{path.name}: segment starts at seq {name_seq}, expected {expected}"
            )
        data = path.read_bytes()
        scan, spans = _scan_bytes(path, data)
        if not scan.clean:
            if not is_last:
                raise JournalCorruptError(f"{path.name}: {scan.problem} in a non-final segment")
            if not scan.header_ok and scan.size > HEADER_SIZE:
                raise JournalCorruptError(f"{path.name}: {scan.problem}")
            log.debug("journal %s: ignoring torn tail (%s)", path.name, scan.problem)
        _check_sequence(scan, name_seq)
        if next_first is not None and name_seq + scan.count != next_first:
            raise JournalCorruptError(
                f"{path.name}: ends at seq {name_seq + scan.count - 1} but the next segment "
                f"starts at {next_first}"
            )
        view = memoryview(data)
        for k in range(max(0, after_seq + 1 - name_seq), len(spans)):
            body, length = spans[k]
            record = decode_record(view[body : body + length])
            if record[0] != name_seq + k:
                raise JournalCorruptError(
                    f"{path.name}: record has seq {record[0]}, expected {name_seq + k}"
                )
            yield record
        expected = name_seq + scan.count


class JournalWriter:
    """The single writer of a journal directory.

    Opening it recovers the directory: the torn or corrupt tail of the last segment is
    truncated (and the truncation fsynced). :meth:`append_batch` then makes a batch of
    records durable with one ``write`` and one ``fdatasync`` (group commit).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if segment_bytes <= HEADER_SIZE:
            raise ValueError("segment_bytes is too small")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._force_rotate = False
        self._failed: BaseException | None = None
        self.last_seq = 0
        """Sequence number of the last durable record (0 for an empty journal)."""
        self.last_ts = 0
        """Timestamp of the last durable record (0 for an empty journal)."""
        self.truncated_bytes = 0
        """Bytes of torn or corrupt tail discarded when this writer opened the journal."""
        self.truncation_problem = ""
        self._recover()

    # -- opening ------------------------------------------------------------------------

    def _recover(self) -> None:
        segments = list_segments(self.directory)
        if not segments:
            return
        name_seq, path = segments[-1]
        data = path.read_bytes()
        scan, _ = _scan_bytes(path, data)
        if not scan.header_ok:
            if len(data) > HEADER_SIZE:
                raise JournalCorruptError(
                    f"{path.name}: {scan.problem}, and the file holds {len(data)} bytes"
                )
            # A segment whose creation was interrupted (its header is made durable before
            # any record is written, so it holds no record): rewrite the header.
            log.warning("journal %s: rewriting interrupted segment (%s)", path.name, scan.problem)
            self.truncated_bytes = len(data)
            self.truncation_problem = scan.problem
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                _write_all(fd, _make_header())
                os.fsync(fd)
            finally:
                os.close(fd)
            scan = SegmentScan(
                path, HEADER_SIZE, True, COMMAND_SCHEMA_VERSION, HEADER_SIZE, 0, 0, 0, 0, ""
            )
        else:
            _check_sequence(scan, name_seq)
            if scan.problem:
                self.truncated_bytes = scan.size - scan.valid_end
                self.truncation_problem = scan.problem
                log.warning(
                    "journal %s: truncating %d bytes of torn tail after seq %d (%s)",
                    path.name,
                    self.truncated_bytes,
                    scan.last_seq or name_seq - 1,
                    scan.problem,
                )
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, scan.valid_end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        if scan.count:
            self.last_seq, self.last_ts = scan.last_seq, scan.last_ts
        else:
            self.last_seq = name_seq - 1
            if len(segments) > 1:
                # The last segment is empty: the previous one holds the last record.
                prev_seq, prev_path = segments[-2]
                prev = scan_segment(prev_path)
                if not prev.clean:
                    raise JournalCorruptError(f"{prev_path.name}: {prev.problem}")
                _check_sequence(prev, prev_seq)
                if prev.count and prev.last_seq != self.last_seq:
                    raise JournalCorruptError(
                        f"{prev_path.name} ends at seq {prev.last_seq} but {path.name} "
                        f"starts at {name_seq}"
                    )
                self.last_ts = prev.last_ts
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = scan.valid_end
        self._force_rotate = scan.schema_version != COMMAND_SCHEMA_VERSION

    # -- writing ------------------------------------------------------------------------

    def _create_segment(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _write_all(fd, _make_header())
            os.fdatasync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._size = HEADER_SIZE
        self._force_rotate = False

    def append_batch(self, payloads: Sequence[bytes]) -> None:
        """Make ``payloads`` (``encode_record`` bytes, consecutive seqs following
        :attr:`last_seq`) durable: one ``write`` of all frames, then one ``fdatasync``.

        When this returns, every record of the batch survives a crash. If it raises, the
        writer refuses further appends: reopen the journal to recover a known state.
        """
        if payloads:
            self.append_framed(FramedBatch.of(payloads))

    def append_framed(self, batch: FramedBatch) -> None:
        """:meth:`append_batch` for a batch framed beforehand (framing is CPU work that
        needs the GIL; this part is two system calls, which release it)."""
        if self._failed is not None:
            raise JournalError("an earlier append failed; reopen the journal") from self._failed
        first, last, buf = batch.first, batch.last, batch.frames
        if first != self.last_seq + 1:
            raise JournalError(f"batch seqs {first}..{last} do not follow last seq {self.last_seq}")
        try:
            if self._fd < 0 or self._force_rotate or self._size >= self.segment_bytes:
                self._create_segment(first)
            _write_all(self._fd, buf)
            os.fdatasync(self._fd)
        except BaseException as exc:
            # After a failed write or fdatasync the file state is unknown (the kernel may
            # have dropped the dirty pages): never acknowledge anything from here on.
            self._failed = exc
            raise
        last_ts = batch.last_ts
        self._size += len(buf)
        self.last_seq = last
        self.last_ts = last_ts

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, buf: bytes) -> None:
    """``os.write`` once; loop only on a short write (rare for regular files)."""
    written = os.write(fd, buf)
    if written != len(buf):
        view = memoryview(buf)
        while written < len(buf):
            written += os.write(fd, view[written:])
