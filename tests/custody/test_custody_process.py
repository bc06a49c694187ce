"""`mercato custody run` as its own process beside `mercato serve` (run_in_serve = false):
the workers submit funding commands through serve's signed internal port, on a real
Anvil; killing the custody process at any moment and starting it again credits a deposit
once and sends a withdrawal once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from sqlalchemy import text

from custody.anvil import DEV_ADDRESSES, Anvil, running_anvil
from mercato.core.commands import CreditDeposit, PlaceOrder
from mercato.port.remote import (
    COMMANDS_PATH,
    ENGINE_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    internal_key,
    signature,
)
from mercato.store import create_engine, sqlite_url
from service.conftest import env, free_port  # noqa: F401  (fixture)
from service.test_sessions import PASSWORD, bearer, create_user

ETH = 10**18
WITHDRAWAL_ATTEMPTS = (
    "SELECT COUNT(*) FROM custody_attempts a JOIN custody_outgoing o ON o.id = a.outgoing_id"
    " WHERE o.kind = 'WITHDRAWAL'"
)
CONFIG = """
markets = []

[server]
host = "127.0.0.1"

[[assets]]
symbol = "ETH"
decimals = 8

[custody]
run_in_serve = false
address_cooloff_seconds = 0
engine_url = "{engine_url}"

[[custody.chains]]
name = "anvil"
kind = "evm"
rpc_url = "{rpc_url}"
confirmations = 2
start_height = 0
poll_seconds = 0.2
stuck_seconds = 30

[[custody.assets]]
symbol = "ETH"
chain = "anvil"
chain_decimals = 18
min_withdrawal = "0.01"
withdrawal_fee = "0.001"
"""


class CustodyProcess:
    def __init__(self, config: Path, data: Path, environment: dict[str, str]) -> None:
        self.log = data.parent / f"custody-{time.monotonic_ns()}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mercato.cli", "custody", "run", "--config", str(config),
                 "--data-dir", str(data)],
                env=environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def chain() -> Iterator[Anvil]:
    with running_anvil() as node:
        yield node


def rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        db = create_engine(sqlite_url(data / "mercato.db"))
        try:
            async with db.connect() as connection:
                return [tuple(r) for r in await connection.execute(text(sql))]
        finally:
            await db.dispose()

    return asyncio.run(run())


def wait_until(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def signed_post(url: str, key: bytes, path: str, body: bytes) -> httpx.Response:
    stamp = str(int(time.time() * 1000))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(key, stamp, path, body),
               "content-type": "application/json"}  # fmt: skip
    return httpx.post(url + path, content=body, headers=headers)


def test_custody_in_its_own_process_credits_once_and_sends_once(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811  (the fixture)
    chain: Anvil,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "mercato.toml"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config.write_text(CONFIG.format(engine_url=url, rpc_url=chain.url))
    master = os.urandom(32)
    env = {**env, "MERCATO_MASTER_KEY": master.hex()}
    init = subprocess.run(
        [sys.executable, "-m", "mercato.cli", "custody", "init", "--config", str(config),
         "--data-dir", str(data)], env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    create_user(data, "ann@example.com")
    serve = subprocess.Popen(
        [sys.executable, "-m", "mercato.cli", "serve", "--config", str(config), "--port",
         str(port), "--data-dir", str(data)],
        env=env, stdout=(tmp_path / "serve.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    custody: CustodyProcess | None = None
    try:
        wait_until("serve ready", lambda: _ready(url))
        key = internal_key(master)

        # The internal port: signed by the master key's holder, funding commands only.
        deposit = msgspec.json.encode([CreditDeposit(1, "ETH", 5, "forged")])
        assert signed_post(url, os.urandom(32), COMMANDS_PATH, deposit).status_code == 401
        order = msgspec.json.encode([PlaceOrder(1, "ETH-USDT", "BUY", "MARKET", quantity=1)])
        refused = signed_post(url, key, COMMANDS_PATH, order)
        assert (refused.status_code, refused.json()["code"]) == (403, "COMMAND_NOT_ALLOWED")
        assert httpx.get(url + ENGINE_PATH).status_code == 401

        http = httpx.Client(base_url=f"{url}/api/v1", timeout=30)
        login = http.post("/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
        http.headers.update(bearer(login.json()["access_token"]))
        address = http.get("/deposit-address", params={"asset": "ETH"}).json()["address"]

        custody = CustodyProcess(config, data, env)
        chain.send_eth(DEV_ADDRESSES[1], address, 2 * ETH)
        hot = rows(data, "SELECT address FROM custody_addresses WHERE role = 'hot'")
        if not hot:  # the hot wallet's row is made by the first pass that needs it
            wait_until("hot address", lambda: bool(rows(
                data, "SELECT address FROM custody_addresses WHERE role = 'hot'")))  # fmt: skip
        hot_address = str(
            rows(data, "SELECT address FROM custody_addresses WHERE role='hot'")[0][0]
        )
        chain.send_eth(DEV_ADDRESSES[2], hot_address, 1 * ETH)  # gas money (treasury)
        # Kill the custody process while the deposit is pending; start it again.
        custody.kill()
        chain.mine(3)
        custody = CustodyProcess(config, data, env)
        wait_until("credited", lambda: _balance(http, "ETH") == "2")
        custody.kill()
        custody = CustodyProcess(config, data, env)
        chain.mine(3)
        time.sleep(1.5)  # passes of the restarted process over the same blocks
        assert rows(data, "SELECT COUNT(*) FROM deposit_credits") == [(1,)]
        assert _balance(http, "ETH") == "2"

        payee = DEV_ADDRESSES[5]
        before = chain.web3.eth.get_balance(payee)  # type: ignore[arg-type]
        answer = http.post("/withdrawals", json={"asset": "ETH", "amount": "0.5",
                                                 "address": payee})  # fmt: skip
        assert answer.status_code == 201, answer.text
        wait_until("signed", lambda: rows(data, WITHDRAWAL_ATTEMPTS) == [(1,)])
        custody.kill()  # at some point after signing: the restart must not sign again
        custody = CustodyProcess(config, data, env)
        for _ in range(60):
            chain.mine(1)
            if _balance(http, "ETH") == "1.499":
                break
            time.sleep(0.3)
        assert _balance(http, "ETH") == "1.499"  # 2 - 0.5 - 0.001, settled once
        assert chain.web3.eth.get_balance(payee) - before == ETH // 2  # type: ignore[arg-type]
        assert rows(data, WITHDRAWAL_ATTEMPTS) == [(1,)]
        assert custody.stop() == 0
        custody = None
        reconciled = subprocess.run(
            [sys.executable, "-m", "mercato.cli", "custody", "reconcile", "--json", "--config",
             str(config), "--data-dir", str(data)], env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert json.loads(reconciled.stdout)["balanced"] is True
    finally:
        if custody is not None:
            custody.kill()
        serve.kill()
        serve.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _balance(http: httpx.Client, asset: str) -> str:
    rows = http.get("/balances").json()
    return next((r["total"] for r in rows if r["asset"] == asset), "0")
