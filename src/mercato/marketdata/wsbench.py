"""WebSocket fan-out benchmark: N subscribers of one busy market, messages per second
delivered and event-to-client latency.

``run_ws_bench(url, subscribers, seconds, market, drive)`` connects ``subscribers``
clients to ``url`` (``ws://host:port/ws``), subscribes each to ``depth.<market>`` and
``trades.<market>``, calls ``drive()`` (whatever makes the market busy: submitting a
flow, posting orders) once all are subscribed, and counts for ``seconds`` every channel
message the clients receive. Latency is the client's clock at receipt minus the
message's engine timestamp (``ts`` of a depth update, ``time`` of a trade: the
sequencer's batch stamp, taken before the journal write), so it includes the journal
commit, the flush coalescing and the socket; both clocks are this machine's.

Clients run in this process, without compression (as a latency-sensitive consumer
would), and answer the server's pings. See bench/ws_bench.py for the whole setup and
docs/benchmarks.md for figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

_decode = msgspec.json.Decoder().decode


@dataclass
class WsBenchResult:
    subscribers: int
    seconds: float
    messages: int
    frames: int
    closed_early: int
    errors: list[str] = field(repr=False, default_factory=list)
    latencies_ms: list[int] = field(repr=False, default_factory=list)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def latency_ms(self, quantile: float) -> int | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def summary(self) -> dict[str, object]:
        return {
            "subscribers": self.subscribers,
            "seconds": round(self.seconds, 2),
            "messages": self.messages,
            "messages_per_s": round(self.messages_per_second),
            "frames_per_s": round(self.frames / self.seconds) if self.seconds else 0,
            "p50_latency_ms": self.latency_ms(0.50),
            "p99_latency_ms": self.latency_ms(0.99),
            "closed_early": self.closed_early,
            "errors": self.errors,
        }


class _Counter:
    __slots__ = ("closed", "errors", "frames", "latencies", "measuring", "messages", "sample")

    def __init__(self, sample: int) -> None:
        self.messages = 0
        self.frames = 0
        self.closed = 0
        self.measuring = False
        self.latencies: list[int] = []
        self.errors: list[str] = []
        self.sample = sample


async def _subscriber(url: str, market: str, counter: _Counter, ready: asyncio.Event,
                      index: int) -> None:  # fmt: skip
    import websockets

    channels = [f"depth.{market}", f"trades.{market}"]
    try:
        async with websockets.connect(url, compression=None, max_queue=None,
                                      open_timeout=60) as ws:  # fmt: skip
            await ws.send(msgspec.json.encode({"op": "subscribe", "id": 1,
                                               "channels": channels}).decode())  # fmt: skip
            ready.set()
            sample = index % counter.sample == 0  # latency from some clients: cheaper
            async for frame in ws:
                decoded = _decode(frame)
                messages = decoded if isinstance(decoded, list) else [decoded]
                if not counter.measuring:
                    continue
                now = time.time_ns() // 1_000_000
                counter.frames += 1
                for message in messages:
                    if "channel" not in message:
                        if message.get("type") == "ping":
                            await ws.send('{"op":"pong"}')
                        continue
                    counter.messages += 1
                    if sample:
                        stamp = message.get("ts") or message.get("time")
                        if stamp:
                            counter.latencies.append(now - stamp)
    except Exception as error:
        counter.closed += 1
        counter.errors.append(repr(error))
        ready.set()


async def run_ws_bench(
    url: str,
    subscribers: int,
    seconds: float,
    market: str,
    drive: Callable[[], Awaitable[object] | object] | None = None,
    *,
    latency_sample: int = 10,
) -> WsBenchResult:
    """Connect, subscribe, ``drive()``, then measure for ``seconds`` (see module doc).
    Latency is recorded from one client in ``latency_sample``."""
    counter = _Counter(latency_sample)
    tasks: list[asyncio.Task[None]] = []
    readies: list[asyncio.Event] = []
    for index in range(subscribers):
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(_subscriber(url, market, counter, ready, index)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # do not hit the server's accept queue all at once
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
        await asyncio.sleep(0.5)  # acknowledgements and snapshots
        if drive is not None:
            started = drive()
            if asyncio.iscoroutine(started) or isinstance(started, asyncio.Future):
                await started
        await asyncio.sleep(0.5)  # warm-up
        counter.measuring = True
        begin = time.perf_counter()
        await asyncio.sleep(seconds)
        counter.measuring = False
        elapsed = time.perf_counter() - begin
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    return WsBenchResult(subscribers, elapsed, counter.messages, counter.frames,
                         counter.closed, counter.errors[:5], counter.latencies)  # fmt: skip
