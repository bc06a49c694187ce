"""Binary encodings of commands, results and journal records (msgpack via msgspec)."""

from __future__ import annotations

import msgspec

from mercato.core.commands import Command
from mercato.core.results import Result

JournalRecord = tuple[int, int, Command]
"""(sequence number, timestamp in ms, command): what the sequencer makes durable."""

_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(JournalRecord)
_command_decoder = msgspec.msgpack.Decoder(Command)
_result_decoder = msgspec.msgpack.Decoder(Result)


def encode_record(seq: int, ts: int, command: Command) -> bytes:
    return _encoder.encode((seq, ts, command))


def decode_record(data: bytes | memoryview) -> JournalRecord:
    record: JournalRecord = _record_decoder.decode(data)
    return record


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes | memoryview) -> Command:
    command: Command = _command_decoder.decode(data)
    return command


def encode_result(result: Result) -> bytes:
    return _encoder.encode(result)


def decode_result(data: bytes | memoryview) -> Result:
    return _result_decoder.decode(data)
