"""Engine snapshots: atomically written, CRC-checked, the newest few kept.

A snapshot file ``snapshot-{seq:020d}.msgpack`` is::

    header  32 bytes  magic b"MRCTSNAP" | u16 format version | u16 command schema version
                      | u64 seq | u64 data length | u32 CRC32(data)       (little endian)
    data              the engine's ``snapshot()`` bytes

It is written to a temporary file, fsynced, renamed into place with ``os.replace`` and
the directory fsynced, so a crash leaves either the complete file or no file under the
final name. :meth:`SnapshotStore.load_latest` still verifies every header field and the
CRC, and falls back to an older snapshot when the newest one is damaged.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from mercato.core.commands import COMMAND_SCHEMA_VERSION
from mercato.journal.segments import fsync_dir

__all__ = [
    "SNAPSHOT_HEADER_SIZE",
    "SNAPSHOT_MAGIC",
    "SnapshotError",
    "SnapshotStore",
    "decode_snapshot",
    "encode_snapshot",
    "snapshot_name",
]

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC: Final = b"MRCTSNAP"
SNAPSHOT_FORMAT_VERSION: Final = 1
_HEADER = struct.Struct("<8sHHQQI")
SNAPSHOT_HEADER_SIZE: Final = _HEADER.size  # 32
_NAME_RE = re.compile(r"^snapshot-(\d{20})\.msgpack$")
_TMP_PREFIX = ".tmp-snapshot-"


class SnapshotError(Exception):
    """A snapshot file is damaged or of an unknown format."""


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.msgpack"


def encode_snapshot(seq: int, data: bytes) -> bytes:
    header = _HEADER.pack(
        SNAPSHOT_MAGIC,
        SNAPSHOT_FORMAT_VERSION,
        COMMAND_SCHEMA_VERSION,
        seq,
        len(data),
        zlib.crc32(data),
    )
    return header + data


def decode_snapshot(blob: bytes, expected_seq: int | None = None) -> tuple[int, bytes]:
    """(seq, data) of a snapshot file's bytes; :class:`SnapshotError` if it is not valid."""
    if len(blob) < SNAPSHOT_HEADER_SIZE:
        raise SnapshotError(f"short header ({len(blob)} bytes)")
    magic, fmt, _schema, seq, length, crc = _HEADER.unpack_from(blob, 0)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotError("bad magic")
    if fmt != SNAPSHOT_FORMAT_VERSION:
        raise SnapshotError(f"unsupported snapshot format version {fmt}")
    if expected_seq is not None and seq != expected_seq:
        raise SnapshotError(f"header says seq {seq}, file name says {expected_seq}")
    if len(blob) != SNAPSHOT_HEADER_SIZE + length:
        raise SnapshotError(f"length {len(blob) - SNAPSHOT_HEADER_SIZE}, header says {length}")
    data = blob[SNAPSHOT_HEADER_SIZE:]
    if zlib.crc32(data) != crc:
        raise SnapshotError("CRC mismatch")
    return seq, data


class SnapshotStore:
    """Snapshots of the engine in one directory, keeping the newest ``keep``."""

    def __init__(
        self, directory: str | os.PathLike[str], keep: int = 3, *, create: bool = True
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)

    def seqs(self) -> list[int]:
        """Sequence numbers of the snapshot files present, ascending (valid or not)."""
        found: list[int] = []
        if not self.directory.is_dir():
            return []
        for entry in os.scandir(self.directory):
            m = _NAME_RE.match(entry.name)
            if m is not None:
                found.append(int(m.group(1)))
        return sorted(found)

    def path(self, seq: int) -> Path:
        return self.directory / snapshot_name(seq)

    def write(self, seq: int, data: bytes) -> Path:
        """Atomically store ``data`` as the snapshot at ``seq``; then prune old ones."""
        final = self.path(seq)
        tmp = self.directory / f"{_TMP_PREFIX}{seq:020d}-{os.getpid()}"
        blob = encode_snapshot(seq, data)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(blob)
            written = 0
            while written < len(blob):
                written += os.write(fd, view[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        self.prune()
        return final

    def prune(self) -> None:
        """Delete all but the newest ``keep`` snapshots."""
        old = self.seqs()[: -self.keep]
        for seq in old:
            self.path(seq).unlink(missing_ok=True)
        if old:
            fsync_dir(self.directory)

    def remove_temporary(self) -> None:
        """Delete temporary files left by a write that a crash interrupted. Only the
        single writer may call this (when it opens), never a concurrent reader."""
        if not self.directory.is_dir():
            return
        for entry in os.scandir(self.directory):
            if entry.name.startswith(_TMP_PREFIX):
                Path(entry.path).unlink(missing_ok=True)

    def load(self, seq: int) -> bytes:
        """The data of the snapshot at ``seq``; :class:`SnapshotError` if it is damaged."""
        try:
            blob = self.path(seq).read_bytes()
        except FileNotFoundError:
            raise SnapshotError(f"no snapshot at seq {seq}") from None
        return decode_snapshot(blob, seq)[1]

    def iter_valid(self, max_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Valid snapshots (seq, data) with seq <= ``max_seq``, newest first, read lazily;
        damaged ones are skipped with a warning."""
        for seq in reversed(self.seqs()):
            if max_seq is not None and seq > max_seq:
                continue
            try:
                data = self.load(seq)
            except SnapshotError as exc:
                log.warning(
                    "snapshot %s is unusable, trying an older one: %s", snapshot_name(seq), exc
                )
                continue
            yield seq, data

    def load_latest(self) -> tuple[int, bytes] | None:
        """The newest valid snapshot as (seq, data), or None if there is none."""
        return next(self.iter_valid(), None)
