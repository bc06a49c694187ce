"""`mercato bench api`: the whole service under HTTP order load, measured from outside.

A server (`mercato serve --dev`, rate limits off) runs as a subprocess on a temporary data
directory; this process creates and funds the users, then drives ``connections``
keep-alive HTTP/1.1 connections, each placing limit orders and cancelling its older ones,
for ``seconds``. Every order counted was acknowledged, i.e. journaled and fsynced. The load
generator is a minimal asyncio HTTP/1.1 client: a general-purpose client library would
spend more CPU than the server on this shared 2-core machine and measure itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from mercato.runtime import run_fast

PASSWORD = "bench-password-9"
MARKET = "BTC-USDT"
MID_PRICE = 50_000  # USDT; resting orders are placed around it, never crossing
OPEN_PER_CONNECTION = 20  # a connection cancels its oldest order beyond this many


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RawHttp:
    """One keep-alive HTTP/1.1 connection: request, then read exactly one response."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.content_type = b"application/json"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (
            (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: ").encode()
            + self.content_type
            + f"\r\nContent-Length: {len(body)}\r\n".encode()
        )
        self.writer.write(head + self.auth + b"\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


@dataclass
class Tally:
    placed: int = 0
    cancelled: int = 0
    already_filled: int = 0  # cancels answered 409 because a taker had filled the order
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, every request

    def error(self, status: int, body: bytes) -> None:
        try:
            code = str(msgspec.json.decode(body).get("code", status))
        except msgspec.DecodeError:
            code = str(status)
        self.errors[code] = self.errors.get(code, 0) + 1


def _orders(rng: random.Random, taker_every: int) -> Iterator[dict[str, str]]:
    """Limit orders that rest (buys below the mid price, sells above it) and, every
    ``taker_every``-th order if set, an IOC order that crosses the spread and trades."""
    count = 0
    while True:
        count += 1
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(1, 2000)
        quantity = rng.randint(2, 50) / 10_000  # 0.0002..0.005 BTC: over the 5 USDT minimum
        order = {"market": MARKET, "side": side, "quantity": f"{quantity:.4f}"}
        if taker_every and count % taker_every == 0:
            # Priced through the whole resting range: it takes the best orders opposite.
            order["price"] = str(MID_PRICE + 2000 if side == "BUY" else MID_PRICE - 2000)
            order["time_in_force"] = "IOC"
        else:
            order["price"] = str(MID_PRICE - offset if side == "BUY" else MID_PRICE + offset)
        yield order


class Native:
    """Order entry in Mercato's own dialect: JSON bodies, a session's bearer token."""

    name = "native"
    placed_status = 201

    def __init__(self, client: RawHttp) -> None:
        self.client = client

    async def place(self, order: dict[str, str]) -> tuple[int, bytes, int | None]:
        """(status, body, the order's id if it rests)."""
        status, body = await self.client.request(
            "POST", "/api/v1/orders", msgspec.json.encode(order)
        )
        if status != 201:
            return status, body, None
        placed = msgspec.json.decode(body)["order"]
        resting = placed["status"] in ("NEW", "PARTIALLY_FILLED")
        return status, body, placed["order_id"] if resting else None

    async def cancel(self, order_id: int) -> tuple[int, bytes]:
        return await self.client.request("DELETE", f"/api/v1/orders/{order_id}")


class Binance:
    """Order entry in Binance's dialect, as a Binance bot sends it: form bodies signed with
    HMAC-SHA256 under an API key (``POST`` / ``DELETE /api/v3/order``). The signing costs
    this process a little CPU per request; the native dialect's client pays nothing."""

    name = "binance"
    placed_status = 200

    def __init__(self, client: RawHttp, key: str, secret: str) -> None:
        self.client = client
        self.key = f"X-MBX-APIKEY: {key}\r\n".encode()
        self.secret = secret.encode()
        client.auth = self.key
        client.content_type = b"application/x-www-form-urlencoded"

    def _signed(self, params: str) -> str:
        params += f"&timestamp={time.time_ns() // 1_000_000}"
        signature = hmac.new(self.secret, params.encode(), hashlib.sha256).hexdigest()
        return f"{params}&signature={signature}"

    async def place(self, order: dict[str, str]) -> tuple[int, bytes, int | None]:
        tif = order.get("time_in_force", "GTC")
        params = (
            f"symbol={order['market'].replace('-', '')}&side={order['side']}&type=LIMIT"
            f"&timeInForce={tif}&quantity={order['quantity']}&price={order['price']}"
            "&newOrderRespType=FULL"
        )
        status, body = await self.client.request(
            "POST", "/api/v3/order", self._signed(params).encode()
        )
        if status != 200:
            return status, body, None
        placed = msgspec.json.decode(body)
        resting = placed["status"] in ("NEW", "PARTIALLY_FILLED")
        return status, body, placed["orderId"] if resting else None

    async def cancel(self, order_id: int) -> tuple[int, bytes]:
        query = self._signed(f"symbol={MARKET.replace('-', '')}&orderId={order_id}")
        return await self.client.request("DELETE", f"/api/v3/order?{query}")


Dialect = Native | Binance


async def _drive(
    dialect: Dialect, deadline: float, tally: Tally, seed: int, taker_every: int = 0
) -> None:
    orders = _orders(random.Random(seed), taker_every)
    open_ids: list[int] = []
    clock = time.perf_counter
    client = dialect.client
    await client.open()
    try:
        while clock() < deadline:
            started = clock()
            if len(open_ids) >= OPEN_PER_CONNECTION:
                status, body = await dialect.cancel(open_ids.pop(0))
                ok = status == 200
                tally.cancelled += ok
                if status in (400, 409):  # a taker filled it first: answered, nothing to do
                    tally.already_filled += 1
                    ok = True
            else:
                status, body, resting = await dialect.place(next(orders))
                ok = status == dialect.placed_status
                if ok:
                    tally.placed += 1
                    if resting is not None:
                        open_ids.append(resting)
            tally.latencies.append(clock() - started)
            if not ok:
                tally.error(status, body)
    finally:
        await client.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_http_load(
    url: str, tokens: list[str], seconds: float, connections: int, taker_every: int = 0,
    keys: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The order load in the native dialect, or in Binance's when ``keys`` (API key,
    secret) are given: the same orders, cancels and connections either way."""
    host, port = url.removeprefix("http://").split(":")
    tally = Tally()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    dialects: list[Dialect] = []
    for i in range(connections):
        client = RawHttp(host, int(port), tokens[i % len(tokens)])
        dialects.append(Binance(client, *keys[i % len(keys)]) if keys else Native(client))
    await asyncio.gather(
        *(_drive(d, deadline, tally, i, taker_every) for i, d in enumerate(dialects))
    )
    elapsed = time.perf_counter() - started
    return {
        "http_connections": connections,
        "http_seconds": round(elapsed, 2),
        "http_orders_placed": tally.placed,
        "http_orders_cancelled": tally.cancelled,
        "http_cancels_already_filled": tally.already_filled,
        "http_orders_per_sec": round(tally.placed / elapsed),
        "http_requests_per_sec": round(
            (tally.placed + tally.cancelled + tally.already_filled) / elapsed
        ),
        "http_p50_ms": round(percentile(tally.latencies, 0.50) * 1000, 2),
        "http_p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 2),
        "http_errors": tally.errors,
    }


class BenchServer:
    """`mercato serve --dev` on a temporary data directory, rate limits off."""

    def __init__(self, data_dir: Path, users: int) -> None:
        self.data_dir = data_dir
        self.users = [f"trader{i}@bench.test" for i in range(users)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        dropped = ("DATABASE_URL", "REDIS_URL")
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MERCATO_", "SMTP_")) and k not in dropped
        }

    def start(self) -> None:
        from mercato.auth.users import create_user
        from mercato.config import load_config
        from mercato.store import create_engine, migrate

        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "bench.toml"
        config_file.write_text("[rate_limits]\nenabled = false\n")
        config = load_config(config_file, env=self.environment(), data_dir=str(self.data_dir))

        async def users() -> None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            await migrate(config.database_url)
            db = create_engine(config.database_url)
            try:
                for email in self.users:
                    await create_user(db, email, PASSWORD, verified=True)
            finally:
                await db.dispose()

        asyncio.run(users())
        log = (self.data_dir / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mercato.cli", "serve", "--dev", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--config", str(config_file)],
            env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.data_dir / 'server.log'}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("server not ready after 60 s")

    def funded_tokens(self) -> list[str]:
        tokens = []
        with httpx.Client(base_url=f"{self.url}/api/v1", timeout=30) as http:
            for email in self.users:
                login = http.post("/auth/login", json={"email": email, "password": PASSWORD})
                login.raise_for_status()
                token = login.json()["access_token"]
                auth = {"authorization": f"Bearer {token}"}
                for asset, amount in (("USDT", "1000000"), ("BTC", "1000")):
                    funds = {"asset": asset, "amount": amount}
                    http.post("/dev/faucet", headers=auth, json=funds).raise_for_status()
                tokens.append(token)
        return tokens

    def api_keys(self, tokens: list[str]) -> list[tuple[str, str]]:
        """An API key (id, secret) with the trade permission for each user's token."""
        keys = []
        with httpx.Client(base_url=f"{self.url}/api/v1", timeout=30) as http:
            for token in tokens:
                created = http.post(
                    "/account/api-keys", headers={"authorization": f"Bearer {token}"},
                    json={"label": "bench", "permissions": ["read", "trade"]},
                )  # fmt: skip
                created.raise_for_status()
                keys.append((created.json()["key_id"], created.json()["secret"]))
        return keys

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


# The WebSocket phase's market: every third order a taker, so it trades as a busy
# market does (the HTTP phase's flow only rests and cancels).
WS_PHASE_TAKER_EVERY = 3


def _drive_in_process(url: str, tokens: list[str], seconds: float, connections: int,
                     out: Any) -> None:  # fmt: skip
    load = run_http_load(url, tokens, seconds, connections, WS_PHASE_TAKER_EVERY)
    out.put(run_fast(load))


async def run_ws_phase(
    url: str, tokens: list[str], seconds: float, subscribers: int, connections: int
) -> dict[str, Any]:
    """``subscribers`` WebSocket clients on the market while ``connections`` HTTP
    connections, from a process of their own, keep it busy with orders and trades."""
    from mercato.marketdata.wsbench import run_ws_bench

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    driver = context.Process(
        target=_drive_in_process, args=(url, tokens, seconds + 2, connections, results)
    )
    ws_url = url.replace("http://", "ws://") + "/ws"
    try:
        result = await run_ws_bench(ws_url, subscribers, seconds, MARKET, driver.start)
        driven = await asyncio.to_thread(results.get, True, seconds + 60)
    finally:
        driver.join(timeout=30)
    summary = result.summary()
    return {
        "ws_subscribers": subscribers,
        "ws_messages_per_sec": summary["messages_per_s"],
        "ws_frames_per_sec": summary["frames_per_s"],
        "ws_p50_ms": summary["p50_latency_ms"],
        "ws_p99_ms": summary["p99_latency_ms"],
        "ws_closed_early": summary["closed_early"],
        "ws_driving_orders_per_sec": driven.get("http_orders_per_sec", 0),
        "ws_driving_errors": driven.get("http_errors", {}),
    }


def projection_lag(url: str) -> int:
    """Commands the engine applied that the SQL projection has not written yet."""
    return int(httpx.get(f"{url}/health/ready", timeout=10).json()["projection_lag"])


def dialects_side_by_side(
    url: str, tokens: list[str], keys: list[tuple[str, str]], seconds: float, connections: int,
    rounds: int = 2,
) -> dict[str, Any]:  # fmt: skip
    """Native and Binance order entry alternated on one server, ``rounds`` times each:
    the figures of each dialect's best round and the ratio of their placements/s."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name, dialect_keys in (("native", None), ("binance", keys)):
            load = run_http_load(url, tokens, seconds, connections, keys=dialect_keys)
            figures = run_fast(load)
            if (
                name not in best
                or figures["http_orders_per_sec"] > best[name]["http_orders_per_sec"]
            ):
                best[name] = figures
    native, binance = best["native"], best["binance"]
    side_by_side = dict(native)
    side_by_side.update({f"binance_{k}": v for k, v in binance.items()})
    side_by_side["binance_to_native_ratio"] = round(
        binance["http_orders_per_sec"] / max(1, native["http_orders_per_sec"]), 3
    )
    return side_by_side


def run_api_bench(seconds: float, connections: int, users: int, subscribers: int,
                  dialect: str = "native") -> dict[str, Any]:  # fmt: skip
    """``dialect``: ``native`` (POST /api/v1/orders), ``binance`` (POST /api/v3/order) or
    ``both`` (alternating rounds on one server, side by side)."""
    with tempfile.TemporaryDirectory(prefix="mercato-bench-api-") as tmp:
        server = BenchServer(Path(tmp) / "data", users)
        try:
            server.start()
            tokens = server.funded_tokens()
            if dialect == "both":
                keys = server.api_keys(tokens)
                figures = dialects_side_by_side(server.url, tokens, keys, seconds, connections)
            else:
                signing = server.api_keys(tokens) if dialect == "binance" else None
                load = run_http_load(server.url, tokens, seconds, connections, keys=signing)
                figures = run_fast(load)
            # A projection that fell behind would flatter the figures: say where it stands.
            figures["http_projection_lag"] = projection_lag(server.url)
            if subscribers:
                ws = run_ws_phase(
                    server.url, tokens, seconds, subscribers, max(1, connections // 4)
                )
                figures.update(run_fast(ws))
            return figures
        finally:
            server.stop()
