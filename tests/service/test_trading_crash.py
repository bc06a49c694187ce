"""SIGKILL a trading server mid-load, restart it, and check that every acknowledged order
and trade is there, money is conserved to the atom, the projection holds each event
exactly once, and candles and ticker agree with the trades."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx

from service.conftest import Backend, Server
from service.test_trading import Trader, ann_and_bob

LOAD_SECONDS = 3.0
FUNDS = {"USDT": Decimal("1000000"), "BTC": Decimal("20")}


def trade_until(trader: Trader, side: str, stop: threading.Event, acked: list[dict]) -> None:
    """Alternate resting and crossing orders around 50,000 so trades keep happening."""
    index = 0
    while not stop.is_set():
        index += 1
        price = 50_000 + (index % 7 - 3) * (1 if side == "BUY" else -1)
        try:
            answer = trader.place(side=side, price=str(price), quantity="0.001",
                                  client_order_id=f"{side}-{index}")  # fmt: skip
        except httpx.TransportError:
            return  # the server is gone
        if answer.status_code == 201:
            acked.append(answer.json())


class TradingLoad:
    """Ann (buying) and Bob (selling), funded, trade from two threads until finished;
    ``acked`` keeps each one's acknowledged answers."""

    def __init__(self, ann: Trader, bob: Trader) -> None:
        for trader in (ann, bob):
            for asset, amount in FUNDS.items():
                trader.fund(asset, str(amount / 2))
        self.stop = threading.Event()
        self.acked: dict[str, list[dict]] = {"ann": [], "bob": []}
        self.threads = [
            threading.Thread(target=trade_until, args=(trader, side, self.stop, self.acked[name]))
            for name, trader, side in (("ann", ann, "BUY"), ("bob", bob, "SELL"))
        ]
        for thread in self.threads:
            thread.start()

    def finish(self) -> dict[str, list[dict]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        return self.acked


def test_sigkill_mid_load_loses_nothing_acknowledged(
    backend: Backend, servers: list[Server]
) -> None:
    ann, bob, server = ann_and_bob(backend, servers)
    load = TradingLoad(ann, bob)
    time.sleep(LOAD_SECONDS)
    server.process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
    server.process.wait(timeout=10)
    acked = load.finish()
    assert len(acked["ann"]) > 20 and len(acked["bob"]) > 20

    restarted = Server(backend.data, backend.env, "--dev")
    servers.append(restarted)
    restarted.wait_ready()
    health = httpx.get(f"{restarted.url}/health/ready").json()
    # Ready only once the projection caught up with the journal, and it says so.
    assert health["projected_seq"] == health["last_seq"] > 0 and health["projection_lag"] == 0
    ann, bob = Trader(restarted.url, "ann@example.com"), Trader(restarted.url, "bob@example.com")

    traded = Decimal(0)
    fees: dict[str, Decimal] = {"USDT": Decimal(0), "BTC": Decimal(0)}
    for name, trader in (("ann", ann), ("bob", bob)):
        history = {o["order_id"]: o for o in all_pages(trader, "/orders/history")}
        fills = all_pages(trader, "/trades")
        trade_ids = {f["trade_id"] for f in fills}
        assert len(trade_ids) == len(fills)  # the projection holds each fill once
        for answer in acked[name]:
            order = answer["order"]
            # Every acknowledged order survived, with at least the fills it was told of.
            assert order["order_id"] in history, order
            assert Decimal(history[order["order_id"]]["filled"]) >= Decimal(order["filled"])
            assert {f["trade_id"] for f in answer["fills"]} <= trade_ids
        for fill in fills:
            fees[fill["fee_asset"]] += Decimal(fill["fee"])
            if name == "ann":
                traded += Decimal(fill["quantity"])
        # The ledger explains the balances exactly: no entry lost or doubled.
        sums: dict[tuple[str, str], Decimal] = {}
        for entry in all_pages(trader, "/ledger"):
            key = (entry["asset"], entry["account"])
            sums[key] = sums.get(key, Decimal(0)) + Decimal(entry["delta"])
        for asset, (available, locked) in trader.balances().items():
            assert sums.get((asset, "available"), 0) == Decimal(available), asset
            assert sums.get((asset, "locked"), 0) == Decimal(locked), asset
    assert traded > 0

    # A client order id used before the crash still names its order, not a new one.
    first = acked["bob"][0]["order"]
    again = bob.place(side="SELL", price="50000", quantity="0.001",
                      client_order_id=first["client_order_id"])  # fmt: skip
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["order"]["order_id"] == first["order_id"]

    # Money is conserved: what the two hold plus the fees they paid is what was funded.
    held = {asset: Decimal(0) for asset in FUNDS}
    for trader in (ann, bob):
        for asset, (available, locked) in trader.balances().items():
            held[asset] += Decimal(available) + Decimal(locked)
    assert {asset: held[asset] + fees[asset] for asset in FUNDS} == FUNDS

    # Candles and the 24 h ticker were rebuilt from the projection and agree with the trades.
    public = httpx.Client(base_url=f"{restarted.url}/api/v1")
    candles = public.get("/markets/BTC-USDT/candles", params={"interval": "1m"}).json()
    assert sum(Decimal(c["volume"]) for c in candles) == traded
    ticker = public.get("/markets/BTC-USDT/ticker").json()
    assert Decimal(ticker["volume"]) == traded


def all_pages(trader: Trader, path: str) -> list[dict]:
    items: list[dict] = []
    before = None
    while True:
        params = {"limit": 1000, **({"before": before} if before else {})}
        answer = trader.http.get(path, params=params)
        if answer.status_code == 429:  # the load spent the IP's budget: wait, as told
            time.sleep(float(answer.headers["retry-after"]))
            continue
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        before = page["next_before"]
        if before is None:
            return items


def test_the_projector_process_killed_under_load_is_replaced_and_catches_up(
    backend: Backend, servers: list[Server]
) -> None:
    """SIGKILL only the server's projector child while orders flow: the server keeps
    taking orders, says on /health/ready why the projection stalled, starts a new child,
    and the tables end holding every order once."""
    ann, bob, server = ann_and_bob(backend, servers)
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    (child,) = map(int, children.read_text().split())
    load = TradingLoad(ann, bob)
    try:
        time.sleep(1.0)
        os.kill(child, signal.SIGKILL)
        health = wait_health(server, lambda h: h["projection_error"] is not None)
        assert "exited with status -9" in health["projection_error"]
        time.sleep(1.5)  # orders go on while the successor starts and catches up
    finally:
        acked = load.finish()
    health = wait_health(server, lambda h: not h["projection_error"] and not h["projection_lag"])
    assert health["projected_seq"] == health["last_seq"]
    assert children.read_text().split() not in ([], [str(child)])  # a new child runs
    for name, trader in (("ann", ann), ("bob", bob)):
        history = [o["order_id"] for o in all_pages(trader, "/orders/history")]
        assert len(history) == len(set(history))  # each order once
        assert {a["order"]["order_id"] for a in acked[name]} <= set(history)
        assert len(acked[name]) > 20


def wait_health(server: Server, condition: Callable[[dict], bool], seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        health: dict = httpx.get(f"{server.url}/health/ready", timeout=10).json()
        if condition(health) or time.monotonic() > deadline:
            assert condition(health), health
            return health
        time.sleep(0.05)
