"""Solana custody end to end on the LiteSVM ledger, through a real in-process exchange
(``ExchangeService.start``: engine, store, projection, deposits and withdrawals
services, the custody runtime with a sealed LocalSeedSigner seed) and the real workers
(DepositWatcher, Sender with the withdrawals' recovery, Sweeper), each pass run by the
test between produced blocks. LiteSVM serves no JSON-RPC, so the SolanaAdapter over the
ledger is put into ``service.custody_adapters`` before the service starts (the runtime
keeps an adapter it is given). What the ledger leaves untested: litesvm_ledger.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy import insert, select

from custody.litesvm_ledger import LiteSvmLedger
from mercato import service as service_module
from mercato.application.withdrawals import Withdrawals
from mercato.config import load_config
from mercato.custody.addresses import hot_address
from mercato.custody.chains.solana import (
    SolanaAdapter,
    create_associated_token_account_idempotent,
)
from mercato.custody.keys import init_seed
from mercato.custody.reconcile import AssetReconciliation, engine_totals, reconcile
from mercato.custody.runtime import CustodyRuntime, chain_assets
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.sweeper import Sweeper
from mercato.custody.watcher import DepositWatcher, WatchedAsset
from mercato.service import ExchangeService
from mercato.store import create_engine
from mercato.store.tables import (
    custody_attempts,
    custody_deposits,
    custody_outgoing,
    custody_withdrawals,
    users,
)

LAMPORTS = 10**9
USDC_UNIT = 10**6
MASTER_KEY = os.urandom(32)


@dataclass
class World:
    ledger: LiteSvmLedger
    adapter: SolanaAdapter
    service: ExchangeService
    issuer: Keypair
    outside: Keypair  # an external wallet holding SOL and USDC
    mint: Pubkey
    watcher: DepositWatcher
    sender: Sender
    sweeper: Sweeper

    @property
    def runtime(self) -> CustodyRuntime:
        assert self.service.custody is not None
        return self.service.custody

    @property
    def withdrawals(self) -> Withdrawals:
        assert self.service.withdrawals is not None
        return self.service.withdrawals

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.service.database

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        assert self.service.port is not None
        return self.service.port.view.balance(user, asset)

    async def user(self) -> int:
        now = int(time.time() * 1000)
        email = f"{os.urandom(4).hex()}@example.test"
        async with self.db.begin() as connection:
            result = await connection.execute(
                insert(users).values(
                    email=email, email_skeleton=email, password_hash="-", role="user",
                    email_verified_at=now, created_at=now, updated_at=now,
                )
            )  # fmt: skip
        return int(result.inserted_primary_key[0])

    def send_usdc(self, owner: str, amount: int) -> str:
        """A TransferChecked from the outside wallet to ``owner``'s token account (made
        in the same transaction when missing, as wallets do)."""
        to = Pubkey.from_string(owner)
        create = create_associated_token_account_idempotent(self.outside.pubkey(), to, self.mint)
        move = self.ledger.token_transfer_instruction(self.outside, self.mint, to, amount, 6)
        return self.ledger.send([create, move], [self.outside])

    async def watch_until(self, done, blocks: int = 10) -> None:  # type: ignore[no-untyped-def]
        """Produce a block and run a watcher pass until ``done()``."""
        for _ in range(blocks):
            self.ledger.produce_block()
            await self.watcher.run_once()
            if await done():
                return
        raise AssertionError("not done within the blocks produced")

    async def send_until_completed(self, *outgoing_refs: str, blocks: int = 10) -> None:
        """Recovery and a sender pass, then a block, until every outgoing of
        ``outgoing_refs`` is COMPLETED."""
        for _ in range(blocks):
            await self.withdrawals.recover()
            await self.sender.run_once()
            self.ledger.produce_block()
            await self.watcher.run_once()
            statuses = await self.outgoing_statuses(*outgoing_refs)
            if statuses and all(status == "COMPLETED" for status in statuses):
                await self.sender.run_once()  # the engine settles the holds
                return
        raise AssertionError(f"not completed: {await self.outgoing_statuses(*outgoing_refs)}")

    async def outgoing_statuses(self, *refs: str) -> list[str]:
        o = custody_outgoing.c
        async with self.db.connect() as connection:
            rows = await connection.execute(select(o.status).where(o.ref.in_(refs)))
            return [status for (status,) in rows]

    async def reconciled(self) -> dict[str, AssetReconciliation]:
        assert self.service.port is not None
        view = self.service.port.view
        totals = engine_totals({s: view.asset_totals(s) for s in ("SOL", "USDC")})  # type: ignore[attr-defined]
        reports = await reconcile(
            self.db, self.runtime.adapters, self.runtime.config, {"SOL": 8, "USDC": 8}, totals
        )
        return {report.asset: report for report in reports}


def custody_toml(mint: Pubkey, start: int) -> str:
    return f"""
[custody]
address_cooloff_seconds = 0

[[custody.chains]]
name = "solana"
kind = "solana"
rpc_url = "litesvm://"
confirmations = 2
start_height = {start}  # LiteSVM starts at a recent cluster slot
poll_seconds = 0.05

[[custody.assets]]
symbol = "SOL"
chain = "solana"
chain_decimals = 9

[[custody.assets]]
symbol = "USDC"
chain = "solana"
chain_decimals = 6
contract = "{mint}"
"""


@asynccontextmanager
async def world(url: str, tmp_path: Path) -> AsyncIterator[World]:
    ledger = LiteSvmLedger()
    issuer, outside = Keypair(), Keypair()
    ledger.airdrop(str(issuer.pubkey()), 10 * LAMPORTS)
    ledger.airdrop(str(outside.pubkey()), 100 * LAMPORTS)
    mint = ledger.create_mint(issuer, decimals=6)
    ledger.mint_to(mint, issuer, outside.pubkey(), 10_000 * USDC_UNIT)
    ledger.produce_block()
    config_path = tmp_path / "mercato.toml"
    config_path.write_text(custody_toml(mint, ledger.blocks[-1].slot))
    config = load_config(config_path, env={"DATABASE_URL": url}, data_dir=str(tmp_path / "data"))
    config.custody.run_in_serve = False  # the test runs each worker's pass itself
    setup = create_engine(url)
    try:
        await init_seed(setup, MASTER_KEY)
    finally:
        await setup.dispose()
    service = ExchangeService(config, env={"MERCATO_MASTER_KEY": MASTER_KEY.hex()})
    chain = config.custody.chain("solana")
    adapter = SolanaAdapter("solana", ledger, chain_assets(config.custody.assets))
    service.custody_adapters["solana"] = adapter  # the runtime keeps it (setdefault)
    await service.start()
    try:
        runtime = service.custody
        assert runtime is not None and runtime.available
        assert runtime.adapters["solana"] is adapter
        assert service.port is not None and service.projection is not None
        signer = runtime.signer
        assert signer is not None and service.database is not None
        assets = [WatchedAsset(a, 8) for a in runtime.assets_of("solana")]
        watcher = DepositWatcher(
            service.database, adapter, chain, assets, service.port, service.projection, signer
        )
        sender = Sender(service.database, service.port, config.custody, runtime.adapters, signer)
        sweeper = Sweeper(
            service.database, adapter, signer, chain, runtime.assets_of("solana"),
            create_outgoing,
        )  # fmt: skip
        yield World(ledger, adapter, service, issuer, outside, mint, watcher, sender, sweeper)
    finally:
        await service.stop()


@pytest.fixture(autouse=True)
def _no_gc_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "tune_gc", lambda: None)


async def deposit_rows(w: World) -> list[tuple[str, str, str, str]]:
    d = custody_deposits.c
    async with w.db.connect() as connection:
        rows = await connection.execute(
            select(d.asset, d.status, d.amount_chain, d.dust_chain).order_by(d.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_deposits_withdrawals_expiry_sweep_and_reconciliation(
    migrated: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with world(migrated, tmp_path) as w:
            await deposits_are_credited_once(w)
            await withdrawals_land_and_complete(w)
            await an_expired_blockhash_is_resigned(w)
            await a_sol_sweep_reaches_the_hot_wallet(w)

    asyncio.run(scenario())


SOL_DEPOSIT = 1_234_567_891  # lamports: 123456789 ledger atoms and 1 lamport of dust
USDC_DEPOSIT = 250_500_000  # 250.5 USDC


async def deposits_are_credited_once(w: World) -> None:
    user = await w.user()
    assert w.service.deposits is not None
    sol_address = (await w.service.deposits.address(user, "SOL")).address
    usdc_address = (await w.service.deposits.address(user, "USDC")).address
    assert sol_address == usdc_address  # one Solana wallet; USDC lands in its token account
    w.ledger.transfer_sol(w.outside, Pubkey.from_string(sol_address), SOL_DEPOSIT)
    w.send_usdc(usdc_address, USDC_DEPOSIT)
    w.ledger.produce_block()
    await w.watcher.run_once()
    assert w.balance(user, "SOL") == (0, 0)  # one block deep: not confirmed yet

    async def credited() -> bool:
        return w.balance(user, "SOL")[0] > 0 and w.balance(user, "USDC")[0] > 0

    await w.watch_until(credited)
    for _ in range(3):  # more blocks and passes credit nothing twice
        w.ledger.produce_block()
        await w.watcher.run_once()
    assert w.balance(user, "SOL") == (123_456_789, 0)
    assert w.balance(user, "USDC") == (25_050_000_000, 0)
    assert sorted(await deposit_rows(w)) == [
        ("SOL", "CREDITED", str(SOL_DEPOSIT), "1"),
        ("USDC", "CREDITED", str(USDC_DEPOSIT), "0"),
    ]
    w.user_id = user  # type: ignore[attr-defined]
    w.deposit_address = sol_address  # type: ignore[attr-defined]


HOT_SOL = 5 * LAMPORTS
HOT_USDC = 1_000 * USDC_UNIT


async def fund_hot_wallet(w: World) -> str:
    """The hot wallet's SOL (fees, rent) and USDC come from outside: TREASURY deposits."""
    signer = w.runtime.signer
    assert signer is not None
    hot = await hot_address(w.db, signer, "solana", "solana")
    w.ledger.transfer_sol(w.outside, Pubkey.from_string(hot), HOT_SOL)
    w.send_usdc(hot, HOT_USDC)

    async def recorded() -> bool:
        return sum(row[1] == "TREASURY" for row in await deposit_rows(w)) == 2

    await w.watch_until(recorded)
    return hot


async def withdrawals_land_and_complete(w: World) -> None:
    user: int = w.user_id  # type: ignore[attr-defined]
    hot = await fund_hot_wallet(w)
    recipient = str(Keypair().pubkey())  # no token account yet: the withdrawal makes it
    await w.withdrawals.add_address(user, "SOL", recipient, "", None)  # usable now (cooloff 0)
    sol = await w.withdrawals.request(user, "SOL", "0.5", recipient, None)
    usdc = await w.withdrawals.request(user, "USDC", "100.25", recipient, None)
    hot_before = await w.adapter.balance(hot, w.adapter.assets[0])
    await w.send_until_completed(sol.withdrawal_id, usdc.withdrawal_id)

    assert await w.ledger.get_balance(recipient) == LAMPORTS // 2
    usdc_asset = w.adapter.assets[1]
    assert await w.adapter.balance(recipient, usdc_asset) == 100_250_000
    assert await w.adapter.balance(hot, usdc_asset) == HOT_USDC - 100_250_000
    w_ = custody_withdrawals.c
    async with w.db.connect() as connection:
        statuses = dict(
            (await connection.execute(select(w_.asset, w_.status).where(w_.user_id == user))).all()
        )
        fees = [
            int(fee)
            for (fee,) in await connection.execute(select(custody_outgoing.c.fee_paid_chain))
        ]
    assert statuses == {"SOL": "COMPLETED", "USDC": "COMPLETED"}
    # The ledger: 1.23456789 SOL deposited, 0.5 withdrawn (no withdrawal fee configured).
    assert w.balance(user, "SOL") == (73_456_789, 0)
    assert w.balance(user, "USDC") == (25_050_000_000 - 10_025_000_000, 0)
    # The hot wallet paid the SOL, the base fees and the new token account's rent, all
    # of it in fee_paid_chain (what the reconciliation subtracts).
    hot_after = await w.adapter.balance(hot, w.adapter.assets[0])
    rent = int(w.ledger.svm.minimum_balance_for_rent_exemption(165))
    assert sorted(fees) == [5_000, 5_000 + rent]
    assert hot_before - hot_after == LAMPORTS // 2 + sum(fees)
    assert_balanced(await w.reconciled())


def assert_balanced(reports: dict[str, AssetReconciliation]) -> None:
    for report in reports.values():
        assert report.balanced, report.as_dict()


async def an_expired_blockhash_is_resigned(w: World) -> None:
    """The first attempt's blockhash expires between signing and the broadcast (a block
    produced as it is sent): the node refuses it, the sender sees it can no longer land
    and signs a replacement with a fresh blockhash, which lands once."""
    user: int = w.user_id  # type: ignore[attr-defined]
    recipient = str(Keypair().pubkey())
    original = w.ledger.send_raw
    expired: list[bytes] = []

    async def late_send(raw: bytes) -> str:
        if not expired:
            expired.append(raw)
            w.ledger.produce_block()  # the blockhash this was signed with is gone
        return await original(raw)

    w.ledger.send_raw = late_send  # type: ignore[method-assign]
    try:
        await w.withdrawals.add_address(user, "SOL", recipient, "", None)
        request = await w.withdrawals.request(user, "SOL", "0.1", recipient, None)
        await w.send_until_completed(request.withdrawal_id)
    finally:
        w.ledger.send_raw = original  # type: ignore[method-assign]
    assert expired
    a = custody_attempts.c
    o = custody_outgoing.c
    async with w.db.connect() as connection:
        attempts = (
            await connection.execute(
                select(a.txid, a.recent_blockhash)
                .join(custody_outgoing, o.id == a.outgoing_id)
                .where(o.ref == request.withdrawal_id)
                .order_by(a.id)
            )
        ).all()
    assert len(attempts) == 2 and attempts[0].recent_blockhash != attempts[1].recent_blockhash
    statuses = [await w.ledger.get_signature_status(attempt.txid) for attempt in attempts]
    assert statuses[0] is None and statuses[1] is not None and statuses[1].err is None
    assert await w.ledger.get_balance(recipient) == LAMPORTS // 10  # once
    assert_balanced(await w.reconciled())


async def a_sol_sweep_reaches_the_hot_wallet(w: World) -> None:
    """The deposit address's SOL (less the fee) goes to the hot wallet; its USDC stays
    (SPL sweeps need a separate fee payer: not supported yet)."""
    deposit: str = w.deposit_address  # type: ignore[attr-defined]
    swept = await w.sweeper.run_once()
    assert list(swept.created) == ["SWEEP"] and len(swept.created["SWEEP"]) == 1
    await w.send_until_completed(*swept.created["SWEEP"])
    assert await w.ledger.get_balance(deposit) == 0
    assert await w.adapter.balance(deposit, w.adapter.assets[1]) == USDC_DEPOSIT
    assert_balanced(await w.reconciled())
    again = await w.sweeper.run_once()  # nothing left to sweep
    assert not again.created
