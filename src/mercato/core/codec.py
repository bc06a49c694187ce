"""Binary encodings of commands and journal records (msgpack via msgspec)."""

from __future__ import annotations

import msgspec

from mercato.core.commands import Command

JournalRecord = tuple[int, int, Command]
"""(sequence number, timestamp in ms, command): what the sequencer makes durable."""

_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(JournalRecord)


def encode_record(seq: int, ts: int, command: Command) -> bytes:
    return _encoder.encode((seq, ts, command))


def decode_record(data: bytes | memoryview) -> JournalRecord:
    record: JournalRecord = _record_decoder.decode(data)
    return record


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)
