# ruff: noqa: F811  (the service fixtures imported below are shadowed by parameter names)
"""Crash safety of custody on a real Anvil: a real `mercato serve` (the custody workers
run inside it) is SIGKILLed at exact points of the sender and the watcher
(``MERCATO_CUSTODY_PAUSE_AT``, mercato/custody/faults.py), restarted without the pause,
and every transfer is found sent exactly once, every deposit credited exactly once, and
`mercato custody reconcile` balanced (docs/custody.md, "Crash safety")."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from custody.anvil import DEV_ADDRESSES, Anvil, running_anvil
from service.conftest import Backend, Server, backend, env, servers  # noqa: F401  (fixtures)
from service.test_sessions import PASSWORD, bearer, create_user

EMAIL = "ann@example.com"
WAIT_SECONDS = 90
ETH = 10**18
USDT = 10**6

CONFIG = """
[custody]
run_in_serve = true
address_cooloff_seconds = 0

[[custody.chains]]
name = "ethereum"
kind = "evm"
rpc_url = "{url}"
confirmations = 2
poll_seconds = 0.2
stuck_seconds = 3600  # no fee bump: a replacement would be a second attempt by design

[[custody.assets]]
symbol = "ETH"
chain = "ethereum"
chain_decimals = 18
min_deposit = "0.01"
withdrawal_fee = "0.001"
min_withdrawal = "0.01"
sweep_threshold = "1000000"  # no sweeps: the hot wallet's nonce moves for withdrawals only

[[custody.assets]]
symbol = "USDT"
chain = "ethereum"
contract = "{token}"
chain_decimals = 6
min_deposit = "1"
withdrawal_fee = "1"
min_withdrawal = "10"
sweep_threshold = "100000000"
"""


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


class Exchange:
    """One store, one Anvil, and the `mercato serve` processes started on them in turn."""

    def __init__(
        self, backend: Backend, anvil: Anvil, tmp_path: Path, servers: list[Server]
    ) -> None:
        self.backend, self.anvil, self.servers = backend, anvil, servers  # killed at the end
        self.token = anvil.deploy_token("USDT", 6)
        self.config = tmp_path / "custody.toml"
        self.config.write_text(CONFIG.format(url=anvil.url, token=self.token))
        self.marker = tmp_path / "paused"
        self.server: Server | None = None
        self.http: httpx.Client | None = None
        create_user(backend.data, EMAIL, backend.url if backend.name == "postgres" else None)
        init = cli(backend.env, "custody", "init", *self.where())
        assert init.returncode == 0, init.stderr
        self.hot = init.stdout.strip().splitlines()[-1]

    def where(self) -> tuple[str, ...]:
        return ("--config", str(self.config), "--data-dir", str(self.backend.data))

    # -- the server -----------------------------------------------------------------

    def start(self, pause_at: str | None = None) -> None:
        env = dict(self.backend.env)
        if pause_at is not None:
            self.marker.unlink(missing_ok=True)
            env["MERCATO_CUSTODY_PAUSE_AT"] = pause_at
            env["MERCATO_CUSTODY_PAUSE_FILE"] = str(self.marker)
        self.server = Server(self.backend.data, env, "--config", str(self.config))
        self.servers.append(self.server)
        self.server.wait_ready()
        self.http = httpx.Client(base_url=f"{self.server.url}/api/v1", timeout=30)
        login = self.http.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.http.headers.update(bearer(login.json()["access_token"]))

    def kill(self) -> None:
        assert self.server is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=10)

    def stop(self) -> None:
        assert self.server is not None and self.server.stop() == 0, self.server.output()

    def kill_at_marker(self, point: str) -> None:
        """Wait (mining a block now and then) until the workers paused at ``point``; kill."""
        self.wait_for(self.marker.exists, f"the pause at {point}")
        assert self.marker.read_text() == point
        self.kill()

    def output(self) -> str:
        return "" if self.server is None else self.server.log_path.read_text(errors="replace")

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        """Mine a block every pass (confirmations need depth) until ``done``."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {WAIT_SECONDS} s:\n{self.output()}")
            self.anvil.mine()
            time.sleep(0.3)

    # -- reads ----------------------------------------------------------------------

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        return self.backend.rows(sql, **params)

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        assert self.http is not None
        for row in self.http.get("/balances").json():
            if row["asset"] == asset:
                return Decimal(row["available"]), Decimal(row["locked"])
        return Decimal(0), Decimal(0)

    def withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        assert self.http is not None
        answer = self.http.get(f"/withdrawals/{withdrawal_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def hot_nonce(self) -> int:
        return int(self.anvil.web3.eth.get_transaction_count(self.hot, "latest"))

    def attempts(self, withdrawal_id: str) -> list[str]:
        return [
            str(txid)
            for (txid,) in self.rows(
                "SELECT a.txid FROM custody_attempts a JOIN custody_withdrawals w"
                " ON w.outgoing_id = a.outgoing_id WHERE w.withdrawal_id = :w ORDER BY a.id",
                w=withdrawal_id,
            )
        ]

    # -- set-up ---------------------------------------------------------------------

    def watching(self) -> None:
        """Wait until the watcher stored its first block: what is sent later is seen."""
        self.wait_for(
            lambda: self.rows("SELECT count(*) FROM custody_blocks")[0][0] > 0, "watcher cursor"
        )

    def fund_hot_wallet(self) -> None:
        """Operator funds (TREASURY deposits): ETH for withdrawals and gas, and USDT."""
        self.anvil.send_eth(DEV_ADDRESSES[1], self.hot, 10 * ETH)
        self.anvil.mint(self.token, self.hot, 1000 * USDT)

    def deposit_address(self) -> str:
        assert self.http is not None
        answer = self.http.get("/deposit-address", params={"asset": "ETH"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["address"])

    def deposit(self, asset: str, amount: int) -> None:
        """A real deposit from a dev account to the user's deposit address."""
        address = self.deposit_address()
        if asset == "ETH":
            self.anvil.send_eth(DEV_ADDRESSES[2], address, amount)
        else:
            self.anvil.mint(self.token, address, amount)

    def credited(self, asset: str, amount: Decimal) -> None:
        self.wait_for(lambda: self.balance(asset)[0] >= amount, f"credit of {amount} {asset}")
        assert self.balance(asset) == (amount, 0)

    def request_withdrawal(self, asset: str, amount: str, address: str) -> str:
        assert self.http is not None
        added = self.http.post(
            "/withdrawal-addresses", json={"asset": asset, "address": address, "label": "mine"}
        )
        assert added.status_code in (200, 201), added.text
        answer = self.http.post(
            "/withdrawals", json={"asset": asset, "amount": amount, "address": address}
        )
        assert answer.status_code in (200, 201), answer.text
        return str(answer.json()["withdrawal_id"])

    def completed(self, withdrawal_id: str) -> None:
        self.wait_for(
            lambda: (
                self.withdrawal(withdrawal_id)["status"] == "COMPLETED"
                and self.rows(
                    "SELECT hold_state FROM custody_withdrawals WHERE withdrawal_id = :w",
                    w=withdrawal_id,
                )[0][0]
                == "SETTLED"
            ),
            f"withdrawal {withdrawal_id} completed and settled",
        )

    def reconciled(self) -> dict[str, Any]:
        """`mercato custody reconcile --json` after a clean stop: exit 0, balanced."""
        self.stop()
        done = cli(self.backend.env, "custody", "reconcile", "--json", *self.where())
        assert done.returncode == 0, done.stdout + done.stderr
        report = dict(json.loads(done.stdout))
        assert report["balanced"] is True
        return report


@pytest.fixture
def exchange(backend: Backend, servers: list[Server], tmp_path: Path) -> Iterator[Exchange]:
    with running_anvil() as anvil:
        yield Exchange(backend, anvil, tmp_path, servers)


def funded(exchange: Exchange, pause_at: str | None = None) -> None:
    """Serve (paused at ``pause_at``), hot wallet funded, 1 ETH and 500 USDT deposited
    and credited to the user."""
    exchange.start(pause_at)
    exchange.watching()
    exchange.fund_hot_wallet()
    exchange.deposit("ETH", ETH)
    exchange.deposit("USDT", 500 * USDT)
    exchange.credited("ETH", Decimal(1))
    exchange.credited("USDT", Decimal(500))


def fresh_address() -> str:
    return str(Account.create().address)


def test_kill_between_sign_and_broadcast_sends_the_stored_bytes_once(
    exchange: Exchange,
) -> None:
    anvil = exchange.anvil
    funded(exchange, pause_at="after_sign")
    nonce = exchange.hot_nonce()
    recipient = fresh_address()
    wid = exchange.request_withdrawal("ETH", "0.1", recipient)
    exchange.kill_at_marker("after_sign")

    # Signed and stored, never sent: no transaction known to the node, nothing moved.
    [(status, outgoing_status)] = exchange.rows(
        "SELECT w.status, o.status FROM custody_withdrawals w"
        " JOIN custody_outgoing o ON o.id = w.outgoing_id WHERE w.withdrawal_id = :w",
        w=wid,
    )
    assert (status, outgoing_status) == ("SIGNED", "SIGNED")
    [stored] = exchange.attempts(wid)
    assert anvil.rpc("eth_getTransactionByHash", stored) is None
    assert anvil.web3.eth.get_balance(recipient) == 0
    assert exchange.hot_nonce() == nonce
    assert anvil.web3.eth.get_transaction_count(exchange.hot, "pending") == nonce

    exchange.start()  # no pause
    exchange.completed(wid)
    assert anvil.web3.eth.get_balance(recipient) == ETH // 10  # exactly once
    assert exchange.hot_nonce() == nonce + 1
    # The stored bytes were re-broadcast, not re-signed: one attempt, the one mined.
    assert exchange.attempts(wid) == [stored]
    receipt = anvil.web3.eth.get_transaction_receipt(stored)
    assert receipt["status"] == 1
    [(mined_txid,)] = exchange.rows(
        "SELECT o.txid FROM custody_outgoing o JOIN custody_withdrawals w"
        " ON w.outgoing_id = o.id WHERE w.withdrawal_id = :w",
        w=wid,
    )
    assert mined_txid == stored
    assert exchange.balance("ETH") == (Decimal("0.899"), 0)  # 1 - 0.1 - 0.001, once
    exchange.reconciled()


def test_kill_after_broadcast_completes_and_settles_once(exchange: Exchange) -> None:
    anvil = exchange.anvil
    funded(exchange, pause_at="after_broadcast")
    nonce = exchange.hot_nonce()
    recipient = fresh_address()
    wid = exchange.request_withdrawal("USDT", "100", recipient)
    exchange.kill_at_marker("after_broadcast")

    # Sent (automine mined it) while the row still says SIGNED.
    [stored] = exchange.attempts(wid)
    assert anvil.web3.eth.get_transaction_receipt(stored)["status"] == 1
    assert anvil.token_balance(exchange.token, recipient) == 100 * USDT
    assert exchange.hot_nonce() == nonce + 1
    assert exchange.rows(
        "SELECT status, hold_state FROM custody_withdrawals WHERE withdrawal_id = :w", w=wid
    ) == [("SIGNED", "HELD")]

    exchange.start()
    exchange.completed(wid)
    assert anvil.token_balance(exchange.token, recipient) == 100 * USDT  # one transfer
    assert exchange.hot_nonce() == nonce + 1
    assert exchange.attempts(wid) == [stored]
    # Settled once: amount + fee left the user's balance once, nothing stays locked.
    assert exchange.balance("USDT") == (Decimal(399), 0)
    assert exchange.rows(
        "SELECT status, hold_state FROM custody_withdrawals WHERE withdrawal_id = :w", w=wid
    ) == [("COMPLETED", "SETTLED")]
    assert exchange.rows("SELECT status FROM custody_outgoing WHERE kind = 'WITHDRAWAL'") == [
        ("COMPLETED",)
    ]
    exchange.kill()
    exchange.start()  # a further restart settles nothing again
    exchange.anvil.mine(3)
    head = exchange.anvil.head()
    exchange.wait_for(
        lambda: exchange.rows("SELECT max(height) FROM custody_blocks")[0][0] >= head,
        "the watcher past the head",
    )
    assert exchange.balance("USDT") == (Decimal(399), 0)
    exchange.reconciled()


@pytest.mark.parametrize("point", ["mid_scan", "after_credit_submit"])
def test_watcher_killed_mid_pass_credits_once(exchange: Exchange, point: str) -> None:
    exchange.start(pause_at=point)
    exchange.watching()
    exchange.deposit("ETH", ETH)
    exchange.kill_at_marker(point)
    [(status,)] = exchange.rows("SELECT status FROM custody_deposits")
    # mid_scan: stored, not yet deep enough; after the submit: the engine has it
    assert status == ("PENDING" if point == "mid_scan" else "CONFIRMED")

    for _restart in range(2):  # the restart credits once; a further one changes nothing
        exchange.start()
        exchange.credited("ETH", Decimal(1))
        exchange.wait_for(
            lambda: exchange.rows("SELECT status FROM custody_deposits") == [("CREDITED",)],
            "CREDITED mark",
        )
        exchange.anvil.mine(3)
        head = exchange.anvil.head()
        exchange.wait_for(
            lambda head=head: exchange.rows("SELECT max(height) FROM custody_blocks")[0][0] >= head,
            "the watcher past the head",
        )
        assert exchange.balance("ETH") == (Decimal(1), 0)
        assert exchange.rows("SELECT count(*) FROM deposit_credits") == [(1,)]
        exchange.kill()
    exchange.start()
    exchange.reconciled()


def test_repeated_kills_with_three_withdrawals_in_flight(exchange: Exchange) -> None:
    anvil = exchange.anvil
    funded(exchange)
    nonce = exchange.hot_nonce()
    recipients = [fresh_address() for _ in range(3)]
    wids = [exchange.request_withdrawal("ETH", "0.1", r) for r in recipients]
    chance = random.Random(os.environ.get("MERCATO_CRASH_SEED", "14"))
    for _cycle in range(3):
        time.sleep(chance.uniform(0.0, 1.5))  # a random point of the workers' passes
        exchange.kill()
        exchange.start()
    for wid in wids:
        exchange.completed(wid)
    for wid, recipient in zip(wids, recipients, strict=True):
        assert anvil.web3.eth.get_balance(recipient) == ETH // 10
        assert len(exchange.attempts(wid)) == 1
    assert exchange.hot_nonce() == nonce + 3
    assert exchange.balance("ETH") == (Decimal(1) - 3 * Decimal("0.101"), 0)
    exchange.reconciled()
