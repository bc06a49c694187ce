"""Probe a running server's defences against oversized and slow request heads.

    python bench/slow_headers_probe.py --port 8000
    python bench/slow_headers_probe.py --port 8000 --big-mib 64 --slowloris 200 --seconds 40

Against 127.0.0.1 only, bounded in count and time. Three probes, as issue 12 ran them:

1. one request whose header is ``--big-mib`` MiB: the answer's status line, how much of
   the header the server took before closing, and how long until it closed;
2. ``--slowloris`` connections, each sending a partial head and then one byte a second:
   how many the server closed, with what status, and when (the last one);
3. one silent partial head (a few bytes, then nothing): its status and time to close.

With the server's PID (``--pid``, or found from the listening port in /proc) it prints
the server's resident memory and its peak (VmRSS, VmHWM) before and after each probe.
One JSON line per probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

HEAD = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
CHUNK = 64 * 1024


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:``port`` (or any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                return int(pid)
        except OSError:
            continue
    return None


def memory_mib(pid: int | None, field: str) -> float | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak so far) of ``pid``, in MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


async def read_answer(reader: asyncio.StreamReader, bound: float) -> tuple[str, float | None]:
    """The first line the server sent ("" for none) and when it closed (None: not within
    ``bound`` seconds)."""
    started = time.monotonic()
    data = b""
    try:
        async with asyncio.timeout(bound):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data.split(b"\r\n", 1)[0].decode("latin-1"), None
    except ConnectionError:
        pass
    return data.split(b"\r\n", 1)[0].decode("latin-1"), round(time.monotonic() - started, 2)


async def big_header(port: int, mib: int, bound: float) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    total, sent = mib * 1024 * 1024, 0

    async def pump() -> None:
        nonlocal sent
        writer.write(HEAD + b"X-Big: ")
        chunk = b"a" * CHUNK
        try:
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += CHUNK
            writer.write(b"\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass

    sender = asyncio.create_task(pump())
    status, closed_after = await read_answer(reader, bound)
    sender.cancel()
    writer.close()
    return {"probe": "big_header", "header_mib": mib, "status": status,
            "closed_after_s": closed_after, "client_sent_mib": round(sent / 2**20, 1)}  # fmt: skip


async def slowloris(port: int, count: int, bound: float) -> dict[str, Any]:
    started = time.monotonic()

    async def one() -> tuple[str, float | None]:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as error:
            return f"connect failed: {error.strerror}", 0.0
        writer.write(HEAD)
        answer = asyncio.create_task(read_answer(reader, bound))
        while not answer.done() and time.monotonic() - started < bound:
            try:
                writer.write(b"X")  # one byte of a header name, a second apart
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([answer], timeout=1.0)
        status, closed = await answer
        writer.close()
        return status, None if closed is None else round(time.monotonic() - started, 2)

    results = await asyncio.gather(*(one() for _ in range(count)))
    closed = [at for _, at in results if at is not None]
    statuses: dict[str, int] = {}
    for status, _ in results:
        key = status or "(no answer)"
        statuses[key] = statuses.get(key, 0) + 1
    return {"probe": "slowloris", "connections": count, "closed": len(closed),
            "still_open_at_bound": count - len(closed), "bound_s": bound,
            "last_closed_s": max(closed) if closed else None, "statuses": statuses}  # fmt: skip


async def silent_partial(port: int, bound: float) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHo")
    status, closed_after = await read_answer(reader, bound)
    writer.close()
    return {"probe": "silent_partial_header", "status": status, "closed_after_s": closed_after}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pid", type=int, help="the server's PID (default: found from --port)")
    parser.add_argument("--big-mib", type=int, default=64, choices=range(1, 257), metavar="1..256")
    parser.add_argument("--slowloris", type=int, default=200, choices=range(0, 1001),
                        metavar="0..1000")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=40.0, help="bound of each probe (<=120)")
    args = parser.parse_args()
    bound = min(args.seconds, 120.0)
    pid = args.pid or listener_pid(args.port)
    probes = [lambda: big_header(args.port, args.big_mib, bound),
              lambda: slowloris(args.port, args.slowloris, bound),
              lambda: silent_partial(args.port, bound)]  # fmt: skip
    for probe in probes:
        before, peak_before = memory_mib(pid, "VmRSS"), memory_mib(pid, "VmHWM")
        result = await probe()
        print(json.dumps({**result, "server_rss_mib_before": before,
                          "server_rss_mib_after": memory_mib(pid, "VmRSS"),
                          "server_peak_rss_mib_before": peak_before,
                          "server_peak_rss_mib_after": memory_mib(pid, "VmHWM")}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
