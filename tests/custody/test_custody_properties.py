"""A property of custody as a whole: random interleavings of deposits (ETH with sub-atom
wei dust, USDT), reorgs (shallower than the confirmations, and deeper: credited deposits
REVERSED), trades, withdrawals, worker passes, kills in the middle of a pass (at a chain
call, or right after the engine answered) and a node going down keep reconciliation
exact.

Each example is a list of steps run by one asyncio scenario on a fresh exchange: the real
engine behind the in-process port with the SQL store on SQLite and its projector
(``ExchangeService``), the real DepositWatcher, Withdrawals, Sender and Sweeper over the
in-memory FakeChain. At quiescent points (node up, workers run until nothing is left in
flight, blocks mined) it checks:

- every asset's reconciliation surplus is exactly minus the credits of REVERSED deposits
  (0 when no deep reorg happened), to the fine unit;
- the engine's own invariants (``core.invariants.check_engine``);
- every transfer to a deposit address still on chain and big enough is credited, once,
  with the amount the chain carried (less the dust); ``deposit_credits`` has one row per
  credit, and nothing that is not (or no longer) on chain is CREDITED;
- every withdrawal ended with its hold settled (COMPLETED) or released (FAILED,
  REJECTED) exactly once, the engine holds nothing, and at most one attempt of each
  outgoing transfer is mined.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.desk import HOT, TestSigner
from custody.fakechain import FakeChain
from mercato import service as service_module
from mercato.application.withdrawals import WithdrawalError, Withdrawals
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig, load_config
from mercato.core.commands import Command, PlaceOrder, UpsertAsset, UpsertMarket
from mercato.core.invariants import check_engine
from mercato.core.model import MarketSpec
from mercato.core.money import format_amount
from mercato.core.results import Result
from mercato.custody.addresses import deposit_address
from mercato.custody.chains.base import ChainAsset, ChainUnavailable
from mercato.custody.reconcile import engine_totals, reconcile
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.sweeper import Sweeper
from mercato.custody.units import fine_unit_scale, split_deposit
from mercato.custody.watcher import DepositWatcher, WatchedAsset
from mercato.service import ExchangeService
from mercato.store import sqlite_url
from mercato.store.tables import (
    custody_address_book,
    custody_attempts,
    custody_deposits,
    custody_outgoing,
    custody_withdrawals,
    deposit_credits,
    users,
)

CONFIRMATIONS = 3
USERS = 3
TO = "0xdest"
MARKET = "ETH-USDT"
ATOM_WEI = 10**10  # wei per ledger atom of ETH (18 decimals on chain, 8 in the ledger)
MASTER_KEY = bytes(range(32))
ETH_CONFIG = CustodyAssetConfig(
    symbol="ETH", chain="fake", chain_decimals=18, min_deposit="0.001", withdrawal_fee="0.001",
    min_withdrawal="0.01", daily_limit="", approval_threshold="", sweep_threshold="0.05",
)  # fmt: skip
USDT_CONFIG = CustodyAssetConfig(
    symbol="USDT", chain="fake", chain_decimals=6, contract="0xusdt", min_deposit="1",
    withdrawal_fee="1", min_withdrawal="5", daily_limit="", approval_threshold="",
    sweep_threshold="50",
)  # fmt: skip
CHAIN = CustodyChainConfig(
    name="fake", kind="evm", rpc_url="memory://", confirmations=CONFIRMATIONS, start_height=1,
    scan_batch=4, stuck_seconds=3600,
)  # fmt: skip
CUSTODY = CustodyConfig(address_cooloff_seconds=0, chains=[CHAIN],
                        assets=[ETH_CONFIG, USDT_CONFIG])  # fmt: skip
SPEC = MarketSpec(MARKET, "ETH", "USDT", "0.01", "0.001", "0.001", "100", "1")
SIGNER = TestSigner()


class Killed(Exception):
    """The process died here (raised by the kill switch at its chosen call)."""


@dataclass
class KillSwitch:
    """Counts the calls workers make to the chain and the engine; armed with ``after``,
    the call that many later raises Killed: a chain call before it happens, an engine
    command after the engine applied it (the answer lost with the process)."""

    after: int | None = None

    def tick(self) -> None:
        if self.after is None:
            return
        self.after -= 1
        if self.after <= 0:
            self.after = None
            raise Killed


class KillableChain:
    """The FakeChain as the workers see it, with the kill switch on every async call."""

    def __init__(self, chain: FakeChain, switch: KillSwitch) -> None:
        self._chain = chain
        self._switch = switch
        self.name, self.kind, self.uses_nonces = chain.name, chain.kind, chain.uses_nonces
        self.normalize_address = chain.normalize_address

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._chain, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._switch.tick()
            return await method(*args, **kwargs)

        return call


class KillablePort:
    """The exchange's port with the kill switch after each command's answer."""

    def __init__(self, port: Any, switch: KillSwitch) -> None:
        self._port = port
        self._switch = switch
        self.view = port.view

    @property
    def last_seq(self) -> int:
        return int(self._port.last_seq)

    async def submit(self, cmd: Command) -> Result:
        result: Result = await self._port.submit(cmd)
        self._switch.tick()
        return result

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        results: list[Result] = await self._port.submit_many(commands)
        self._switch.tick()
        return results

    def subscribe(self, listener: Any) -> None:
        self._port.subscribe(listener)


@dataclass
class Workers:
    """What a process holds besides the store and the engine: rebuilt by a crash."""

    watcher: DepositWatcher
    sender: Sender
    sweeper: Sweeper
    withdrawals: Withdrawals


@dataclass
class World:
    service: ExchangeService
    chain: FakeChain
    switch: KillSwitch = field(default_factory=KillSwitch)
    addresses: dict[int, str] = field(default_factory=dict)
    deposits: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # txid -> to, asset
    workers: Workers | None = None
    kills: int = 0

    @property
    def db(self) -> Any:
        return self.service.database

    @property
    def engine(self) -> Any:
        assert self.service.sequencer is not None
        return self.service.sequencer.engine

    def fresh_workers(self) -> Workers:
        """New worker objects: all they know comes from the store and the engine."""
        adapter: Any = KillableChain(self.chain, self.switch)
        port: Any = KillablePort(self.service.port, self.switch)
        view = self.service.port.view  # type: ignore[union-attr]
        assets = [WatchedAsset(a, view.asset(a.symbol).decimals) for a in CUSTODY.assets]
        adapters = {"fake": adapter}
        self.workers = Workers(
            DepositWatcher(self.db, adapter, CHAIN, assets, port, self.service.projection,
                           SIGNER),  # type: ignore[arg-type]
            Sender(self.db, port, CUSTODY, adapters, SIGNER),
            Sweeper(self.db, adapter, SIGNER, CHAIN, CUSTODY.assets, create_outgoing),
            Withdrawals(self.db, port, CUSTODY, adapters, MASTER_KEY),
        )  # fmt: skip
        return self.workers

    async def run_worker(self, which: str) -> None:
        """One pass of one worker; a kill drops every worker object (a restart)."""
        workers = self.workers or self.fresh_workers()
        try:
            if which == "watcher":
                await workers.watcher.run_once()
            elif which == "sender":
                await workers.withdrawals.recover()  # the sender loop's before_pass
                await workers.sender.run_once()
            else:
                await workers.sweeper.run_once()
        except ChainUnavailable:
            pass  # the node went down mid-pass: the runtime's loop logs it, retries later
        except Killed:
            self.kills += 1
            self.fresh_workers()

    def balance(self, user: int, asset: str) -> int:
        return int(self.service.port.view.balance(user, asset)[0])  # type: ignore[union-attr]

    async def rows(self, query: Any) -> list[Any]:
        async with self.db.connect() as connection:
            return list((await connection.execute(query)).all())


# ---------------------------------------------------------------------------- steps
# Each step is a tuple; its first item names it. Values are drawn small and bounded so
# that an example stays well under a second.

user_ids = st.integers(1, USERS)
deposit_step = st.one_of(
    st.tuples(st.just("deposit"), user_ids, st.just("ETH"),
              st.integers(10**14, 3 * 10**18), st.integers(0, 4)),  # wei: dust, some too small
    st.tuples(st.just("deposit"), user_ids, st.just("USDT"),
              st.integers(5 * 10**5, 5000 * 10**6), st.integers(0, 4)),
)  # fmt: skip
STEPS = st.one_of(
    deposit_step,
    st.tuples(st.just("mine"), st.integers(1, 4)),
    st.tuples(st.just("reorg"), st.integers(1, CONFIRMATIONS - 1)),
    st.tuples(st.just("deep_reorg"), st.integers(CONFIRMATIONS, CONFIRMATIONS + 3)),
    st.tuples(st.just("trade"), user_ids, user_ids, st.integers(1, 20), st.integers(500, 3000)),
    st.tuples(
        st.just("withdraw"), user_ids, st.sampled_from(["ETH", "USDT"]), st.floats(0.05, 1.0)
    ),
    st.tuples(st.just("work"), st.sampled_from(["watcher", "sender", "sweeper"])),
    st.tuples(
        st.just("crash"), st.sampled_from(["watcher", "sender", "sweeper"]), st.integers(1, 12)
    ),
    st.tuples(st.just("node"), st.booleans()),
    st.tuples(
        st.just("settle"),
    ),
)


async def step(world: World, action: tuple[Any, ...]) -> None:
    kind = action[0]
    chain = world.chain
    if kind == "deposit":
        _, user, asset, amount, blocks = action
        txid = chain.fund(world.addresses[user], asset, amount)
        world.deposits[txid] = (world.addresses[user], asset, amount)
        chain.mine(blocks)
    elif kind == "mine":
        chain.mine(action[1])
    elif kind == "reorg":
        chain.reorg(min(action[1], len(chain.blocks) - 2))
    elif kind == "deep_reorg":
        depth = min(action[1], len(chain.blocks) - 2)
        # The FakeChain forgets what a reorg drops; a real node puts our own signed
        # transfers back in its mempool. Deep reorgs that would drop one of ours are out of
        # this model: only blocks of external transfers go.
        if depth > 0 and all(tx.nonce is None for b in chain.blocks[-depth:] for tx in b.txs):
            chain.reorg(depth)
    elif kind == "trade":
        await trade(world, *action[1:])
    elif kind == "withdraw":
        await withdraw(world, *action[1:])
    elif kind == "work":
        await world.run_worker(action[1])
    elif kind == "crash":
        _, which, after = action
        world.switch.after = after
        await world.run_worker(which)
        world.switch.after = None
        world.fresh_workers()  # the pass may have ended before the kill: restart anyway
    elif kind == "node":
        chain.down = action[1]
    elif kind == "settle":
        await quiesce(world)
        await check_invariants(world)


async def trade(world: World, seller: int, buyer: int, lots: int, price: int) -> None:
    """A crossing pair on the market: the sell rests, the buy takes it (either may be
    refused for funds; a resting remainder stays in the book, locked)."""
    port = world.service.port
    assert port is not None
    for user, side in ((seller, "SELL"), (buyer, "BUY")):
        await port.submit(PlaceOrder(user, MARKET, side, "LIMIT", lots, price))  # type: ignore[arg-type]


async def withdraw(world: World, user: int, asset: str, share: float) -> None:
    """A withdrawal of ``share`` of what the user can afford (whole chain units)."""
    config = ETH_CONFIG if asset == "ETH" else USDT_CONFIG
    fee = 10**5 if asset == "ETH" else 10**8
    grain = 1 if asset == "ETH" else 100  # USDT: 6 decimals on chain, 8 in the ledger
    amount = int((world.balance(user, asset) - fee) * share) // grain * grain
    if amount <= 0:
        return
    withdrawals = (world.workers or world.fresh_workers()).withdrawals
    try:
        await withdrawals.request(user, config.symbol, format_amount(amount, 8), TO, None)
    except WithdrawalError:
        pass  # below the minimum, held after a reversal, ...: nothing held, nothing written
    except Killed:
        world.kills += 1
        world.fresh_workers()


# ---------------------------------------------------------------------------- checks


async def quiesce(world: World) -> None:
    """Node up, no kills: mine and run every worker until nothing is left in flight."""
    world.chain.down = False
    world.switch.after = None
    for _ in range(12):
        world.chain.mine(CONFIRMATIONS)
        for which in ("watcher", "sender", "sweeper", "sender", "watcher"):
            await world.run_worker(which)
        if not world.chain.mempool and not await unfinished(world):
            return
    raise AssertionError(f"not quiescent: {await unfinished(world)}, {world.chain.mempool}")


async def unfinished(world: World) -> list[Any]:
    d, o, w = custody_deposits.c, custody_outgoing.c, custody_withdrawals.c
    return [
        *await world.rows(sa.select(d.external_id, d.status)
                          .where(d.status.in_(("PENDING", "CONFIRMED")))),
        *await world.rows(sa.select(o.ref, o.status).where(o.status.in_(("SIGNED", "BROADCAST")))),
        *await world.rows(sa.select(w.withdrawal_id, w.status, w.hold_state)
                          .where(w.hold_state.in_(("PENDING", "HELD")))),
    ]  # fmt: skip


async def check_invariants(world: World) -> None:
    # deposit_credits is the projector's (a child process): read it once it holds
    # every command the engine acknowledged, as the watcher does.
    assert world.service.projection is not None
    await world.service.projection.caught_up()
    check_engine(world.engine)
    await check_deposits(world)
    await check_withdrawals(world)
    await check_reconciliation(world)


async def check_deposits(world: World) -> None:
    chain = world.chain
    credits = await world.rows(sa.select(deposit_credits))
    ids = Counter(row.external_id for row in credits)
    assert all(n == 1 for n in ids.values()), f"credited twice: {ids}"
    rows = {row.external_id: row for row in await world.rows(sa.select(custody_deposits))}
    users_by_address = {address: user for user, address in world.addresses.items()}
    for credit in credits:
        row = rows[credit.external_id]
        to, asset, amount = world.deposits[row.txid]
        atoms, dust = split_deposit(amount, 18 if asset == "ETH" else 6, 8)
        assert (credit.user_id, credit.asset, credit.amount) == (users_by_address[to], asset,
                                                                 atoms), credit  # fmt: skip
        assert (row.status, int(row.dust_chain)) in (("CREDITED", dust), ("REVERSED", dust)), row
        assert (row.status == "CREDITED") == (row.txid in chain.mined), row
    for txid, (_to, asset, amount) in world.deposits.items():
        atoms, _ = split_deposit(amount, 18 if asset == "ETH" else 6, 8)
        big_enough = atoms >= (10**5 if asset == "ETH" else 10**8)
        external_id = f"fake:{txid}:0"
        if txid in chain.mined and big_enough:
            assert ids[external_id] == 1 and rows[external_id].status == "CREDITED", txid
        if txid not in chain.mined:
            assert external_id not in rows or rows[external_id].status in ("DROPPED", "REVERSED")


async def check_withdrawals(world: World) -> None:
    assert world.engine.withdrawals == {}, f"holds left: {world.engine.withdrawals}"
    ends = {"COMPLETED": ("SETTLED",), "FAILED": ("RELEASED",), "REJECTED": ("NONE", "RELEASED"),
            "CANCELED": ("RELEASED",)}  # fmt: skip
    rows = await world.rows(sa.select(custody_withdrawals))
    for row in rows:
        assert row.hold_state in ends.get(row.status, ()), (row.withdrawal_id, row.status,
                                                             row.hold_state)  # fmt: skip
    # Settled exactly once: what left the ledger is what the COMPLETED ones sent.
    for asset in ("ETH", "USDT"):
        sent = sum(row.amount for row in rows if row.asset == asset and row.status == "COMPLETED")
        left = world.engine.total_balances().get(asset, {}).get("external_withdrawals", 0)
        assert left == sent, (asset, left, sent)
    attempts = await world.rows(sa.select(custody_attempts.c.outgoing_id, custody_attempts.c.txid))
    mined = Counter(a.outgoing_id for a in attempts if a.txid in world.chain.mined)
    assert all(n == 1 for n in mined.values()), f"an outgoing transfer mined twice: {mined}"
    for row in await world.rows(sa.select(custody_outgoing)):
        assert (row.status == "COMPLETED") == (mined[row.id] == 1), (row.kind, row.ref, row.status)


async def check_reconciliation(world: World) -> None:
    reversed_rows = await world.rows(
        sa.select(custody_deposits.c.asset, custody_deposits.c.amount)
        .where(custody_deposits.c.status == "REVERSED")
    )  # fmt: skip
    ledger = engine_totals(world.engine.total_balances())
    reports = await reconcile(world.db, {"fake": world.chain}, CUSTODY, {"ETH": 8, "USDT": 8},
                              ledger)  # fmt: skip
    for report in reports:
        config = ETH_CONFIG if report.asset == "ETH" else USDT_CONFIG
        _, atom_scale = fine_unit_scale(config.chain_decimals, 8)
        deficit = sum(r.amount for r in reversed_rows if r.asset == report.asset) * atom_scale
        assert report.surplus == -deficit, (report.asset, report.surplus, -deficit,
                                            dict(report.components))  # fmt: skip


# ---------------------------------------------------------------------------- the world


async def open_world(directory: Path) -> World:
    url = sqlite_url(directory / "store.db")
    config = load_config(env={"DATABASE_URL": url}, data_dir=str(directory / "data"))
    service = ExchangeService(config, env={})
    await service.start()
    chain = FakeChain("fake", (ChainAsset("ETH", "", 18), ChainAsset("USDT", "0xusdt", 6)))
    chain.mine(2)
    world = World(service, chain)
    port = service.port
    assert port is not None
    for symbol in ("ETH", "USDT"):
        if port.view.asset(symbol) is None:
            assert (await port.submit(UpsertAsset(symbol, 8))).status == "ACCEPTED"
    if not port.view.has_market(MARKET):
        assert (await port.submit(UpsertMarket(SPEC))).status == "ACCEPTED"
    async with world.db.begin() as connection:
        for _ in range(USERS):
            email = f"{secrets.token_hex(6)}@example.test"
            await connection.execute(users.insert().values(
                email=email, email_skeleton=email, password_hash="-", role="user",
                email_verified_at=0, created_at=0, updated_at=0))  # fmt: skip
    for user in range(1, USERS + 1):
        world.addresses[user] = await deposit_address(world.db, SIGNER, "evm", "fake", user)
        async with world.db.begin() as connection:
            await connection.execute(
                custody_address_book.insert().values(
                    user_id=user, chain="fake", address=TO, label="", created_at=0, usable_at=0
                )
            )
    # Operator funds on the hot wallet (TREASURY) pay gas and the first withdrawals.
    chain.fund(HOT, "ETH", 50 * 10**18, sender="0xoperator")
    chain.fund(HOT, "USDT", 10**6 * 10**6, sender="0xoperator")
    chain.mine()
    world.fresh_workers()
    return world


def scenario(steps: list[tuple[Any, ...]]) -> World:
    async def main() -> World:
        with tempfile.TemporaryDirectory() as directory:
            world = await open_world(Path(directory))
            try:
                for action in steps:
                    await step(world, action)
                await quiesce(world)
                await check_invariants(world)
                return world
            finally:
                await world.service.stop()

    return asyncio.run(main())


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(st.lists(STEPS, min_size=4, max_size=30))
def test_any_interleaving_keeps_reconciliation_exact(steps: list[tuple[Any, ...]]) -> None:
    with mock.patch.object(service_module, "tune_gc", lambda: None):  # process-wide: not here
        scenario(steps)
