"""Binance's POST/DELETE /api/v3/order against the native POST/DELETE /api/v1/orders on
one real server (`mercato serve --dev`, rate limits off): the same flow (resting limit
orders, each connection cancelling its oldest beyond 20), phases alternated to even out
the shared machine's noise. Prints orders/s of each phase and the ratio.

    .venv-dev/bin/python bench/binance_orders.py [seconds per phase] [connections] [rounds]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from mercato.apibench import (
    MID_PRICE,
    OPEN_PER_CONNECTION,
    BenchServer,
    RawHttp,
    Tally,
    run_http_load,
)
from mercato.runtime import run_fast


class SignedHttp(RawHttp):
    """A keep-alive connection that signs Binance requests (form bodies)."""

    def __init__(self, host: str, port: int, key: str, secret: str) -> None:
        super().__init__(host, port, "")
        self.auth = f"X-MBX-APIKEY: {key}\r\n".encode()
        self.secret = secret.encode()

    async def signed(self, method: str, params: dict[str, str]) -> tuple[int, bytes]:
        params["timestamp"] = str(int(time.time() * 1000))
        text = urlencode(params)
        text += "&signature=" + hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()
        assert self.reader is not None and self.writer is not None
        body = text.encode()
        head = (
            f"{method} /api/v3/order HTTP/1.1\r\nHost: {self.host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + self.auth + b"\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(header[9:12]), await self.reader.readexactly(length)


async def drive_binance(client: SignedHttp, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    open_ids: list[int] = []
    await client.open()
    try:
        while time.perf_counter() < deadline:
            if len(open_ids) >= OPEN_PER_CONNECTION:
                status, body = await client.signed(
                    "DELETE", {"symbol": "BTCUSDT", "orderId": str(open_ids.pop(0))}
                )
                tally.cancelled += status == 200
            else:
                side = rng.choice(("BUY", "SELL"))
                offset = rng.randint(1, 2000)
                price = MID_PRICE - offset if side == "BUY" else MID_PRICE + offset
                status, body = await client.signed("POST", {
                    "symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
                    "quantity": f"{rng.randint(2, 50) / 10_000:.4f}", "price": str(price),
                    "newOrderRespType": "RESULT"})  # fmt: skip
                if status == 200:
                    tally.placed += 1
                    open_ids.append(json.loads(body)["orderId"])
            if status != 200:
                tally.error(status, body)
    finally:
        await client.close()


async def binance_load(url: str, keys: list[tuple[str, str]], seconds: float,
                       connections: int) -> dict[str, object]:  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    tally = Tally()
    started = time.perf_counter()
    clients = [SignedHttp(host, int(port), *keys[i % len(keys)]) for i in range(connections)]
    await asyncio.gather(*(drive_binance(c, started + seconds, tally, i)
                           for i, c in enumerate(clients)))  # fmt: skip
    elapsed = time.perf_counter() - started
    return {"orders_per_sec": round(tally.placed / elapsed), "errors": tally.errors}


def api_keys(url: str, tokens: list[str]) -> list[tuple[str, str]]:
    keys = []
    for token in tokens:
        created = httpx.post(f"{url}/api/v1/account/api-keys", timeout=30,
                             headers={"authorization": f"Bearer {token}"},
                             json={"label": "bench", "permissions": ["read", "trade"]})  # fmt: skip
        created.raise_for_status()
        keys.append((created.json()["key_id"], created.json()["secret"]))
    return keys


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with tempfile.TemporaryDirectory(prefix="mercato-bench-binance-") as tmp:
        server = BenchServer(Path(tmp) / "data", 4)
        try:
            server.start()
            tokens = server.funded_tokens()
            keys = api_keys(server.url, tokens)
            native, binance = [], []
            for _ in range(rounds):
                load = run_fast(run_http_load(server.url, tokens, seconds, connections))
                native.append(load["http_orders_per_sec"])
                figures = run_fast(binance_load(server.url, keys, seconds, connections))
                binance.append(figures["orders_per_sec"])
                print(f"native {native[-1]}/s errors {load['http_errors']}; "
                      f"binance {binance[-1]}/s errors {figures['errors']}")  # fmt: skip
            ratio = sum(binance) / sum(native)
            print(f"native {native} binance {binance}: binance/native = {ratio:.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
