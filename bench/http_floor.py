"""The HTTP floor of this machine: trivial endpoints under uvicorn, driven by the same
load generator as `mercato bench api`, so the order path's figure can be read against
what the framework alone allows here (and figures from different machines compared).

    python bench/http_floor.py --seconds 5 --connections 32
    python bench/http_floor.py --seconds 5 --connections 32 --guarded

``--guarded`` serves the apps as `mercato serve` does: Mercato's protocol with the head,
deadline and per-IP limits (mercato.api.server_protocol) and its X-Forwarded-For
middleware, instead of uvicorn's httptools protocol and proxy-headers middleware; the
difference is what those protections cost per request.

Each app answers ``POST /x`` with a constant 8-byte JSON body after reading the request
body: FastAPI (a decorated route), Starlette (a bare route), and plain ASGI. Prints one
JSON line of requests per second and the server's CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from mercato.apibench import RawHttp, free_port

BODY = b'{"ok":1}'


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/x")
    async def endpoint() -> dict[str, int]:
        return {"ok": 1}

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    return Starlette(routes=[Route("/x", endpoint, methods=["POST"])])


def asgi_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    return app


APPS = {"fastapi": fastapi_app, "starlette": starlette_app, "asgi": asgi_app}


def serve(name: str, port: int, guarded: bool) -> None:
    import uvicorn

    app = APPS[name]()
    options: dict[str, Any] = {}
    if guarded:
        from mercato.api.client_address import ClientAddress, TrustedProxies
        from mercato.api.server_protocol import protocols_for
        from mercato.config import HttpConfig

        limits = HttpConfig()
        app = ClientAddress(app, TrustedProxies(limits.trusted_proxies))
        http, ws = protocols_for(limits)
        options = {"http": http, "ws": ws, "proxy_headers": False}
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="off", **options)  # fmt: skip


async def drive(port: int, seconds: float, connections: int) -> tuple[float, int]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        client = RawHttp("127.0.0.1", port, "none")
        await client.open()
        while time.perf_counter() < deadline:
            status, _ = await client.request("POST", "/x", b'{"a":1}')
            assert status == 200, status
            done += 1
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return done / (time.perf_counter() - started), done


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, seconds: float, connections: int, guarded: bool) -> tuple[int, float]:
    """Requests per second, and the server's CPU microseconds per request: steadier than
    the rate on a shared machine, where other work takes the cores but not this count."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(name, port, guarded))
    server.start()
    try:
        for _ in range(100):  # until it listens
            try:
                asyncio.run(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1))
                break
            except OSError:
                time.sleep(0.1)
        assert server.pid is not None
        cpu_before = cpu_seconds(server.pid)
        rate, done = asyncio.run(drive(port, seconds, connections))
        cpu_us = (cpu_seconds(server.pid) - cpu_before) / done * 1e6
        return round(rate), round(cpu_us, 1)
    finally:
        server.terminate()
        server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--guarded", action="store_true", help="Mercato's protocol and limits")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for name in APPS:
        rate, cpu_us = measure(name, args.seconds, args.connections, args.guarded)
        figures |= {f"{name}_requests_per_sec": rate, f"{name}_server_cpu_us": cpu_us}
    print(json.dumps({"connections": args.connections, "guarded": args.guarded, **figures}))


if __name__ == "__main__":
    main()
