"""Reconciliation to the atom: the custody tables filled as the watcher and the sender
fill them, the ledger a real engine fed the same deposits and withdrawals, and a FakeChain
holding what those transfers left on chain (the sweeper and the real sender move funds).
Each component moves the surplus by exactly its amount; sweeps, gas top-ups and
withdrawals keep it at 0 at every step, including while their transactions are mined but
not yet tracked. Then the CLI's exit codes and the admin endpoint's access rule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

import mercato.cli
from custody.fakechain import FakeChain
from custody.test_sweeper import (
    COLD,
    D1,
    D2,
    ETH,
    FEE,
    HOT,
    NO_SIGNER,
    USDT,
    WEI,
    add_addresses,
)
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.core import commands as c
from mercato.core.engine import Engine
from mercato.core.results import Result
from mercato.custody.chains.base import KeyRef
from mercato.custody.reconcile import (
    AssetReconciliation,
    LedgerTotals,
    engine_totals,
    projection_totals,
    reconcile,
)
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.sweeper import Sweeper
from mercato.journal import AsyncSequencer, recover_engine
from mercato.store import create_engine, migrate, sqlite_url
from mercato.store.projector import Projector
from mercato.store.tables import custody_deposits, custody_withdrawals
from service.conftest import Backend, Server, backend, env, servers  # noqa: F401  (fixtures)
from service.test_sessions import PASSWORD, bearer, create_user
from service.test_standing import admin
from store.conftest import database_url  # noqa: F401  (fixture)

USDT_UNIT = 10**6  # on chain
ATOM = 10**8  # one whole unit in the ledger (8 decimals for both)
CUSTODY = CustodyConfig(
    chains=[CustodyChainConfig(name="fake", kind="evm", rpc_url="-", cold_address=COLD,
                               confirmations=2)],
    assets=[
        CustodyAssetConfig(symbol="ETH", chain="fake", chain_decimals=18, sweep_threshold="0.001"),
        CustodyAssetConfig(symbol="USDT", chain="fake", chain_decimals=6, contract="0xusdt",
                           sweep_threshold="100"),
    ],
)  # fmt: skip
DECIMALS = {"ETH": 8, "USDT": 8}


@dataclass
class Exchange:
    """The three sources reconciliation reads, kept consistent as the workers keep them."""

    db: AsyncEngine
    chain: FakeChain = field(default_factory=lambda: FakeChain("fake", (ETH, USDT)))
    engine: Engine = field(default_factory=Engine)
    seq: int = 0
    deposits: int = 0

    def submit(self, command: c.Command) -> None:
        self.seq += 1
        assert self.engine.apply(self.seq, self.seq, command).status == "ACCEPTED"

    async def deposit(self, user: int | None, address: str, asset: str, amount: int,
                      status: str, atoms: int = 0, dust: int = 0) -> None:  # fmt: skip
        """A transfer on chain, the watcher's row for it and, if CREDITED, the credit."""
        txid = self.chain.fund(address, asset, amount)
        self.chain.mine()
        self.deposits += 1
        external_id = f"fake:{txid}:0"
        async with self.db.begin() as connection:
            await connection.execute(insert(custody_deposits).values(
                external_id=external_id, chain="fake", txid=txid, tx_index=0, asset=asset,
                user_id=user, address=address, from_address="0xexternal",
                amount_chain=str(amount), amount=atoms, dust_chain=str(dust),
                block_height=self.chain.blocks[-1].ref.height,
                block_hash=self.chain.blocks[-1].ref.hash, status=status, seen_at=0,
                updated_at=0))  # fmt: skip
        if status == "CREDITED":
            assert user is not None
            self.submit(c.CreditDeposit(user, asset, atoms, external_id))

    async def report(self) -> dict[str, AssetReconciliation]:
        ledger = engine_totals(self.engine.total_balances())
        reports = await reconcile(self.db, {"fake": self.chain}, CUSTODY, DECIMALS, ledger)
        return {report.asset: report for report in reports}

    async def surpluses(self) -> dict[str, int]:
        return {asset: report.surplus for asset, report in (await self.report()).items()}

    def sender(self, port: Any = None) -> Sender:
        """The real sender (``port``: the engine's, for a withdrawal's settle)."""
        return Sender(self.db, port, CUSTODY, {"fake": self.chain}, NO_SIGNER)

    def sweeper(self) -> Sweeper:
        return Sweeper(self.db, self.chain, NO_SIGNER, CUSTODY.chains[0], CUSTODY.assets,
                       create_outgoing)  # fmt: skip


class EnginePort:
    """The exchange's engine as the sender's port; the first ``SettleWithdrawal`` is
    killed before it reaches the engine (the moment the transfer is COMPLETED and the
    ledger still holds the amount)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.kill_next_settle = True

    async def submit(self, command: c.Command) -> Result:
        if isinstance(command, c.SettleWithdrawal) and self.kill_next_settle:
            self.kill_next_settle = False
            raise RuntimeError("killed before the settle")
        self.exchange.seq += 1
        return self.exchange.engine.apply(self.exchange.seq, self.exchange.seq, command)


async def funded(db: AsyncEngine) -> Exchange:
    """Two credited deposits (one with dust), one pending, one below the minimum, and
    treasury funds on the hot wallet."""
    exchange = Exchange(db)
    exchange.submit(c.UpsertAsset("ETH", 8))
    exchange.submit(c.UpsertAsset("USDT", 8))
    await exchange.deposit(1, D1, "ETH", WEI + 123, "CREDITED", atoms=ATOM, dust=123)
    await exchange.deposit(2, D2, "USDT", 500 * USDT_UNIT, "CREDITED", atoms=500 * ATOM)
    await exchange.deposit(2, D2, "USDT", 7 * USDT_UNIT, "PENDING")
    await exchange.deposit(1, D1, "ETH", 10**12, "BELOW_MINIMUM")
    await exchange.deposit(None, HOT, "ETH", 5 * WEI, "TREASURY")
    return exchange


@pytest.fixture
def url(database_url: str) -> str:  # noqa: F811
    async def prepare() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        await add_addresses(db)
        await db.dispose()

    asyncio.run(prepare())
    return database_url


def run(url: str, scenario: Callable[[Exchange], Awaitable[None]]) -> None:
    async def main() -> None:
        db = create_engine(url)
        try:
            await scenario(await funded(db))
        finally:
            await db.dispose()

    asyncio.run(main())


def test_balanced_to_the_atom_with_every_component_reported(url: str) -> None:
    async def scenario(exchange: Exchange) -> None:
        reports = await exchange.report()
        eth, usdt = reports["ETH"], reports["USDT"]
        assert (eth.balanced, usdt.balanced) == (True, True)
        assert eth.fine_decimals == 18 and usdt.fine_decimals == 8
        assert dict(eth.components) == {
            "deposit_addresses": WEI + 123 + 10**12, "hot_wallet": 5 * WEI, "cold_address": 0,
            "users_available": WEI, "users_locked": 0, "fees": 0, "known_dust": 123,
            "uncredited_deposits": 10**12, "treasury": 5 * WEI, "network_fees": 0,
            "withdrawals_unsettled": 0,
        }  # fmt: skip
        assert usdt.components["deposit_addresses"] == 507 * ATOM  # 6 decimals -> 8
        assert usdt.components["uncredited_deposits"] == 7 * ATOM
        shown = usdt.as_dict()
        assert shown["holdings"] == {"amount": "507", "fine": 507 * ATOM}
        assert shown["surplus"] == {"amount": "0", "fine": 0} and shown["balanced"] is True
        assert eth.as_dict()["known_dust"] == {"amount": "0.000000000000000123", "fine": 123}

    run(url, scenario)


def test_each_discrepancy_shows_as_exactly_its_amount(url: str) -> None:
    async def scenario(exchange: Exchange) -> None:
        exchange.chain.balances[(D2, "USDT")] -= 3  # 3 chain units missing on chain
        assert await exchange.surpluses() == {"ETH": 0, "USDT": -300}  # in 1e-8 USDT
        exchange.chain.balances[(COLD, "ETH")] = 5  # 5 wei nobody accounted for
        assert await exchange.surpluses() == {"ETH": 5, "USDT": -300}
        exchange.chain.balances[(COLD, "ETH")] = 0
        async with exchange.db.begin() as connection:  # the dust forgotten: 123 wei over
            await connection.execute(update(custody_deposits)
                                     .where(custody_deposits.c.dust_chain == "123")
                                     .values(dust_chain="0"))  # fmt: skip
        assert (await exchange.surpluses())["ETH"] == 123
        # A credit the ledger has with nothing on chain (what a --dev faucet does).
        exchange.submit(c.CreditDeposit(1, "USDT", 2 * ATOM, "faucet-1"))
        assert (await exchange.surpluses())["USDT"] == -300 - 2 * ATOM

    run(url, scenario)


def test_sweeps_and_gas_top_ups_change_nothing_but_the_network_fees(url: str) -> None:
    async def scenario(exchange: Exchange) -> None:
        balanced = {"ETH": 0, "USDT": 0}
        first = await exchange.sweeper().run_once()
        assert first.created == {"GAS": ["gas:fake:0xd2:USDT:0"], "SWEEP": ["fake:0xd1:ETH:0"]}
        assert await exchange.surpluses() == balanced  # signed, nothing on chain yet
        await exchange.sender().run_once()  # broadcast
        exchange.chain.mine()  # mined; the sender has not recorded it (fees in flight)
        assert await exchange.surpluses() == balanced
        await exchange.sender().run_once()  # 1 confirmation of 2: still BROADCAST
        assert await exchange.surpluses() == balanced
        exchange.chain.mine()
        await exchange.sender().run_once()  # COMPLETED, fees recorded
        assert await exchange.surpluses() == balanced
        assert (await exchange.report())["ETH"].components["network_fees"] == 2 * FEE

        assert (await exchange.sweeper().run_once()).created == {"SWEEP": ["fake:0xd2:USDT:0"]}
        await exchange.sender().run_once()
        exchange.chain.mine(2)
        await exchange.sender().run_once()
        reports = await exchange.report()
        assert await exchange.surpluses() == balanced
        assert reports["ETH"].components["network_fees"] == 3 * FEE  # paid in ETH
        assert reports["USDT"].components["network_fees"] == 0
        # The credited 500 USDT moved to the hot wallet; the 7 still PENDING stay put.
        assert reports["USDT"].components["hot_wallet"] == 500 * ATOM
        assert reports["USDT"].components["deposit_addresses"] == 7 * ATOM

    run(url, scenario)


def test_a_withdrawal_sent_but_not_settled_is_counted_until_it_settles(url: str) -> None:
    async def scenario(exchange: Exchange) -> None:
        exchange.chain.fund(HOT, "USDT", 500 * USDT_UNIT)  # as a sweep would have moved it
        exchange.chain.balances[(D2, "USDT")] = 7 * USDT_UNIT
        exchange.chain.mine()
        assert await exchange.surpluses() == {"ETH": 0, "USDT": 0}
        exchange.submit(c.HoldWithdrawal(2, "USDT", 101 * ATOM, "w1", fee=ATOM))
        async with exchange.db.begin() as connection:
            await connection.execute(insert(custody_withdrawals).values(
                withdrawal_id="w1", user_id=2, asset="USDT", chain="fake", address="0xext",
                amount=100 * ATOM, fee=ATOM, status="SIGNED", hold_state="HELD",
                approvals_required=0, requested_at=0, updated_at=0))  # fmt: skip
        await create_outgoing(
            exchange.db, exchange.chain, NO_SIGNER, kind="WITHDRAWAL", ref="w1",
            key=KeyRef("evm", "hot", 0), from_address=HOT, to_address="0xext", asset=USDT,
            amount_chain=100 * USDT_UNIT,
        )  # fmt: skip
        assert await exchange.surpluses() == {"ETH": 0, "USDT": 0}
        port = EnginePort(exchange)
        await exchange.sender(port).run_once()  # broadcast
        exchange.chain.mine()  # gone from the hot wallet; the row is still BROADCAST
        assert await exchange.surpluses() == {"ETH": 0, "USDT": 0}
        exchange.chain.mine()
        with pytest.raises(RuntimeError, match="killed before the settle"):
            await exchange.sender(port).run_once()  # COMPLETED, then killed
        usdt = (await exchange.report())["USDT"]
        assert usdt.balanced and usdt.components["withdrawals_unsettled"] == 100 * ATOM
        assert usdt.components["users_locked"] == 101 * ATOM

        await exchange.sender(port).run_once()  # the next pass settles the hold
        usdt = (await exchange.report())["USDT"]
        assert usdt.balanced and usdt.components["withdrawals_unsettled"] == 0
        assert (usdt.components["users_locked"], usdt.components["fees"]) == (0, ATOM)
        assert (await exchange.surpluses())["ETH"] == 0  # its gas: a network fee

    run(url, scenario)


# ------------------------------------------------------------------ the CLI


def _journal(engine_dir: Path, commands: list[c.Command]) -> None:
    async def write() -> None:
        sequencer = await AsyncSequencer.open(engine_dir)
        for command in commands:
            assert (await sequencer.submit(command)).status == "ACCEPTED"
        await sequencer.close()

    asyncio.run(write())


def test_cli_exit_code_says_whether_balanced(tmp_path: Path, monkeypatch: Any) -> None:
    data = tmp_path / "data"
    config = tmp_path / "mercato.toml"
    config.write_text(
        '[custody]\n[[custody.chains]]\nname = "fake"\nkind = "evm"\nrpc_url = "-"\n'
        f'cold_address = "{COLD}"\n'
        '[[custody.assets]]\nsymbol = "ETH"\nchain = "fake"\nchain_decimals = 18\n'
    )
    chain = FakeChain("fake", (ETH, USDT))

    async def store() -> None:
        url = sqlite_url(data / "mercato.db")
        await migrate(url)
        db = create_engine(url)
        await add_addresses(db)
        exchange = Exchange(db, chain)
        exchange.submit(c.UpsertAsset("ETH", 8))
        await exchange.deposit(1, D1, "ETH", 2 * WEI, "CREDITED", atoms=2 * ATOM)
        await db.dispose()

    data.mkdir()
    asyncio.run(store())
    _journal(data / "engine", [c.UpsertAsset("ETH", 8), c.CreditDeposit(1, "ETH", 2 * ATOM, "x")])
    monkeypatch.setattr(mercato.cli, "chain_adapters", lambda settings: {"fake": chain})
    args = ["custody", "reconcile", "--data-dir", str(data), "--config", str(config)]
    runner = CliRunner()

    done = runner.invoke(mercato.cli.app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.output)
    assert answer["balanced"] is True and answer["assets"][0]["holdings"]["fine"] == 2 * WEI
    chain.balances[(D1, "ETH")] -= 1
    done = runner.invoke(mercato.cli.app, [*args, "--json"])
    assert done.exit_code == 1
    assert json.loads(done.output)["assets"][0]["surplus"] == {"amount": "-0.000000000000000001",
                                                               "fine": -1}  # fmt: skip
    table = runner.invoke(mercato.cli.app, args)
    assert table.exit_code == 1 and "NOT balanced" in table.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_journal = runner.invoke(mercato.cli.app, ["custody", "reconcile", "--data-dir", str(empty)])
    assert no_journal.exit_code == 2


def test_the_projection_totals_agree_with_the_engine(url: str, tmp_path: Path) -> None:
    """The endpoint's fallback source, ``ledger_balances`` caught up from a journal, gives
    the engine's own totals: credits, a settled withdrawal with its fee, a held one."""
    commands: list[c.Command] = [
        c.UpsertAsset("USDT", 8),
        c.CreditDeposit(1, "USDT", 500 * ATOM, "d1"),
        c.CreditDeposit(2, "USDT", 70 * ATOM, "d2"),
        c.HoldWithdrawal(1, "USDT", 101 * ATOM, "w1", fee=ATOM),
        c.SettleWithdrawal("w1"),
        c.HoldWithdrawal(2, "USDT", 20 * ATOM, "w2", fee=2 * ATOM),
    ]
    _journal(tmp_path, commands)
    engine, _, _ = recover_engine(tmp_path)

    async def project() -> LedgerTotals:
        db = create_engine(url)
        try:
            projector = Projector(db)
            await projector.start(tmp_path, engine.last_seq)
            await projector.stop()
            async with db.connect() as connection:
                return await projection_totals(connection, "USDT")
        finally:
            await db.dispose()

    from_projection = asyncio.run(project())
    from_engine = asyncio.run(engine_totals(engine.total_balances())("USDT"))
    assert from_projection == from_engine == LedgerTotals(
        users_available=(500 - 101 + 70 - 20) * ATOM, users_locked=20 * ATOM, fees=ATOM,
        external_deposits=-570 * ATOM, external_withdrawals=100 * ATOM,
    )  # fmt: skip


# ------------------------------------------------------------------ the admin endpoint


def test_reconciliation_endpoint_is_for_admin_sessions_only(
    backend: Backend,  # noqa: F811
    servers: list[Server],  # noqa: F811
) -> None:
    for email in ("ann@example.com", "boss@example.com"):
        create_user(backend.data, email, backend.env.get("DATABASE_URL"))
    admin(backend, "set-role", "boss@example.com", "admin")
    server = Server(backend.data, backend.env)
    servers.append(server)
    server.wait_ready()
    path = f"{server.url}/api/v1/admin/custody/reconciliation"

    def token(email: str) -> str:
        answer = httpx.post(f"{server.url}/api/v1/auth/login",
                            json={"email": email, "password": PASSWORD})  # fmt: skip
        return str(answer.json()["access_token"])

    assert httpx.get(path).status_code == 401
    refused = httpx.get(path, headers=bearer(token("ann@example.com")))
    assert (refused.status_code, refused.json()["code"]) == (403, "ADMIN_REQUIRED")
    allowed = httpx.get(path, headers=bearer(token("boss@example.com")))
    assert allowed.status_code == 200, allowed.text
    # No custody chains configured: nothing to reconcile, nothing out of balance.
    assert allowed.json() == {"balanced": True, "dev": False, "assets": []}
