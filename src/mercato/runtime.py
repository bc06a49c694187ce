"""Process-level settings: the garbage collector of a process that hosts the engine, the
event loop a process runs on, and the listening sockets of the server."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """Tune the cyclic garbage collector for an engine process; call after recovery.

    Everything alive at that point (the recovered engine state) is moved to the
    permanent generation (``gc.freeze``), so collections never scan it again. The hot
    path allocates mostly objects the collector does not track (events are ``gc=False``
    structs) and containers that die young without forming cycles, so collecting the
    youngest generation every 700 allocations (the default) only costs time: measured
    at about a fifth of the engine's throughput (docs/benchmarks.md). Cycles are still
    collected, just less often.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def run_fast(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (with uvicorn[standard], not on Windows): for a
    process that shares the machine with the server (load generators, the projector's
    child), every cycle it saves is one the server gets."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def listen(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` resolves to, as asyncio (and so
    uvicorn) would open them; raises OSError (port in use, no such address). Listening
    at once, not just bound: Linux lets two sockets with SO_REUSEADDR bind one port as
    long as neither listens, so only ``listen`` proves the port is ours."""
    opened: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            opened.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 address gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in opened:
            sock.close()
        raise
    return opened
