"""Custody end to end: a real `mercato serve` (its watcher and sender inside) on a real
Anvil node, driven over HTTP as users and admins meet it, and reconciled by the CLI.

The tests share one system (its set-up is most of their time): an Anvil (automine: a
block per transaction; ``anvil.mine`` for confirmations), MercatoToken deployed twice at
6 decimals as USDT and USDC, a data directory with `mercato custody init` run on it, a
hot wallet funded from outside (real transfers, recorded as TREASURY: reconciliation
counts them) and the server on SQLite with 3 confirmations and no address cool-off. Each
test has its own users and checks its own rows; the cool-off test has a system of its
own. Sweeps are off (thresholds out of reach) so that the funds stay where the scenarios
put them; sweeps on Anvil are tests/custody/test_sweeper.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyotp
import pytest
from web3 import Web3

from custody.anvil import DEV_ADDRESSES, Anvil, running_anvil
from mercato.store import sqlite_url
from service.conftest import Backend, Server
from service.test_sessions import PASSWORD

CONFIRMATIONS = 3
ETH_WEI = 10**18
USDT_UNIT = 10**6
TOKEN_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)
T = TypeVar("T")

# Dev accounts and their parts: 0 deploys and mints, 1 and 2 pay users, 9 funds the hot
# wallet. Withdrawals go to addresses nobody else uses, so their balance is exact.
ETH_PAYER, TOKEN_PAYER, TREASURER = DEV_ADDRESSES[1], DEV_ADDRESSES[2], DEV_ADDRESSES[9]
OUTSIDE = Web3.to_checksum_address("0x" + "ab" * 20)
HOT_ETH = 10 * ETH_WEI
HOT_TOKENS = 1_000_000 * USDT_UNIT


def wait_for(what: str, probe: Callable[[], T | None], seconds: float = 30) -> T:
    """``probe()`` once it answers something truthy (the workers poll every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def config_text(anvil: Anvil, usdt: str, usdc: str, cooloff: int) -> str:
    never = 'sweep_threshold = "100000000"'
    return f"""
[rate_limits]
enabled = false

[custody]
address_cooloff_seconds = {cooloff}

[[custody.chains]]
name = "ethereum"
kind = "evm"
rpc_url = "{anvil.url}"
confirmations = {CONFIRMATIONS}
start_height = 0
poll_seconds = 0.2
stuck_seconds = 600

[[custody.assets]]
symbol = "ETH"
chain = "ethereum"
chain_decimals = 18
withdrawal_fee = "0.001"
min_withdrawal = "0.01"
{never}

[[custody.assets]]
symbol = "USDT"
chain = "ethereum"
contract = "{usdt}"
chain_decimals = 6
withdrawal_fee = "1"
min_withdrawal = "10"
{never}

[[custody.assets]]
symbol = "USDC"
chain = "ethereum"
contract = "{usdc}"
chain_decimals = 6
withdrawal_fee = "1"
approval_threshold = "100"
{never}
"""


class User:
    """One signed-in user of the server, over its HTTP API."""

    def __init__(self, url: str, email: str, totp_code: str | None = None) -> None:
        self.email = email
        self.http = httpx.Client(base_url=f"{url}/api/v1", timeout=30)
        body = {"email": email, "password": PASSWORD, "totp_code": totp_code}
        login = self.http.post("/auth/login", json=body)
        assert login.status_code == 200, login.text
        self.http.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        self.recovery: list[str] = []
        self.totp: pyotp.TOTP | None = None

    def balance(self, asset: str) -> tuple[str, str]:
        rows = self.http.get("/balances").json()
        found = [(r["available"], r["locked"]) for r in rows if r["asset"] == asset]
        return found[0] if found else ("0", "0")

    def address(self, asset: str) -> str:
        answer = self.http.get("/deposit-address", params={"asset": asset})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["address"])

    def deposits(self) -> list[dict[str, Any]]:
        answer = self.http.get("/deposits")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    def deposit_of(self, txid: str, status: str | None = None) -> dict[str, Any] | None:
        for item in self.deposits():
            if item["txid"] == txid and (status is None or item["status"] == status):
                return item
        return None

    def withdraw(self, asset: str, amount: str, address: str, **extra: Any) -> httpx.Response:
        body = {"asset": asset, "amount": amount, "address": address, **extra}
        return self.http.post("/withdrawals", json=body)

    def withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/withdrawals/{withdrawal_id}").json())

    def enroll_2fa(self) -> None:
        """2FA on; the recovery codes are kept for later decisions (deterministic, unlike
        a TOTP step that a second code in the same 30 s would reuse)."""
        secret = self.http.post("/account/2fa/enroll").json()["secret"]
        self.totp = pyotp.TOTP(secret)
        confirmed = self.http.post("/account/2fa/confirm", json={"code": self.totp.now()})
        assert confirmed.status_code == 200, confirmed.text
        self.recovery = list(confirmed.json()["recovery_codes"])

    def next_totp(self) -> str:
        """A TOTP code of the next step (the current one was spent by the confirm)."""
        assert self.totp is not None
        return str(self.totp.at(time.time() + 30))


@dataclass
class Exchange:
    """The running system of one test and the test's handles on it."""

    anvil: Anvil
    usdt: str
    usdc: str
    hot: str
    data: Path
    config: Path
    env: dict[str, str]
    store: Backend
    servers: list[Server]
    server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> None:
        self.server = Server(self.data, self.env, "--config", str(self.config))
        self.servers.append(self.server)
        self.server.wait_ready()

    def restart(self) -> None:
        assert self.server is not None
        assert self.server.stop() == 0, self.server.output()
        self.start()

    def _cli_process(self, *args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "mercato.cli", *args,
                   "--config", str(self.config), "--data-dir", str(self.data)]  # fmt: skip
        return subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mercato.cli", *args,
             "--config", str(self.config), "--data-dir", str(self.data)],
            capture_output=True, text=True, timeout=60, env=self.env,
        )  # fmt: skip

    def register(self, email: str, login: bool = True) -> User | None:
        """Register over HTTP, verify with the token of the mail in the outbox, log in."""
        created = httpx.post(
            f"{self.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        ((body,),) = self.store.rows("select body from email_outbox where to_address = :to",
                                     to=email)  # fmt: skip
        match = TOKEN_LINE.search(body)
        assert match is not None, body
        verified = httpx.post(f"{self.url}/api/v1/auth/verify-email",
                              json={"token": match.group(1)})  # fmt: skip
        assert verified.status_code == 200, verified.text
        return User(self.url, email) if login else None

    def user(self, email: str) -> User:
        user = self.register(email)
        assert user is not None
        return user

    def admins(self, *emails: str) -> list[User]:
        """Users registered, made admins with `mercato admin set-role` (at once: each
        command is a process that takes seconds to start), then signed in."""
        for email in emails:
            self.register(email, login=False)
        commands = [self._cli_process("admin", "set-role", email, "admin") for email in emails]
        for command in commands:
            output, _ = command.communicate(timeout=60)
            assert command.returncode == 0, output
        return [User(self.url, email) for email in emails]

    def rows_of(self, table: str, email: str) -> int:
        """How many rows of ``table`` (by user_id) the user with ``email`` has."""
        ((count,),) = self.store.rows(
            f"select count(*) from {table} t join users u on u.id = t.user_id "
            "where u.email = :email",
            email=email,
        )
        return int(count)

    def deposit_eth(self, user: User, wei: int) -> str:
        txid = self.anvil.send_eth(ETH_PAYER, user.address("ETH"), wei)
        return self.credited(user, txid)

    def deposit_token(self, user: User, token: str, units: int) -> str:
        txid = self.anvil.transfer_token(token, TOKEN_PAYER, user.address("USDT"), units)
        return self.credited(user, txid)

    def credited(self, user: User, txid: str) -> str:
        wait_for(f"{txid} seen", lambda: user.deposit_of(txid))
        self.anvil.mine(CONFIRMATIONS)
        wait_for(f"{txid} credited", lambda: user.deposit_of(txid, "CREDITED"))
        return txid

    def reconcile_cli(self) -> dict[str, Any]:
        done = self.cli("custody", "reconcile", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout))

    def eth_balance(self, address: str) -> int:
        return int(self.anvil.web3.eth.get_balance(Web3.to_checksum_address(address)))


def make_exchange(tmp_path: Path, servers: list[Server], anvil: Anvil, cooloff: int) -> Exchange:
    usdt, usdc = anvil.deploy_token("USDT"), anvil.deploy_token("USDC")
    for token in (usdt, usdc):
        anvil.mint(token, TOKEN_PAYER, HOT_TOKENS)
    data, config = tmp_path / "data", tmp_path / "mercato.toml"
    config.write_text(config_text(anvil, usdt, usdc, cooloff))
    env = clean_env()
    store = Backend("sqlite", data, env, sqlite_url(data / "mercato.db"))
    exchange = Exchange(anvil, usdt, usdc, "", data, config, env, store, servers)
    init = exchange.cli("custody", "init")
    assert init.returncode == 0, init.stderr
    exchange.hot = init.stdout.strip()
    # The hot wallet's funds come from outside, by real transfers: TREASURY deposits.
    anvil.send_eth(TREASURER, exchange.hot, HOT_ETH)
    for token in (usdt, usdc):
        anvil.mint(token, exchange.hot, HOT_TOKENS)
    exchange.start()
    return exchange


@contextlib.contextmanager
def running_exchange(tmp_path: Path, cooloff: int) -> Iterator[Exchange]:
    """A fresh Anvil and server (killed on exit) on SQLite in ``tmp_path``."""
    servers: list[Server] = []
    with running_anvil() as anvil:
        try:
            yield make_exchange(tmp_path, servers, anvil, cooloff)
        finally:
            for server in servers:
                if server.process.poll() is None:
                    server.process.kill()
                    server.process.wait()


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running_exchange(tmp_path_factory.mktemp("e2e"), cooloff=0) as shared:
        yield shared


def clean_env() -> dict[str, str]:
    """The environment of tests/service/conftest.py's ``env``: SQLite in the data dir."""
    skip = ("MERCATO_", "SMTP_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return clean


def assert_balanced(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_asset = {a["asset"]: a for a in report["assets"]}
    assert report["balanced"] is True and report["dev"] is False, report
    assert set(by_asset) == {"ETH", "USDT", "USDC"}
    for asset in by_asset.values():
        assert asset["balanced"] is True and asset["surplus"]["fine"] == 0, asset
    return by_asset


# -- 1. deposits ----------------------------------------------------------------------------


def test_real_deposits_are_credited_once_after_the_confirmations(exchange: Exchange) -> None:
    anvil = exchange.anvil
    ann = exchange.user("ann@example.com")
    address = ann.address("ETH")
    assert ann.address("USDT") == address == ann.address("ETH")  # one per user per chain
    assert Web3.is_checksum_address(address)

    # Below a ledger atom (1e-8 ETH) the wei are dust: credited to nobody, reconciled.
    wei = 1_234_567_891_234_567_891
    eth_tx = anvil.send_eth(ETH_PAYER, address, wei)
    usdt_tx = anvil.transfer_token(exchange.usdt, TOKEN_PAYER, address, 2500 * USDT_UNIT)
    for txid in (eth_tx, usdt_tx):
        seen = wait_for("pending", lambda txid=txid: ann.deposit_of(txid, "PENDING"))
        assert 1 <= seen["confirmations"] < CONFIRMATIONS == seen["required_confirmations"]
    assert ann.balance("ETH") == ("0", "0") and ann.balance("USDT") == ("0", "0")

    anvil.mine(CONFIRMATIONS)
    eth = wait_for("ETH credited", lambda: ann.deposit_of(eth_tx, "CREDITED"))
    usdt = wait_for("USDT credited", lambda: ann.deposit_of(usdt_tx, "CREDITED"))
    assert (eth["amount"], eth["amount_chain"]) == ("1.23456789", str(wei))
    assert (usdt["amount"], usdt["amount_chain"]) == ("2500", str(2500 * USDT_UNIT))
    assert ann.balance("ETH") == ("1.23456789", "0")
    assert ann.balance("USDT") == ("2500", "0")

    def credits() -> list[tuple[Any, ...]]:
        return exchange.store.rows(
            "select c.external_id, c.asset, c.amount from deposit_credits c "
            "join users u on u.id = c.user_id where u.email = :email order by c.asset",
            email=ann.email,
        )

    expected = [(f"ethereum:{eth_tx}:0", "ETH", 123_456_789),
                (f"ethereum:{usdt_tx}:", "USDT", 250_000_000_000)]  # fmt: skip
    once = credits()
    assert [row[1:] for row in once] == [row[1:] for row in expected]
    # External ids are chain:txid:index (a value transfer index 0, a token its log index).
    assert once[0][0] == expected[0][0] and once[1][0].startswith(expected[1][0])

    # More blocks, a restart: still once.
    anvil.mine(5)
    exchange.restart()
    anvil.mine(2)
    ann = User(exchange.url, ann.email)
    wait_for("the watcher past the new blocks", lambda: _stored_tip(exchange) >= anvil.head())
    assert credits() == once
    assert ann.balance("ETH") == ("1.23456789", "0") and ann.balance("USDT") == ("2500", "0")
    assert [d["status"] for d in ann.deposits()] == ["CREDITED", "CREDITED"]

    assert exchange.eth_balance(address) == wei  # no sweep: the deposit address holds it
    eth_report = assert_balanced(exchange.reconcile_cli())["ETH"]
    assert eth_report["known_dust"]["fine"] == wei - 123_456_789 * 10**10 == 1_234_567_891
    assert eth_report["treasury"]["fine"] == HOT_ETH


def _stored_tip(exchange: Exchange) -> int:
    ((tip,),) = exchange.store.rows("select coalesce(max(height), -1) from custody_blocks")
    return int(tip)


# -- 2. trade, withdraw, reconcile ----------------------------------------------------------


def test_trade_then_withdraw_on_chain_and_reconcile(exchange: Exchange) -> None:
    anvil = exchange.anvil
    ann, bob = exchange.user("cat@example.com"), exchange.user("dan@example.com")
    (operator,) = exchange.admins("ops@example.com")
    exchange.deposit_eth(ann, 2 * ETH_WEI)
    exchange.deposit_token(bob, exchange.usdt, 5000 * USDT_UNIT)

    order = {"market": "ETH-USDT", "quantity": "1"}
    resting = bob.http.post("/orders", json={**order, "side": "BUY", "price": "2000"})
    assert resting.status_code == 201, resting.text
    taking = ann.http.post("/orders", json={**order, "side": "SELL", "price": "1990"})
    assert taking.status_code == 201 and taking.json()["order"]["status"] == "FILLED"
    # At the maker's price; 0.1 % fees: ann's out of the USDT, bob's out of the ETH.
    assert ann.balance("ETH") == ("1", "0") and ann.balance("USDT") == ("1998", "0")
    assert bob.balance("ETH") == ("0.999", "0") and bob.balance("USDT") == ("3000", "0")

    usdt_to = Web3.to_checksum_address("0x" + "cd" * 20)
    eth_sent = bob.withdraw("ETH", "0.5", OUTSIDE)
    usdt_sent = ann.withdraw("USDT", "1000", usdt_to)
    assert eth_sent.status_code == 201, eth_sent.text
    assert usdt_sent.status_code == 201, usdt_sent.text
    assert bob.balance("ETH") == ("0.498", "0.501")  # amount + fee held
    assert ann.balance("USDT") == ("997", "1001")

    def reconciliation() -> dict[str, Any]:
        answer = operator.http.get("/admin/custody/reconciliation")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    ids = [(bob, eth_sent.json()["withdrawal_id"]), (ann, usdt_sent.json()["withdrawal_id"])]
    for user, wid in ids:
        wait_for("broadcast", lambda u=user, w=wid: u.withdrawal(w)["status"] == "BROADCAST")
    assert exchange.eth_balance(OUTSIDE) == ETH_WEI // 2  # exactly the amount
    assert anvil.token_balance(exchange.usdt, usdt_to) == 1000 * USDT_UNIT
    assert_balanced(reconciliation())  # mined, not settled yet: still balanced

    anvil.mine(CONFIRMATIONS)
    for user, wid in ids:
        wait_for("completed", lambda u=user, w=wid: u.withdrawal(w)["status"] == "COMPLETED")
    wait_for("settled", lambda: bob.balance("ETH") == ("0.498", "0"))
    wait_for("settled", lambda: ann.balance("USDT") == ("997", "0"))
    assert exchange.eth_balance(OUTSIDE) == ETH_WEI // 2
    assert anvil.token_balance(exchange.usdt, usdt_to) == 1000 * USDT_UNIT

    cli = assert_balanced(exchange.reconcile_cli())
    # Trading fees (2 USDT, 0.001 ETH) and the withdrawal fees stay on chain as fees.
    assert cli["USDT"]["fees"]["amount"] == "3" and cli["ETH"]["fees"]["amount"] == "0.002"
    assert cli["ETH"]["network_fees"]["fine"] > 0  # the hot wallet paid gas for both
    http = assert_balanced(reconciliation())
    assert {k: _fine(a) for k, a in http.items()} == {k: _fine(a) for k, a in cli.items()}
    refused = ann.http.get("/admin/custody/reconciliation")
    assert (refused.status_code, refused.json()["code"]) == (403, "ADMIN_REQUIRED")


def _fine(report: dict[str, Any]) -> dict[str, int]:
    return {name: value["fine"] for name, value in report.items() if isinstance(value, dict)}


def test_with_the_default_cooloff_a_new_address_is_refused(tmp_path: Path) -> None:
    with running_exchange(tmp_path, cooloff=86_400) as exchange:
        ann = exchange.user("ann@example.com")
        for _ in range(2):  # added by the first, still cooling off at the second
            refused = ann.withdraw("ETH", "0.5", OUTSIDE)
            assert (refused.status_code, refused.json()["code"]) == (409, "ADDRESS_COOLING_OFF")
        book = ann.http.get("/withdrawal-addresses").json()
        assert [entry["address"] for entry in book] == [OUTSIDE]
        assert exchange.rows_of("custody_withdrawals", ann.email) == 0


# -- 3. reorg -------------------------------------------------------------------------------


def test_a_pending_deposit_whose_block_leaves_the_chain_is_dropped(exchange: Exchange) -> None:
    anvil = exchange.anvil
    ann = exchange.user("eve@example.com")
    address = ann.address("ETH")
    wait_for("the watcher at the head", lambda: _stored_tip(exchange) >= anvil.head())

    snapshot = anvil.snapshot()
    txid = anvil.send_eth(ETH_PAYER, address, ETH_WEI)
    pending = wait_for("pending", lambda: ann.deposit_of(txid, "PENDING"))
    anvil.revert(snapshot)
    # Anvil does not put the reverted transaction back in its mempool: the blocks mined
    # now are empty and the transfer is nowhere (checked, so this cannot pass by luck).
    anvil.mine(CONFIRMATIONS + 2)
    assert _has_no_receipt(anvil, txid) and exchange.eth_balance(address) == 0

    dropped = wait_for("dropped", lambda: ann.deposit_of(txid, "DROPPED"))
    assert dropped["block_height"] == pending["block_height"]
    anvil.mine(CONFIRMATIONS)
    wait_for("the watcher at the new head", lambda: _stored_tip(exchange) >= anvil.head())
    assert [d["status"] for d in ann.deposits()] == ["DROPPED"]
    assert ann.balance("ETH") == ("0", "0")
    assert exchange.rows_of("deposit_credits", ann.email) == 0
    stored = exchange.store.rows("select height, hash from custody_blocks order by height")
    assert stored and stored[-1][0] == anvil.head()
    for height, block_hash in stored:
        assert block_hash == "0x" + bytes(anvil.web3.eth.get_block(height)["hash"]).hex()
    assert_balanced(exchange.reconcile_cli())


def _has_no_receipt(anvil: Anvil, txid: str) -> bool:
    try:
        return anvil.web3.eth.get_transaction_receipt(txid) is None  # type: ignore[arg-type]
    except Exception:  # web3 raises TransactionNotFound for an unknown hash
        return True


# -- 4. approvals ---------------------------------------------------------------------------


def test_a_large_withdrawal_waits_for_two_admins(exchange: Exchange) -> None:
    """USDC's approval_threshold is 100: above it two admins who are not the requester."""
    anvil = exchange.anvil
    requester, first, second = exchange.admins(
        "fay@example.com", "one@example.com", "two@example.com"
    )
    exchange.deposit_token(requester, exchange.usdc, 1000 * USDT_UNIT)
    for admin in (requester, first, second):
        admin.enroll_2fa()
    target = Web3.to_checksum_address("0x" + "ef" * 20)

    big = requester.withdraw("USDC", "500", target, totp_code=requester.recovery[0])
    assert big.status_code == 201, big.text
    wid = big.json()["withdrawal_id"]
    assert (big.json()["status"], big.json()["approvals_required"]) == ("APPROVAL_REQUIRED", 2)
    assert requester.balance("USDC") == ("499", "501")

    def decide(user: User, code: str) -> httpx.Response:
        return user.http.post(f"/admin/withdrawals/{wid}/approve", json={"totp_code": code})

    def outgoing() -> list[tuple[Any, ...]]:
        return exchange.store.rows("select status from custody_outgoing where ref = :w", w=wid)

    own = decide(requester, requester.recovery[1])
    assert (own.status_code, own.json()["code"]) == (403, "SELF_APPROVAL")
    one = decide(first, first.next_totp())
    assert one.status_code == 200 and one.json()["status"] == "APPROVAL_REQUIRED", one.text
    twice = decide(first, first.recovery[0])
    assert (twice.status_code, twice.json()["code"]) == (409, "ALREADY_DECIDED")
    # Waiting for approvals, nothing is signed: no outgoing row, nothing on chain.
    assert outgoing() == [] and anvil.token_balance(exchange.usdc, target) == 0

    two = decide(second, second.next_totp())
    # The answer reads the withdrawal after the approval committed: the sender may have
    # broadcast it already.
    assert two.status_code == 200 and two.json()["status"] in ("APPROVED", "BROADCAST"), two.text
    wait_for("broadcast", lambda: requester.withdrawal(wid)["status"] == "BROADCAST")
    assert anvil.token_balance(exchange.usdc, target) == 500 * USDT_UNIT
    anvil.mine(CONFIRMATIONS)
    wait_for("completed", lambda: requester.withdrawal(wid)["status"] == "COMPLETED")
    wait_for("settled", lambda: requester.balance("USDC") == ("499", "0"))
    assert outgoing() == [("COMPLETED",)]

    other = requester.withdraw("USDC", "200", target, totp_code=requester.recovery[2])
    assert other.status_code == 201 and other.json()["status"] == "APPROVAL_REQUIRED"
    assert requester.balance("USDC") == ("298", "201")
    rejected = second.http.post(
        f"/admin/withdrawals/{other.json()['withdrawal_id']}/reject",
        json={"reason": "not today", "totp_code": second.recovery[0]},
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "REJECTED", rejected.text
    assert requester.balance("USDC") == ("499", "0")  # the hold released
    assert anvil.token_balance(exchange.usdc, target) == 500 * USDT_UNIT
    assert exchange.store.rows(
        "select count(*) from custody_outgoing where ref = :w", w=other.json()["withdrawal_id"]
    ) == [(0,)]
    report = first.http.get("/admin/custody/reconciliation")
    assert report.status_code == 200 and assert_balanced(report.json()), report.text


# -- 5. bad input ---------------------------------------------------------------------------


def test_bad_withdrawals_are_refused_and_hold_nothing(exchange: Exchange) -> None:
    ann = exchange.user("gus@example.com")
    exchange.deposit_eth(ann, ETH_WEI)
    # EIP-55's own example with the case of its last letter flipped.
    valid = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert Web3.is_checksum_address(valid)
    cases = [
        (("ETH", "0.5", valid[:-1] + "D"), 400, "INVALID_ADDRESS"),
        (("ETH", "0.5", "HAgk14JpMQLgt6rVgv7cBQFJWFto5Dqxi472uT3DKpqk"), 400, "INVALID_ADDRESS"),
        (("ETH", "0.001", OUTSIDE), 400, "INVALID_AMOUNT"),  # below min_withdrawal 0.01
        (("ETH", "0.000000001", OUTSIDE), 400, "INVALID_AMOUNT"),  # finer than the ledger
        (("ETH", "1", OUTSIDE), 400, "INSUFFICIENT_BALANCE"),  # 1 + the 0.001 fee
        (("USDT", "10.0000001", OUTSIDE), 400, "INVALID_AMOUNT"),  # finer than 6 decimals
        (("DOGE", "1", OUTSIDE), 409, "CUSTODY_UNAVAILABLE"),
    ]
    for (asset, amount, address), status, code in cases:
        answer = ann.withdraw(asset, amount, address)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (asset, amount)
        assert answer.json()["message"], answer.text

    key = ann.http.post("/account/api-keys", json={"label": "bot", "permissions": ["read"]})
    assert key.status_code == 201, key.text
    secret, key_id = key.json()["secret"], key.json()["key_id"]
    body = json.dumps({"asset": "ETH", "amount": "0.5", "address": OUTSIDE})
    query = f"timestamp={int(time.time() * 1000)}"
    signature = hmac.new(secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    by_key = httpx.post(
        f"{exchange.url}/api/v1/withdrawals?{query}&signature={signature}", content=body,
        headers={"X-MBX-APIKEY": key_id, "content-type": "application/json"},
    )  # fmt: skip
    assert (by_key.status_code, by_key.json()["code"]) == (403, "MISSING_PERMISSION")

    assert ann.balance("ETH") == ("1", "0")
    assert exchange.rows_of("custody_withdrawals", ann.email) == 0
    # The address book gains OUTSIDE only from a request that passed the earlier checks:
    # the balance refusal rolled back with everything else.
    assert ann.http.get("/withdrawal-addresses").json() == []
