"""What order entry would gain from HTTP gateway processes apart from the sequencer.

A measurement for a design decision, not a deployment: `mercato bench api` runs order
entry in one process whose event loop is the limit, and the obvious next step is to move
HTTP and authentication into processes of their own. This script builds the smallest
version of that split out of the service's own parts and puts the same load on it:

- core process: the real service and app (on a setup port, for logins and the faucet), and
  a Unix-socket server taking ``[id, kind, user, payload]`` (msgpack, length-prefixed) and
  answering ``[id, status, body]`` with the order-entry handlers' own steps: decode and
  validate (``to_command``), sequence (journaled and fsynced), answer (``placed_view``;
  cancels through ``_changed_order``);
- ``--gateways`` processes: uvicorn on one shared port (``SO_REUSEPORT``), plain ASGI that
  checks the JWT (the service's cached verification), reads the body, makes one call to
  the core over one multiplexed connection, and sends the answer;
- the load: ``mercato.apibench.run_http_load``, as in `mercato bench api` (32 connections,
  resting orders, cancelling beyond 20 open).

It leaves out what a real gateway would also do (rate limits, the session and eligibility
checks, proxying every other route and the WebSocket), so its figure is an upper bound for
the split. Prints one JSON line, with the CPU each process used.

    python bench/gateway_split.py --gateways 2 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

HEAD = struct.Struct("!I")
USERS = 8


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MERCATO_", "DATABASE"))}


def _config(data_dir: str) -> Any:
    from mercato.config import load_config

    config_file = Path(data_dir) / "bench.toml"
    config_file.write_text("[rate_limits]\nenabled = false\n")
    return load_config(config_file, env=_environment(), data_dir=data_dir, dev=True)


def core_main(data_dir: str, port: int, socket_path: str) -> None:
    import uvicorn
    import uvloop

    from mercato.api.app import create_app
    from mercato.api.errors import ApiError
    from mercato.api.trading_routes import (
        OrderRequest,
        _changed_order,
        placed_view,
        to_command,
    )
    from mercato.core.commands import CancelOrder
    from mercato.service import ExchangeService

    service = ExchangeService(_config(data_dir), env=_environment())
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
    running: set[asyncio.Future[None]] = set()

    async def handle(kind: str, user: int, payload: bytes) -> tuple[int, bytes]:
        assert service.sequencer is not None
        try:
            if kind == "place":
                command = to_command(service, user, msgspec.json.decode(payload, type=OrderRequest))
                result = await service.sequencer.submit(command)
                if result.status != "ACCEPTED":
                    return 400, msgspec.json.encode({"code": result.code})
                return 201, msgspec.json.encode(placed_view(service, user, result))
            answer = await _changed_order(service, user, CancelOrder(user, int(payload)))
            return answer.status_code, bytes(answer.body)
        except ApiError as error:
            return error.status, msgspec.json.encode({"code": error.code})

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer(request_id: int, kind: str, user: int, payload: bytes) -> None:
            status, body = await handle(kind, user, payload)
            frame = encode([request_id, status, body])
            writer.write(HEAD.pack(len(frame)) + frame)

        with _ends_quietly():
            while True:
                (size,) = HEAD.unpack(await reader.readexactly(HEAD.size))
                task = asyncio.ensure_future(answer(*decode(await reader.readexactly(size))))
                running.add(task)
                task.add_done_callback(running.discard)

    async def main() -> None:
        config = uvicorn.Config(
            create_app(service), host="127.0.0.1", port=port, log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not service.ready:
            await asyncio.sleep(0.05)
        await asyncio.start_unix_server(connection, socket_path)
        await serving

    uvloop.run(main())


class _ends_quietly:
    """The peer went away: the benchmark is over."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, trace: object) -> bool:
        return isinstance(error, asyncio.IncompleteReadError | ConnectionError)


def gateway_main(data_dir: str, port: int, socket_path: str) -> None:
    import uvicorn
    import uvloop

    from mercato.auth.sessions import _verified
    from mercato.config import load_secrets

    jwt_key = load_secrets(_config(data_dir), _environment()).jwt_key
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
    waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
    ids = iter(range(1, 1 << 62))
    core: list[asyncio.StreamWriter] = []
    readers: list[asyncio.Future[None]] = []

    async def read_answers(reader: asyncio.StreamReader) -> None:
        with _ends_quietly():
            while True:
                (size,) = HEAD.unpack(await reader.readexactly(HEAD.size))
                request_id, status, body = decode(await reader.readexactly(size))
                waiting.pop(request_id).set_result((status, body))

    async def call(kind: str, user: int, payload: bytes) -> tuple[int, bytes]:
        if not core:
            reader, writer = await asyncio.open_unix_connection(socket_path)
            core.append(writer)
            readers.append(asyncio.ensure_future(read_answers(reader)))
        request_id = next(ids)
        waiting[request_id] = asyncio.get_running_loop().create_future()
        frame = encode([request_id, kind, user, payload])
        core[0].write(HEAD.pack(len(frame)) + frame)
        return await waiting[request_id]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        token = dict(scope["headers"]).get(b"authorization", b"")[len(b"Bearer ") :]
        user = _verified(jwt_key, token.decode()).user_id
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            status, body = await call("place", user, b"".join(chunks))
        else:
            status, body = await call("cancel", user, scope["path"].rsplit("/", 1)[1].encode())
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    uvloop.install()
    uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False)).run(sockets=[listener])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _funded_tokens(data_dir: str, setup_url: str) -> list[str]:
    from mercato.apibench import PASSWORD

    tokens = []
    with httpx.Client(base_url=f"{setup_url}/api/v1", timeout=30) as http:
        for user in range(USERS):
            login = {"email": f"trader{user}@bench.test", "password": PASSWORD}
            answer = http.post("/auth/login", json=login)
            answer.raise_for_status()
            token = answer.json()["access_token"]
            for asset, amount in (("USDT", "1000000"), ("BTC", "1000")):
                http.post("/dev/faucet", headers={"authorization": f"Bearer {token}"},
                          json={"asset": asset, "amount": amount}).raise_for_status()  # fmt: skip
            tokens.append(token)
    return tokens


def _create_users(data_dir: str) -> None:
    from mercato.apibench import PASSWORD
    from mercato.auth.users import create_user
    from mercato.store import create_engine, migrate

    config = _config(data_dir)

    async def create() -> None:
        await migrate(config.database_url)
        db = create_engine(config.database_url)
        try:
            for user in range(USERS):
                await create_user(db, f"trader{user}@bench.test", PASSWORD, verified=True)
        finally:
            await db.dispose()

    asyncio.run(create())


def main() -> None:
    from mercato.apibench import free_port, projection_lag, run_http_load
    from mercato.runtime import run_fast

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mercato-bench-split-") as tmp:
        data_dir = str(Path(tmp) / "data")
        Path(data_dir).mkdir()
        _create_users(data_dir)
        setup_port, port = free_port(), free_port()
        socket_path = str(Path(tmp) / "core.sock")
        core = spawn.Process(target=core_main, args=(data_dir, setup_port, socket_path))
        core.start()
        setup_url = f"http://127.0.0.1:{setup_port}"
        for _ in range(600):
            try:
                if httpx.get(f"{setup_url}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        tokens = _funded_tokens(data_dir, setup_url)
        gateways = [
            spawn.Process(target=gateway_main, args=(data_dir, port, socket_path))
            for _ in range(args.gateways)
        ]
        for gateway in gateways:
            gateway.start()
        time.sleep(3)  # gateways listening
        processes = [core, *gateways]
        before = [_cpu_seconds(p.pid) for p in processes if p.pid]
        figures = run_fast(
            run_http_load(f"http://127.0.0.1:{port}", tokens, args.seconds, args.connections)
        )
        used = [_cpu_seconds(p.pid) - b for p, b in zip(processes, before, strict=True) if p.pid]
        figures["http_projection_lag"] = projection_lag(setup_url)
        seconds = figures["http_seconds"]
        figures["gateways"] = args.gateways
        figures["core_cpu_percent"] = round(100 * used[0] / seconds)
        figures["gateway_cpu_percent"] = [round(100 * u / seconds) for u in used[1:]]
        for process in processes:
            process.terminate()
            process.join()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
