"""Shared harness for the service tests: a real `mercato serve` process on a free port.

``backend`` runs a test once per store: on SQLite (the default store in the data
directory, as an operator gets it) and on PostgreSQL (``DATABASE_URL`` naming a fresh
database, created and dropped like the store tests' one; skipped, or failed under
``MERCATO_REQUIRE_SERVICES=1``, when PostgreSQL is unreachable). ``env`` alone is the
SQLite-only environment, for tests about configuration or the HTTP layer that never reach
the store. The store tests' ``database_url`` fixture is re-exported here."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import inspect, text

from mercato.store import create_engine, sqlite_url
from store.conftest import database_url, fresh_postgres_database  # noqa: F401  (re-exported)

BOOT_SECONDS = 60  # a loaded 2-core CI machine has taken over 30 s to recover and boot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The log goes to a file beside the data directory, not a pipe: a pipe nobody
        # reads until the end fills up (64 KiB of tracebacks) and blocks the server.
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mercato.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(data_dir), *args],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self) -> dict[str, object]:
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                answer = httpx.get(f"{self.url}/health/ready", timeout=1)
                if answer.status_code == 200:
                    return dict(answer.json())
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {BOOT_SECONDS} s:\n{self.output()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def output(self) -> str:
        """Everything the server logged (it is killed first if still running)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MERCATO_", "SMTP_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return clean


@dataclass(frozen=True)
class Backend:
    """The store a service test's server runs on, and the test's own access to it."""

    name: str  # "sqlite" or "postgres"
    data: Path  # the server's --data-dir
    env: dict[str, str]  # the server's environment: DATABASE_URL is set for PostgreSQL
    url: str  # the store's URL (for SQLite, the default store in ``data``)

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``:name`` parameters) in its own transaction; the rows it returns.
        Booleans come back as 0/1 on SQLite and False/True on PostgreSQL (equal in Python)."""

        async def run() -> list[tuple[Any, ...]]:
            engine = create_engine(self.url)
            try:
                async with engine.begin() as connection:
                    result = await connection.execute(text(sql), params)
                    return [tuple(row) for row in result] if result.returns_rows else []
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def execute(self, sql: str, **params: object) -> None:
        self.rows(sql, **params)

    def tables(self) -> set[str]:
        async def run() -> set[str]:
            engine = create_engine(self.url)
            try:
                async with engine.connect() as connection:
                    names = await connection.run_sync(lambda c: inspect(c).get_table_names())
                    return set(names)
            finally:
                await engine.dispose()

        return asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]
) -> Iterator[Backend]:
    """The test once on SQLite and once on PostgreSQL. A restart within the test reuses
    ``backend.env``, so the new server finds the same database."""
    data = tmp_path / "data"
    if request.param == "sqlite":
        yield Backend("sqlite", data, env, sqlite_url(data / "mercato.db"))
        return
    with fresh_postgres_database() as url:
        yield Backend("postgres", data, {**env, "DATABASE_URL": url}, url)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


class Inbox:
    """An aiosmtpd handler keeping every delivered message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def wait_for(self, count: int, seconds: float = 10) -> list[Any]:
        deadline = time.monotonic() + seconds
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"{len(self.messages)} mails arrived, not {count}"
        return self.messages


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def smtp_env(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` pointing the server at a plain (no TLS) SMTP server on ``port``."""
    return {**env, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_STARTTLS": "false",
            "SMTP_SENDER": "Mercato <desk@mercato.test>"}  # fmt: skip
