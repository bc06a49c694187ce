"""The HTTP floor of this machine: trivial endpoints under uvicorn, driven by the same
load generator as `mercato bench api`, so the order path's figure can be read against
what the framework alone allows here (and figures from different machines compared).

    python bench/http_floor.py --seconds 5 --connections 32

Each app answers ``POST /x`` with a constant 8-byte JSON body after reading the request
body: FastAPI (a decorated route), Starlette (a bare route), and plain ASGI. Prints one
JSON line of requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
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


def serve(name: str, port: int) -> None:
    import uvicorn

    uvicorn.run(APPS[name](), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="off")  # fmt: skip


async def drive(port: int, seconds: float, connections: int) -> float:
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
    return done / (time.perf_counter() - started)


def measure(name: str, seconds: float, connections: int) -> int:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(name, port))
    server.start()
    try:
        for _ in range(100):  # until it listens
            try:
                asyncio.run(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1))
                break
            except OSError:
                time.sleep(0.1)
        return round(asyncio.run(drive(port, seconds, connections)))
    finally:
        server.terminate()
        server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    figures = {f"{name}_requests_per_sec": measure(name, args.seconds, args.connections)
               for name in APPS}  # fmt: skip
    print(json.dumps({"connections": args.connections, **figures}))


if __name__ == "__main__":
    main()
