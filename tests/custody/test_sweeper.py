"""The sweeper's rules on the in-memory chain, with the custody tables on SQLite and
PostgreSQL: what it sends (through the real sender, ``create_outgoing`` and ``Sender``
passes, confirmations 2), when it waits, and that it never opens a second sweep of the
same address and asset."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from custody.fakechain import FakeChain
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.custody.chains.base import ChainAsset
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.sweeper import HOT_WALLET_LOW, Sweeper, SweepPass
from mercato.store import create_engine, migrate
from mercato.store.tables import (
    custody_addresses,
    custody_alerts,
    custody_deposits,
    custody_outgoing,
)
from store.conftest import database_url  # noqa: F401  (fixture)

ETH = ChainAsset("ETH", "", 18)
USDT = ChainAsset("USDT", "0xusdt", 6)
WEI = 10**18
FEE = 21_000  # FakeChain's fee quote: max_fee 1 x gas_limit 21000
HOT, D1, D2, COLD = "0xhot", "0xd1", "0xd2", "0xcold"
NO_SIGNER: Any = None  # FakeChain signs without keys
NO_PORT: Any = None  # the sender calls the engine for withdrawals only; sweeps have none
CONFIRMATIONS = 2


def eth_config(**overrides: str) -> CustodyAssetConfig:
    return CustodyAssetConfig(symbol="ETH", chain="fake", chain_decimals=18,
                              sweep_threshold="0.001", **overrides)  # fmt: skip


def usdt_config() -> CustodyAssetConfig:
    return CustodyAssetConfig(symbol="USDT", chain="fake", chain_decimals=6, contract="0xusdt",
                              sweep_threshold="100")  # fmt: skip


@dataclass
class World:
    db: AsyncEngine
    chain: FakeChain

    def chain_config(self, cold: str = "") -> CustodyChainConfig:
        return CustodyChainConfig(name="fake", kind="evm", rpc_url="-", cold_address=cold,
                                  confirmations=CONFIRMATIONS)  # fmt: skip

    def sweeper(self, *assets: CustodyAssetConfig, cold: str = "") -> Sweeper:
        assets = assets or (eth_config(), usdt_config())
        return Sweeper(self.db, self.chain, NO_SIGNER, self.chain_config(cold), assets,
                       create_outgoing)  # fmt: skip

    def sender(self) -> Sender:
        custody = CustodyConfig(chains=[self.chain_config()], assets=[eth_config(), usdt_config()])
        return Sender(self.db, NO_PORT, custody, {"fake": self.chain}, NO_SIGNER)

    def fund(self, address: str, asset: str, amount: int) -> None:
        self.chain.fund(address, asset, amount)
        self.chain.mine()

    async def broadcast(self) -> None:
        """A sender pass that broadcasts what is SIGNED (nothing is mined yet)."""
        await self.sender().run_once()

    async def settle(self) -> None:
        """The sender's loop: broadcast, mine deep enough, track to COMPLETED."""
        await self.broadcast()
        self.chain.mine(CONFIRMATIONS)
        await self.sender().run_once()

    async def outgoing(self, kind: str | None = None) -> list[Any]:
        query = select(custody_outgoing).order_by(custody_outgoing.c.id)
        if kind is not None:
            query = query.where(custody_outgoing.c.kind == kind)
        async with self.db.connect() as connection:
            return list((await connection.execute(query)).all())


async def add_addresses(db: AsyncEngine) -> None:
    rows = [("hot", None, 0, HOT), ("deposit", 1, 0, D1), ("deposit", 2, 1, D2)]
    async with db.begin() as connection:
        for role, user, index, address in rows:
            await connection.execute(insert(custody_addresses).values(
                chain="fake", role=role, user_id=user, derivation_index=index,
                address=address, created_at=0))  # fmt: skip


@pytest.fixture
def url(database_url: str) -> str:  # noqa: F811
    """A migrated store holding the hot wallet and two deposit addresses."""

    async def prepare() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        await add_addresses(db)
        await db.dispose()

    asyncio.run(prepare())
    return database_url


def run(url: str, scenario: Callable[[World], Awaitable[None]]) -> None:
    """``scenario`` on a fresh FakeChain, with an engine of the test's own event loop."""

    async def main() -> None:
        db = create_engine(url)
        try:
            await scenario(World(db, FakeChain("fake", (ETH, USDT))))
        finally:
            await db.dispose()

    asyncio.run(main())


def test_native_coin_above_the_threshold_is_swept_to_hot_less_its_own_fee(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(D1, "ETH", 2 * WEI)
        world.fund(D2, "ETH", WEI // 2000)  # 0.0005 ETH: below the 0.001 threshold
        created = await world.sweeper().run_once()
        assert created.created == {"SWEEP": ["fake:0xd1:ETH:0"]}
        (sweep,) = await world.outgoing()
        assert (sweep.from_address, sweep.to_address, sweep.from_role, sweep.from_index) == (
            D1, HOT, "deposit", 0)  # fmt: skip
        assert int(sweep.amount_chain) == 2 * WEI - FEE
        await world.settle()
        assert world.chain.balances[(D1, "ETH")] == 0  # it paid exactly its own fee
        assert world.chain.balances[(HOT, "ETH")] == 2 * WEI - FEE
        assert world.chain.balances[(D2, "ETH")] == WEI // 2000  # untouched

        assert (await world.sweeper().run_once()).created == {}  # nothing left to sweep
        world.fund(D1, "ETH", WEI)
        assert (await world.sweeper().run_once()).created == {"SWEEP": ["fake:0xd1:ETH:1"]}

    run(url, scenario)


def test_a_token_sweep_waits_for_its_gas_to_complete_first(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(HOT, "ETH", WEI)
        world.fund(D2, "USDT", 500 * 10**6)
        sweeper = world.sweeper()
        first = await sweeper.run_once()
        assert first.created == {"GAS": ["gas:fake:0xd2:USDT:0"]}
        (gas,) = await world.outgoing()
        assert (gas.from_address, gas.to_address, gas.asset, gas.from_role) == (
            HOT, D2, "ETH", "hot")  # fmt: skip
        assert int(gas.amount_chain) == 2 * FEE  # twice the quoted fee: headroom

        assert (await sweeper.run_once()).created == {}  # gas SIGNED: wait
        await world.broadcast()
        world.chain.mine()  # mined, yet not COMPLETED (1 confirmation of 2)
        await world.sender().run_once()
        assert world.chain.balances[(D2, "ETH")] == 2 * FEE
        assert [row.status for row in await world.outgoing("GAS")] == ["BROADCAST"]
        assert (await sweeper.run_once()).created == {}
        world.chain.mine()
        await world.sender().run_once()
        assert [row.status for row in await world.outgoing("GAS")] == ["COMPLETED"]

        assert (await sweeper.run_once()).created == {"SWEEP": ["fake:0xd2:USDT:0"]}
        assert (await sweeper.run_once()).created == {}  # the sweep is open: no second one
        await world.settle()
        assert world.chain.balances[(HOT, "USDT")] == 500 * 10**6
        assert world.chain.balances[(D2, "USDT")] == 0
        # The gas left over (below the ETH threshold) stays; nothing more is sent.
        assert world.chain.balances[(D2, "ETH")] == FEE
        assert (await sweeper.run_once()).created == {}
        assert [row.kind for row in await world.outgoing()] == ["GAS", "SWEEP"]

    run(url, scenario)


def test_gas_that_no_longer_covers_the_fee_is_topped_up_again(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(HOT, "ETH", WEI)
        world.fund(D2, "USDT", 500 * 10**6)
        await world.sweeper().run_once()
        await world.settle()  # the first top-up COMPLETED
        world.chain.balances[(D2, "ETH")] = FEE - 1  # e.g. the fee rose past the headroom
        assert (await world.sweeper().run_once()).created == {"GAS": ["gas:fake:0xd2:USDT:0:1"]}
        (_, again) = await world.outgoing("GAS")
        assert int(again.amount_chain) == 2 * FEE - (FEE - 1)
        assert (await world.sweeper().run_once()).created == {}  # waits for that one
        await world.settle()
        assert (await world.sweeper().run_once()).created == {"SWEEP": ["fake:0xd2:USDT:0"]}

    run(url, scenario)


def test_a_token_with_gas_already_there_is_swept_without_a_top_up(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(D1, "ETH", FEE)  # exactly one transfer's fee, below the ETH threshold
        world.fund(D1, "USDT", 101 * 10**6)
        world.fund(D2, "USDT", 100 * 10**6)  # at the threshold, not above it: stays
        assert (await world.sweeper().run_once()).created == {"SWEEP": ["fake:0xd1:USDT:0"]}

    run(url, scenario)


def test_deposits_not_yet_deep_enough_are_not_swept(url: str) -> None:
    async def scenario(world: World) -> None:
        txid = world.chain.fund(D1, "ETH", 2 * WEI)
        world.chain.mine()
        async with world.db.begin() as connection:
            await connection.execute(insert(custody_deposits).values(
                external_id=f"fake:{txid}:0", chain="fake", txid=txid, tx_index=0, asset="ETH",
                user_id=1, address=D1, from_address="0xexternal", amount_chain=str(2 * WEI),
                amount=2 * 10**8, dust_chain="0", block_height=1, block_hash="0x",
                status="PENDING", seen_at=0, updated_at=0))  # fmt: skip
        assert (await world.sweeper().run_once()).created == {}  # a reorg may take it back
        async with world.db.begin() as connection:
            await connection.execute(update(custody_deposits).values(status="CREDITED"))
        assert (await world.sweeper().run_once()).created == {"SWEEP": ["fake:0xd1:ETH:0"]}

    run(url, scenario)


def test_two_passes_at_once_open_one_sweep(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(D1, "ETH", 3 * WEI)
        passes = await asyncio.gather(world.sweeper().run_once(), world.sweeper().run_once())
        made = [ref for one in passes for ref in one.created.get("SWEEP", [])]
        assert made == ["fake:0xd1:ETH:0"]
        assert len(await world.outgoing("SWEEP")) == 1
        await world.settle()
        assert world.chain.balances[(HOT, "ETH")] == 3 * WEI - FEE  # sent once

    run(url, scenario)


def test_passes_at_once_send_one_gas_top_up(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(HOT, "ETH", WEI)
        world.fund(D2, "USDT", 500 * 10**6)
        passes = await asyncio.gather(*(world.sweeper().run_once() for _ in range(3)))
        assert [ref for one in passes for ref in one.created.get("GAS", [])] == [
            "gas:fake:0xd2:USDT:0"]  # fmt: skip
        assert [row.kind for row in await world.outgoing()] == ["GAS"]

    run(url, scenario)


def test_hot_wallet_above_its_ceiling_goes_down_to_the_midpoint_in_cold(url: str) -> None:
    async def scenario(world: World) -> None:
        eth = eth_config(hot_floor="1", hot_ceiling="10")
        world.fund(HOT, "ETH", 20 * WEI)
        assert (await world.sweeper(eth).run_once()).created == {}  # no cold address: stays
        sweeper = world.sweeper(eth, cold=COLD)
        assert (await sweeper.run_once()).created == {"COLD": ["cold:fake:ETH:0"]}
        (cold,) = await world.outgoing()
        assert (cold.from_address, cold.to_address) == (HOT, COLD)
        assert int(cold.amount_chain) == 20 * WEI - 55 * WEI // 10  # down to 5.5 ETH
        assert (await sweeper.run_once()).created == {}  # one open COLD at a time
        await world.settle()
        assert world.chain.balances[(COLD, "ETH")] == 145 * WEI // 10
        assert (await sweeper.run_once()).created == {}  # 5.5 ETH less the fee: in range

    run(url, scenario)


async def open_alerts(db: AsyncEngine) -> list[Any]:
    async with db.connect() as connection:
        return list((await connection.execute(select(custody_alerts).where(
            custody_alerts.c.acknowledged_at.is_(None)))).all())  # fmt: skip


def test_the_hot_floor_alert_is_raised_once_and_resolved_when_refilled(url: str) -> None:
    async def scenario(world: World) -> None:
        sweeper = world.sweeper(eth_config(hot_floor="1"))
        world.fund(HOT, "ETH", WEI // 2)
        assert (await sweeper.run_once()).alerts == ["fake:ETH"]
        assert (await sweeper.run_once()).alerts == []
        (alert,) = await open_alerts(world.db)
        assert (alert.kind, alert.severity, alert.subject) == (HOT_WALLET_LOW, "warning",
                                                               "fake:ETH")  # fmt: skip
        world.fund(HOT, "ETH", WEI)
        await sweeper.run_once()
        assert await open_alerts(world.db) == []
        async with world.db.connect() as connection:
            total = await connection.execute(select(func.count()).select_from(custody_alerts))
            assert total.scalar_one() == 1
        world.chain.balances[(HOT, "ETH")] = 0  # spent (as withdrawals would): low again
        assert (await sweeper.run_once()).alerts == ["fake:ETH"]

    run(url, scenario)


def test_two_passes_at_once_raise_one_floor_alert(url: str) -> None:
    async def scenario(world: World) -> None:
        world.fund(HOT, "ETH", WEI // 2)
        sweepers = [world.sweeper(eth_config(hot_floor="1")) for _ in range(4)]
        passes = await asyncio.gather(*(sweeper.run_once() for sweeper in sweepers))
        assert sorted(alert for one in passes for alert in one.alerts) == ["fake:ETH"]
        # The check-and-raise step itself, several at once (whole passes rarely line up).
        world.chain.balances[(HOT, "ETH")] = 2 * WEI
        await sweepers[0].run_once()  # resolved
        world.chain.balances[(HOT, "ETH")] = 0
        (asset,) = sweepers[0].assets
        done = SweepPass()
        await asyncio.gather(*(sweeper._floor_alert(asset, 0, done) for sweeper in sweepers))
        assert done.alerts == ["fake:ETH"]
        assert len(await open_alerts(world.db)) == 1

    run(url, scenario)


def test_sweeps_never_touch_anything_but_outgoing_rows_and_alerts(url: str) -> None:
    """No engine, no ledger: the sweeper is given none, and writes only its own tables."""

    async def scenario(world: World) -> None:
        world.fund(D1, "ETH", 2 * WEI)
        await world.sweeper().run_once()
        async with world.db.connect() as connection:
            for table in ("ledger_balances", "ledger_entries", "custody_deposits"):
                count = await connection.execute(select(func.count()).select_from(
                    custody_outgoing.metadata.tables[table]))  # fmt: skip
                assert count.scalar_one() == 0, table

    run(url, scenario)
