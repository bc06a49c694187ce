"""A real SMTP server for the mail tests (aiosmtpd in its own thread), as in
tests/service/conftest.py, plus a gate that holds deliveries at RCPT TO, before any
message content is sent, to catch a delivery in the act."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """A port nothing listens on (until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """An aiosmtpd handler keeping every delivered message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.port = 0
        self.gate = threading.Event()  # cleared: deliveries wait at RCPT TO
        self.gate.set()
        self.waiting = threading.Event()  # a delivery is waiting at the gate

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        while not self.gate.is_set():
            self.waiting.set()
            await asyncio.sleep(0.01)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    @property
    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]


async def wait_until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[Inbox]:
    """A plain (no TLS) SMTP server on 127.0.0.1:``port`` for the block."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    inbox.port = controller.port
    try:
        yield inbox
    finally:
        inbox.gate.set()
        controller.stop()
