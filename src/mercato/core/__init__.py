"""The pure exchange core: no I/O, no clock, no floats. See docs/core.md."""

from mercato.core.codec import decode_record, encode_record
from mercato.core.commands import Command
from mercato.core.engine import Engine
from mercato.core.events import Event
from mercato.core.results import Result

__all__ = ["Command", "Engine", "Event", "Result", "decode_record", "encode_record"]
