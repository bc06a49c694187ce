"""Sweeps on a real chain: Anvil with MercatoToken (6 decimals) as USDT, the seed-based
LocalSeedSigner over a fresh mnemonic, and a real in-process exchange (engine, journal,
SQL store, projector) whose deposits the real DepositWatcher credits. The real sweeper and
sender move the funds; the watcher keeps scanning (it must not take our own transfers for
deposits) and reconciliation is balanced to the atom at every step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from bip_utils import Bip39MnemonicGenerator, Bip39SeedGenerator, Bip39WordsNum
from eth_account import Account

from custody.anvil import DEV_ADDRESSES, Anvil
from custody.test_watcher import exchange_config  # noqa: F401  (fixture)
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.custody.addresses import deposit_address, hot_address
from mercato.custody.chains.base import ChainAsset
from mercato.custody.chains.evm import EvmAdapter
from mercato.custody.reconcile import engine_totals, reconcile
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.sweeper import HOT_WALLET_LOW, Sweeper
from mercato.custody.watcher import DepositWatcher, WatchedAsset
from mercato.service import ExchangeService
from mercato.store.tables import custody_alerts, custody_deposits, custody_outgoing

WEI = 10**18
USDT_UNIT = 10**6
CONFIRMATIONS = 2
CHAIN = "anvil"


def fresh_signer() -> LocalSeedSigner:
    mnemonic = Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_24)
    return LocalSeedSigner(bytes(Bip39SeedGenerator(mnemonic).Generate()))


@dataclass
class Desk:
    """Everything of one test: the node, the exchange, and the custody workers."""

    anvil: Anvil
    service: ExchangeService
    signer: LocalSeedSigner
    adapter: EvmAdapter
    custody: CustodyConfig
    token: str

    @property
    def db(self) -> Any:
        return self.service.database

    @property
    def chain(self) -> CustodyChainConfig:
        return self.custody.chains[0]

    def asset(self, symbol: str) -> ChainAsset:
        config = self.custody.asset(symbol)
        assert config is not None
        return ChainAsset(symbol, config.contract, config.chain_decimals)

    def watcher(self) -> DepositWatcher:
        view = self.service.port.view  # type: ignore[union-attr]
        assets = [WatchedAsset(a, view.asset(a.symbol).decimals) for a in self.custody.assets]
        return DepositWatcher(self.db, self.adapter, self.chain, assets, self.service.port,  # type: ignore[arg-type]
                              self.service.projection, self.signer)  # type: ignore[arg-type]  # fmt: skip

    def sweeper(self) -> Sweeper:
        return Sweeper(self.db, self.adapter, self.signer, self.chain, self.custody.assets,
                       create_outgoing)  # fmt: skip

    def sender(self) -> Sender:
        return Sender(self.db, self.service.port, self.custody, {CHAIN: self.adapter},  # type: ignore[arg-type]
                      self.signer)  # fmt: skip

    async def hot(self) -> str:
        return await hot_address(self.db, self.signer, "evm", CHAIN)

    async def address(self, user: int) -> str:
        return await deposit_address(self.db, self.signer, "evm", CHAIN, user)

    async def balance(self, address: str, symbol: str) -> int:
        return await self.adapter.balance(address, self.asset(symbol))

    def ledger(self, user: int, symbol: str) -> tuple[int, int]:
        return tuple(self.service.port.view.balance(user, symbol))  # type: ignore[union-attr, return-value]

    async def watch(self) -> None:
        report = await self.watcher().run_once()
        assert report.error == "", report.error

    async def credited(self, count: int) -> None:
        """Mine deep enough and let the watcher credit: ``count`` deposits CREDITED."""
        self.anvil.mine(CONFIRMATIONS)
        await self.watch()
        statuses = [row.status for row in await self.rows(custody_deposits)]
        assert statuses.count("CREDITED") == count, statuses

    async def surpluses(self) -> dict[str, int]:
        """Reconciliation after a watcher pass (what a running exchange would have)."""
        await self.watch()
        view = self.service.port.view  # type: ignore[union-attr]
        symbols = [a.symbol for a in self.custody.assets]
        ledger = engine_totals({s: view.asset_totals(s) for s in symbols})
        decimals = {s: view.asset(s).decimals for s in symbols}
        reports = await reconcile(self.db, {CHAIN: self.adapter}, self.custody, decimals, ledger)
        return {report.asset: report.surplus for report in reports}

    async def rows(self, table: sa.Table, *where: Any) -> list[Any]:
        async with self.db.connect() as connection:
            query = sa.select(table).where(*where).order_by(table.c.id)
            return list((await connection.execute(query)).all())

    async def outgoing(self, kind: str) -> list[Any]:
        return await self.rows(custody_outgoing, custody_outgoing.c.kind == kind)

    async def send_pass(self) -> None:
        await self.sender().run_once()

    async def broadcast_and_mine(self) -> None:
        """A sender pass (broadcast), one block (mined: 1 confirmation of 2), and a pass
        that leaves it BROADCAST: mined on chain, in flight in the store."""
        await self.send_pass()
        self.anvil.mine()
        await self.send_pass()

    async def complete(self) -> None:
        """One more block: deep enough; the sender's pass completes it."""
        self.anvil.mine(CONFIRMATIONS - 1)
        await self.send_pass()

    def receipt_fee(self, txid: str) -> int:
        receipt = self.anvil.web3.eth.get_transaction_receipt(txid)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


BALANCED = {"ETH": 0, "USDT": 0}


@contextlib.asynccontextmanager
async def desk(config: Any, anvil: Anvil, cold: str = "", **eth: str) -> AsyncIterator[Desk]:
    token = anvil.deploy_token("USDT", 6)
    custody = CustodyConfig(
        chains=[
            CustodyChainConfig(
                name=CHAIN,
                kind="evm",
                rpc_url=anvil.url,
                confirmations=CONFIRMATIONS,
                start_height=anvil.head() + 1,
                cold_address=cold,
                stuck_seconds=600,
            )
        ],
        assets=[
            CustodyAssetConfig(
                symbol="ETH", chain=CHAIN, chain_decimals=18, sweep_threshold="0.001", **eth
            ),
            CustodyAssetConfig(
                symbol="USDT", chain=CHAIN, chain_decimals=6, contract=token, sweep_threshold="1"
            ),
        ],
    )
    service = ExchangeService(config, env={})
    await service.start()
    adapter = EvmAdapter(CHAIN, anvil.url, [ChainAsset(a.symbol, a.contract, a.chain_decimals)
                                            for a in custody.assets])  # fmt: skip
    try:
        one = Desk(anvil, service, fresh_signer(), adapter, custody, token)
        await one.hot()  # the hot wallet is ours from the start (the watcher records it)
        yield one
    finally:
        await adapter.close()
        await service.stop()


def test_eth_deposits_are_swept_to_hot_less_exactly_the_network_fee(
    exchange_config: Any,  # noqa: F811
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual

    async def scenario() -> None:
        async with desk(exchange_config, anvil) as d:
            addresses = [await d.address(1), await d.address(2)]
            amounts = [2 * WEI + 12345, WEI // 2]
            for address, amount in zip(addresses, amounts, strict=True):
                anvil.send_eth(DEV_ADDRESSES[1], address, amount)
            anvil.mine()
            await d.watch()
            await d.credited(2)
            before = {user: d.ledger(user, "ETH") for user in (1, 2)}
            assert before[1] == (2 * 10**8, 0) and before[2] == (5 * 10**7, 0)
            assert await d.surpluses() == BALANCED
            hot = await d.hot()

            made = await d.sweeper().run_once()
            assert sorted(made.created["SWEEP"]) == sorted(
                f"{CHAIN}:{a}:ETH:0" for a in addresses)  # fmt: skip
            assert await d.surpluses() == BALANCED  # signed
            await d.broadcast_and_mine()
            assert {row.status for row in await d.outgoing("SWEEP")} == {"BROADCAST"}
            assert await d.surpluses() == BALANCED  # mined, in flight
            assert (await d.sweeper().run_once()).created == {}  # open: no second sweep
            await d.complete()
            sweeps = await d.outgoing("SWEEP")
            assert [row.status for row in sweeps] == ["COMPLETED", "COMPLETED"]
            assert await d.surpluses() == BALANCED  # completed

            total_swept = 0
            for row, amount in zip(sweeps, amounts, strict=True):
                fee = d.receipt_fee(row.txid)
                assert int(row.fee_paid_chain) == fee
                left = await d.balance(row.from_address, "ETH")
                # What left the address: the amount swept and its network fee, exactly; what
                # stays is the fee reserve the transfer did not use (max_fee above the price).
                assert left == amount - int(row.amount_chain) - fee
                assert 0 <= left < 21_000 * 10 * 10**9  # below 10 gwei of gas
                total_swept += int(row.amount_chain)
            assert await d.balance(hot, "ETH") == total_swept
            assert {user: d.ledger(user, "ETH") for user in (1, 2)} == before
            # The watcher took neither sweep for a deposit or treasury.
            assert [row.status for row in await d.rows(custody_deposits)] == ["CREDITED"] * 2
            assert (await d.sweeper().run_once()).created == {}  # dust only: nothing more

    asyncio.run(scenario())


def test_a_usdt_deposit_gets_its_gas_from_hot_then_is_swept(
    exchange_config: Any,  # noqa: F811
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual

    async def scenario() -> None:
        async with desk(exchange_config, anvil) as d:
            hot = await d.hot()
            # Operator funds: a real transfer, which the watcher records as TREASURY
            # (anvil_setBalance would be no transfer: reconciliation would see a surplus).
            anvil.send_eth(DEV_ADDRESSES[2], hot, WEI)
            address = await d.address(1)
            anvil.mint(d.token, DEV_ADDRESSES[1], 250 * USDT_UNIT)
            anvil.mine()
            anvil.transfer_token(d.token, DEV_ADDRESSES[1], address, 250 * USDT_UNIT)
            anvil.mine()
            await d.watch()
            await d.credited(1)
            assert [r.status for r in await d.rows(custody_deposits)] == ["TREASURY", "CREDITED"]
            assert await d.balance(address, "ETH") == 0
            assert await d.surpluses() == BALANCED
            before = d.ledger(1, "USDT")

            assert (await d.sweeper().run_once()).created == {
                "GAS": [f"gas:{CHAIN}:{address}:USDT:0"]
            }
            (gas,) = await d.outgoing("GAS")
            assert (gas.from_address, gas.to_address, gas.asset) == (hot, address, "ETH")
            assert await d.surpluses() == BALANCED  # signed
            await d.broadcast_and_mine()
            assert await d.balance(address, "ETH") == int(gas.amount_chain)
            assert (await d.sweeper().run_once()).created == {}  # mined, not COMPLETED: wait
            assert await d.surpluses() == BALANCED  # mined, in flight
            await d.complete()
            (gas,) = await d.outgoing("GAS")
            assert gas.status == "COMPLETED"
            assert int(gas.fee_paid_chain) == d.receipt_fee(gas.txid)
            assert await d.surpluses() == BALANCED  # completed

            made = await d.sweeper().run_once()
            assert made.created == {"SWEEP": [f"{CHAIN}:{address}:USDT:0"]}
            (sweep,) = await d.outgoing("SWEEP")
            assert (sweep.from_role, sweep.from_address, sweep.to_address) == (
                "deposit", address, hot)  # fmt: skip
            assert await d.surpluses() == BALANCED  # signed
            await d.broadcast_and_mine()
            assert await d.surpluses() == BALANCED  # mined, in flight
            await d.complete()
            (sweep,) = await d.outgoing("SWEEP")
            assert sweep.status == "COMPLETED"
            assert int(sweep.fee_paid_chain) == d.receipt_fee(sweep.txid)
            assert await d.surpluses() == BALANCED  # completed
            assert await d.balance(hot, "USDT") == 250 * USDT_UNIT
            assert await d.balance(address, "USDT") == 0
            # The deposit key paid the sweep's gas from the top-up; the rest stays there.
            assert await d.balance(address, "ETH") == int(gas.amount_chain) - int(
                sweep.fee_paid_chain)  # fmt: skip
            assert d.ledger(1, "USDT") == before
            statuses = [r.status for r in await d.rows(custody_deposits)]
            assert statuses == ["TREASURY", "CREDITED"]  # neither top-up nor sweep recorded

    asyncio.run(scenario())


def test_hot_above_its_ceiling_sends_the_excess_to_cold(
    exchange_config: Any,  # noqa: F811
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual
    cold = Account.create().address  # cold storage: no key for it anywhere here

    async def scenario() -> None:
        async with desk(exchange_config, anvil, cold=cold, hot_floor="1",
                        hot_ceiling="3") as d:  # fmt: skip
            hot = await d.hot()
            anvil.send_eth(DEV_ADDRESSES[3], hot, 10 * WEI)
            anvil.mine()
            await d.watch()
            assert await d.surpluses() == BALANCED
            made = await d.sweeper().run_once()
            assert made.created == {"COLD": [f"cold:{CHAIN}:ETH:0"]}
            (transfer,) = await d.outgoing("COLD")
            assert int(transfer.amount_chain) == 10 * WEI - 2 * WEI  # down to the midpoint
            assert await d.surpluses() == BALANCED  # signed
            await d.broadcast_and_mine()
            assert await d.surpluses() == BALANCED  # mined, in flight
            await d.complete()
            (transfer,) = await d.outgoing("COLD")
            assert transfer.status == "COMPLETED"
            fee = d.receipt_fee(transfer.txid)
            assert int(transfer.fee_paid_chain) == fee
            assert await d.balance(cold, "ETH") == 8 * WEI
            assert await d.balance(hot, "ETH") == 2 * WEI - fee
            assert await d.surpluses() == BALANCED  # cold is in the holdings
            assert (await d.sweeper().run_once()).created == {}  # in range now

    asyncio.run(scenario())


def test_hot_below_its_floor_raises_one_alert(
    exchange_config: Any,  # noqa: F811
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual

    async def scenario() -> None:
        async with desk(exchange_config, anvil, hot_floor="1") as d:
            anvil.send_eth(DEV_ADDRESSES[4], await d.hot(), WEI // 2)
            anvil.mine()
            await d.watch()
            assert (await d.sweeper().run_once()).alerts == [f"{CHAIN}:ETH"]
            assert (await d.sweeper().run_once()).alerts == []
            alerts = await d.rows(custody_alerts)
            assert [(a.kind, a.subject) for a in alerts] == [(HOT_WALLET_LOW, f"{CHAIN}:ETH")]
            assert await d.surpluses() == BALANCED

    asyncio.run(scenario())
