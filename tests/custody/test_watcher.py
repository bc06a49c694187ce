"""The deposit watcher's logic on the in-memory FakeChain (reorgs at exact points, a node
that goes down), crediting through a real in-process exchange (engine, journal, SQL
store and projector process) on SQLite and PostgreSQL. The real adapters' suites run the
same watcher against Anvil and LiteSVM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bip_utils import Bip39SeedGenerator

from custody.fakechain import FakeChain
from mercato import service as service_module
from mercato.config import CustodyAssetConfig, CustodyChainConfig, load_config
from mercato.core.commands import Command, CreditDeposit
from mercato.core.results import Result
from mercato.custody.addresses import deposit_address
from mercato.custody.chains.base import ChainAsset, KeyRef, ScannedBlock
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.watcher import DepositWatcher, WatchedAsset, credit_command
from mercato.service import ExchangeService
from mercato.store.tables import (
    custody_alerts,
    custody_blocks,
    custody_deposits,
    custody_withdrawal_holds,
    deposit_credits,
)

SIGNER = LocalSeedSigner(
    bytes(Bip39SeedGenerator(" ".join(["abandon"] * 11 + ["about"])).Generate())
)
HOT = SIGNER.address(KeyRef("evm", "hot", 0)).lower()
ETH = 10**18  # wei
ATOM = 10**10  # wei per ledger atom (ETH: 18 decimals on chain, 8 in the ledger)
ETH_ASSET = CustodyAssetConfig(symbol="ETH", chain="fake", chain_decimals=18, min_deposit="0.01")
USDT_ASSET = CustodyAssetConfig(
    symbol="USDT", chain="fake", chain_decimals=6, contract="0xusdt", min_deposit="1"
)


class RecordingPort:
    """The exchange's port, counting the commands the watcher submits; ``fail_after``
    makes submit_many raise after the engine applied the commands (a kill between the
    engine's answer and the watcher's write)."""

    def __init__(self, port: Any) -> None:
        self._port = port
        self.submitted: list[Command] = []
        self.fail_after = False

    @property
    def view(self) -> Any:
        return self._port.view

    @property
    def last_seq(self) -> int:
        return int(self._port.last_seq)

    def submit(self, cmd: Command) -> Any:
        self.submitted.append(cmd)
        return self._port.submit(cmd)

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        self.submitted.extend(commands)
        results: list[Result] = await self._port.submit_many(commands)
        if self.fail_after:
            raise RuntimeError("killed after the engine answered")
        return results

    def subscribe(self, listener: Any) -> None:
        self._port.subscribe(listener)


@dataclass
class World:
    service: ExchangeService
    chain: FakeChain
    port: RecordingPort
    config: CustodyChainConfig

    @property
    def db(self) -> Any:
        assert self.service.database is not None
        return self.service.database

    def watcher(self, cls: type[DepositWatcher] = DepositWatcher) -> DepositWatcher:
        view = self.service.port.view  # type: ignore[union-attr]
        assets = [WatchedAsset(a, view.asset(a.symbol).decimals) for a in (ETH_ASSET, USDT_ASSET)]
        return cls(
            self.db,
            self.chain,
            self.config,
            assets,
            self.port,  # type: ignore[arg-type]
            self.service.projection,
            SIGNER,
        )  # type: ignore[arg-type]

    async def address(self, user: int) -> str:
        return (await deposit_address(self.db, SIGNER, "evm", "fake", user)).lower()

    def balance(self, user: int, asset: str = "ETH") -> int:
        return int(self.service.port.view.balance(user, asset)[0])  # type: ignore[union-attr]

    async def rows(self, table: sa.Table, *order: Any) -> list[Any]:
        assert self.service.projection is not None
        await self.service.projection.caught_up()
        async with self.db.connect() as connection:
            return list((await connection.execute(sa.select(table).order_by(*order))).all())

    async def deposits(self) -> list[Any]:
        return await self.rows(custody_deposits, custody_deposits.c.id)

    async def statuses(self) -> list[str]:
        return [row.status for row in await self.deposits()]

    async def check_blocks_follow_the_chain(self) -> None:
        stored = await self.rows(custody_blocks, custody_blocks.c.height)
        assert stored, "no blocks stored"
        for row in stored:
            assert row.hash == self.chain.blocks[row.height].ref.hash, row.height
        heights = [row.height for row in stored]
        assert heights == list(range(heights[0], heights[-1] + 1))


@pytest.fixture
def exchange_config(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(service_module, "tune_gc", lambda: None)  # process-wide: not here
    return load_config(env={"DATABASE_URL": database_url}, data_dir=str(tmp_path / "data"))


@contextlib.asynccontextmanager
async def world(config: Any, confirmations: int = 3, **chain: Any) -> AsyncIterator[World]:
    service = ExchangeService(config, env={})
    await service.start()
    try:
        fake = FakeChain("fake", (ChainAsset("ETH", "", 18), ChainAsset("USDT", "0xusdt", 6)))
        fake.mine(2)
        settings = CustodyChainConfig(
            name="fake",
            kind="evm",
            rpc_url="memory://",
            confirmations=confirmations,
            start_height=1,
            scan_batch=4,
            **chain,
        )
        yield World(service, fake, RecordingPort(service.port), settings)
    finally:
        await service.stop()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_deposit_is_credited_once_after_n_confirmations_and_not_before(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=3) as w:
            watcher = w.watcher()
            address = await w.address(1)
            txid = w.chain.fund(address, "ETH", ETH + ETH // 2 + 123)  # 1.5 ETH and 123 wei
            w.chain.mine()
            for depth in (1, 2):
                report = await watcher.run_once()
                assert (report.error, await w.statuses()) == ("", ["PENDING"]), depth
                assert w.balance(1) == 0 and w.port.submitted == []
                w.chain.mine()
            report = await watcher.run_once()  # 3 deep
            assert (report.confirmed, report.credited) == (1, 1)
            assert w.balance(1) == 150_000_000
            (row,) = await w.deposits()
            assert (row.external_id, row.status, row.user_id) == (f"fake:{txid}:0", "CREDITED", 1)
            assert (row.amount, row.amount_chain, row.dust_chain) == (
                150_000_000,
                str(ETH * 3 // 2 + 123),
                "123",
            )
            for _ in range(3):
                w.chain.mine()
                assert (await watcher.run_once()).credited == 0
            assert w.balance(1) == 150_000_000 and len(w.port.submitted) == 1
            (credit,) = await w.rows(deposit_credits, deposit_credits.c.seq)
            assert (credit.external_id, credit.user_id, credit.amount) == (
                row.external_id,
                1,
                150_000_000,
            )
            await w.check_blocks_follow_the_chain()

    run(scenario())


def test_a_reorg_drops_a_pending_deposit_and_the_blocks_follow_the_new_chain(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=3) as w:
            watcher = w.watcher()
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine()
            w.chain.mine()
            assert (await watcher.run_once()).blocks == 4  # heights 1..4 (start_height 1)
            assert await w.statuses() == ["PENDING"]
            w.chain.reorg(2)  # the deposit's block (3) and 4 replaced; 3 new blocks
            report = await watcher.run_once()
            assert (report.reorgs, report.removed_blocks, report.dropped) == (1, 2, 1)
            assert await w.statuses() == ["DROPPED"]
            await w.check_blocks_follow_the_chain()
            w.chain.mine(5)
            await watcher.run_once()
            assert await w.statuses() == ["DROPPED"]
            assert w.balance(1) == 0 and w.port.submitted == []
            await w.check_blocks_follow_the_chain()

    run(scenario())


def test_a_tip_replaced_at_the_same_height_is_rolled_back_before_it_counts(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            watcher = w.watcher()
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine()
            await watcher.run_once()
            assert await w.statuses() == ["PENDING"]
            head = await w.chain.head()
            w.chain.reorg(1)
            del w.chain.blocks[-1]  # the same height as before, another block: no new one
            assert await w.chain.head() == head
            report = await watcher.run_once()
            assert (report.reorgs, report.dropped) == (1, 1)
            assert await w.statuses() == ["DROPPED"]
            await w.check_blocks_follow_the_chain()
            w.chain.mine(3)
            await watcher.run_once()
            assert await w.statuses() == ["DROPPED"] and w.port.submitted == []

    run(scenario())


def test_a_credited_deposit_reorged_out_is_reversed_with_an_alert_and_a_hold(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            watcher = w.watcher()
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine(2)
            assert (await watcher.run_once()).credited == 1
            dropped = w.chain.reorg(3)  # deeper than the 2 confirmations
            report = await watcher.run_once()
            assert report.reversed == 1
            (row,) = await w.deposits()
            assert row.status == "REVERSED"
            (alert,) = await w.rows(custody_alerts, custody_alerts.c.id)
            assert (alert.severity, alert.kind, alert.subject) == (
                "critical",
                "DEPOSIT_REVERSED",
                row.external_id,
            )
            (hold,) = await w.rows(custody_withdrawal_holds, custody_withdrawal_holds.c.id)
            assert (hold.user_id, hold.asset, hold.subject, hold.released_at) == (
                1,
                "ETH",
                row.external_id,
                None,
            )
            assert w.balance(1) == 100_000_000  # not clawed back: the operator decides
            await w.check_blocks_follow_the_chain()

            # The new chain carries the same transaction again: CREDITED, not credited twice;
            # the alert and the hold stay until an operator deals with them.
            (tx,) = dropped
            w.chain.mempool[tx.txid] = tx
            w.chain.mine(3)
            await watcher.run_once()
            (row,) = await w.deposits()
            assert row.status == "CREDITED" and row.block_height > 3
            assert len(w.port.submitted) == 1 and w.balance(1) == 100_000_000
            assert len(await w.rows(custody_alerts, custody_alerts.c.id)) == 1
            (hold,) = await w.rows(custody_withdrawal_holds, custody_withdrawal_holds.c.id)
            assert hold.released_at is None

    run(scenario())


def test_a_dropped_deposit_revives_when_the_new_chain_carries_it(exchange_config: Any) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=3) as w:
            watcher = w.watcher()
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine()
            await watcher.run_once()
            (tx,) = w.chain.reorg(1)
            await watcher.run_once()
            assert await w.statuses() == ["DROPPED"]
            w.chain.mempool[tx.txid] = tx
            w.chain.mine()
            await watcher.run_once()
            assert await w.statuses() == ["PENDING"]
            w.chain.mine(2)
            assert (await watcher.run_once()).credited == 1
            assert await w.statuses() == ["CREDITED"] and w.balance(1) == 100_000_000

    run(scenario())


def test_blocks_missed_while_the_node_was_down_are_backfilled(exchange_config: Any) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            watcher = w.watcher()
            await watcher.run_once()
            w.chain.down = True
            report = await watcher.run_once()
            assert "down" in report.error
            w.chain.fund(await w.address(2), "USDT", 25 * 10**6)
            w.chain.mine(12)  # more than three scan batches
            assert "down" in (await watcher.run_once()).error
            w.chain.down = False
            report = await watcher.run_once()
            assert (report.error, report.blocks, report.credited) == ("", 12, 1)
            assert w.balance(2, "USDT") == 25 * 10**8  # 6 decimals on chain, 8 in the ledger
            await w.check_blocks_follow_the_chain()

    run(scenario())


def test_below_minimum_and_treasury_are_recorded_never_credited(exchange_config: Any) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=1) as w:
            watcher = w.watcher()
            user_address = await w.address(1)
            w.chain.fund(user_address, "ETH", ETH // 1000)  # 0.001 < min 0.01
            w.chain.fund(user_address, "ETH", 5 * ATOM - 1)  # under one atom: dust only
            w.chain.fund(HOT, "ETH", 3 * ETH, sender="0xoperator")  # operator funds
            w.chain.fund(user_address, "ETH", ETH // 100, sender=HOT)  # our gas top-up
            w.chain.fund(HOT, "ETH", ETH // 10, sender=user_address)  # our sweep
            w.chain.mine(3)
            await watcher.run_once()
            rows = await w.deposits()
            assert sorted((r.status, r.user_id, r.amount) for r in rows) == [
                ("BELOW_MINIMUM", 1, 4),
                ("BELOW_MINIMUM", 1, 100_000),
                ("TREASURY", None, 300_000_000),
            ]
            assert w.port.submitted == [] and w.balance(1) == 0

    run(scenario())


class CrashingWatcher(DepositWatcher):
    """Killed while storing its third block."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.stored = 0

    async def _store_block(self, tip: Any, scanned: ScannedBlock, owners: Any) -> None:
        self.stored += 1
        if self.stored == 3:
            raise RuntimeError("killed mid-scan")
        await super()._store_block(tip, scanned, owners)


def test_a_kill_mid_scan_or_after_the_engine_answered_credits_nothing_twice(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            for user in (1, 2):
                w.chain.fund(await w.address(user), "ETH", user * ETH)
                w.chain.mine()
            w.chain.mine(2)
            with pytest.raises(RuntimeError, match="mid-scan"):
                await w.watcher(CrashingWatcher).run_once()
            stored = await w.rows(custody_blocks, custody_blocks.c.height)
            assert [b.height for b in stored] == [1, 2]  # whole blocks only
            w.port.fail_after = True
            with pytest.raises(RuntimeError, match="engine answered"):
                await w.watcher().run_once()  # a fresh watcher: the state is the store's
            assert await w.statuses() == ["CONFIRMED", "CONFIRMED"]
            assert (w.balance(1), w.balance(2)) == (100_000_000, 200_000_000)
            w.port.fail_after = False
            report = await w.watcher().run_once()
            assert report.credited == 0  # settled from deposit_credits, not submitted again
            assert await w.statuses() == ["CREDITED", "CREDITED"]
            assert len(w.port.submitted) == 2
            assert (w.balance(1), w.balance(2)) == (100_000_000, 200_000_000)
            await w.check_blocks_follow_the_chain()

    run(scenario())


def test_a_confirmed_deposit_deposit_credits_holds_is_marked_without_a_command(
    exchange_config: Any,
) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=1) as w:
            txid = w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine()
            # Credited earlier (e.g. by a watcher whose write was lost), beyond the reach of
            # the engine's window: the store's record is the authority.
            assert w.service.port is not None
            command = credit_command(1, "ETH", 100_000_000, f"fake:{txid}:0", 0)
            assert (await w.service.port.submit(command)).accepted
            report = await w.watcher().run_once()
            assert (report.credited, w.port.submitted) == (0, [])
            assert await w.statuses() == ["CREDITED"] and w.balance(1) == 100_000_000

    run(scenario())


def test_the_credit_command_carries_the_engine_fields() -> None:
    command = credit_command(3, "ETH", 5, "fake:0xab:1", 1_700_000_000_000)
    assert isinstance(command, CreditDeposit)
    assert (command.user, command.asset, command.amount, command.external_id) == (
        3,
        "ETH",
        5,
        "fake:0xab:1",
    )
    if "issued_at" in CreditDeposit.__struct_fields__:
        assert command.issued_at == 1_700_000_000_000  # type: ignore[attr-defined]


class FinalizingChain(FakeChain):
    async def finalized(self) -> int | None:
        return (await self.head()) - 1


def test_use_finalized_confirms_at_the_finalized_height(exchange_config: Any) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=50, use_finalized=True) as w:
            w.chain.__class__ = FinalizingChain
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine()
            await w.watcher().run_once()
            assert await w.statuses() == ["PENDING"]  # the head, not finalized yet
            w.chain.mine()
            assert (await w.watcher().run_once()).credited == 1

    run(scenario())


def test_two_watchers_on_one_chain_at_once_credit_once(exchange_config: Any) -> None:
    """Two processes watching the same chain (a misdeployment): their passes race on the
    same blocks and deposits; a losing pass fails on the store's constraints and the
    engine's dedup answers the second credit, so the user is credited once."""

    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            for user in (1, 2):
                w.chain.fund(await w.address(user), "ETH", user * ETH)
            w.chain.mine(3)
            first, second = w.watcher(), w.watcher()
            for _ in range(3):
                await asyncio.gather(first.run_once(), second.run_once(), return_exceptions=True)
            await first.run_once()
            assert await w.statuses() == ["CREDITED", "CREDITED"]
            assert (w.balance(1), w.balance(2)) == (100_000_000, 200_000_000)
            credits = await w.rows(deposit_credits, deposit_credits.c.seq)
            assert sorted(c.user_id for c in credits) == [1, 2]
            await w.check_blocks_follow_the_chain()

    run(scenario())


def test_a_pass_whose_tip_another_watcher_moved_writes_nothing(exchange_config: Any) -> None:
    async def scenario() -> None:
        async with world(exchange_config, confirmations=2) as w:
            w.chain.fund(await w.address(1), "ETH", ETH)
            w.chain.mine(3)
            first, second = w.watcher(), w.watcher()
            scan = w.chain.scan

            async def scan_after_the_other_pass(*args: Any) -> Any:
                w.chain.scan = scan  # type: ignore[method-assign]
                await second.run_once()  # stores (and credits) these blocks meanwhile
                return await scan(*args)

            w.chain.scan = scan_after_the_other_pass  # type: ignore[method-assign]
            report = await first.run_once()
            assert (report.error, report.blocks, report.reorgs) == ("TIP_MOVED", 0, 0)
            assert await w.statuses() == ["CREDITED"] and w.balance(1) == 100_000_000
            w.chain.mine()
            assert (await first.run_once()).error == ""
            assert await w.statuses() == ["CREDITED"] and len(w.port.submitted) == 1
            await w.check_blocks_follow_the_chain()

    run(scenario())
