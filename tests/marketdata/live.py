"""A real exchange served in-process: the ExchangeService and the FastAPI app behind a
real uvicorn on a free port, in the test's own event loop, so a test can also submit
commands straight to the engine (there is no need for an order endpoint) and tune the
hub (queue bound, heartbeat). Clients talk to it over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import websockets

from mercato import service as service_module
from mercato.api.app import create_app
from mercato.auth.sessions import Client, login
from mercato.auth.users import create_user
from mercato.config import load_config
from mercato.core.commands import Command, CreditDeposit
from mercato.core.results import Result
from mercato.marketdata.hub import Hub
from mercato.service import ExchangeService

PASSWORD = "correct-horse-9-battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Live:
    service: ExchangeService
    url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT/ws
    server: uvicorn.Server

    def limit_send_buffers(self, size: int) -> None:
        """Small kernel send buffers for the connections accepted from now on (they
        inherit them from the listening socket), so a client that stops reading makes
        the server's writes back up at once instead of after megabytes."""
        for server in self.server.servers:
            for sock in server.sockets:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    async def submit(self, command: Command) -> Result:
        assert self.service.sequencer is not None
        return await self.service.sequencer.submit(command)

    async def user(self, email: str, funds: dict[str, int] | None = None) -> tuple[int, str]:
        """A verified user with deposits (atoms), and an access token of theirs."""
        assert self.service.database is not None and self.service.secrets is not None
        user = await create_user(self.service.database, email, PASSWORD, verified=True)
        for asset, atoms in (funds or {}).items():
            result = await self.submit(CreditDeposit(user.id, asset, atoms, f"{email}:{asset}"))
            assert result.accepted, result
        tokens = await login(
            self.service.database,
            self.service.secrets.jwt_key,
            email,
            PASSWORD,
            Client("127.0.0.1", "test"),
            master_key=self.service.secrets.master_key,
        )
        return user.id, tokens.access_token


@contextlib.asynccontextmanager
async def live_exchange(
    data_dir: Path, env: dict[str, str], *, hub: Hub | None = None, config_file: Path | None = None
) -> AsyncIterator[Live]:
    config = load_config(config_file, env=env, data_dir=str(data_dir))
    service = ExchangeService(config, env=env)
    if hub is not None:
        service.hub = hub
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,
        )
    )
    tune_gc = service_module.tune_gc
    service_module.tune_gc = lambda: None  # process-wide: not in a test process
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not service.ready:
            assert not task.done(), "the server stopped"
            assert service.failure is None, service.failure
            assert time.monotonic() < deadline, "not ready after 30 s"
            await asyncio.sleep(0.02)
        yield Live(service, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", server)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        service_module.tune_gc = tune_gc


class WsClient:
    """A WebSocket client that flattens batched frames back into messages."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.pending: list[dict[str, Any]] = []
        self.frames = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, **options: Any) -> AsyncIterator[WsClient]:
        async with websockets.connect(url, **options) as connection:
            yield cls(connection)

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        while not self.pending:
            frame = await asyncio.wait_for(self.connection.recv(), timeout)
            self.frames += 1
            decoded = json.loads(frame)
            self.pending.extend(decoded if isinstance(decoded, list) else [decoded])
        return self.pending.pop(0)

    async def until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        """The next message that ``match``es; pings are answered, others skipped."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message.get("type") == "ping":
                await self.send({"op": "pong"})
            if match(message):
                return message

    async def request(self, message: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        """Send an operation; its acknowledgement or error (by ``id``)."""
        await self.send(message)
        return await self.until(
            lambda m: m.get("id") == message.get("id") and m.get("type") != "ping", timeout
        )

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Every message that arrives within ``seconds``."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                out.append(await self.next(max(0.001, deadline - time.monotonic())))
        return out
