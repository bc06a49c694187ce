"""The projector: a generated flow (plus every order feature, withdrawals, a duplicate
deposit and a GTD expiry carried by a rejected command) is driven through a sequencer
with the projector listening, and the tables are checked against the engine and a plain
recomputation from the events: orders, trades, fills, ledger entries and balances,
candles, cursor. Then exactly once: restarts part way, a cancelled transaction, failing
and lost commits, gaps in the live stream, two projectors on one cursor. On SQLite and
PostgreSQL (``database_url``)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.core.candles import INTERVALS, Candle, fold, merge
from mercato.core.commands import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    Command,
    CreditDeposit,
    FreezeUser,
    HoldWithdrawal,
    PlaceOrder,
    ReleaseWithdrawal,
    SettleWithdrawal,
    Tick,
    UnfreezeUser,
    UpsertAsset,
    UpsertMarket,
)
from mercato.core.engine import Engine
from mercato.core.events import (
    DepositCredited,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
)
from mercato.core.ledger import postings
from mercato.core.model import ACCOUNT_NAMES, LOCKED, REASON_NAMES, MarketSpec
from mercato.core.positions import Position
from mercato.core.results import Result
from mercato.flow import generate_flow
from mercato.journal import AppliedBatch, Sequencer
from mercato.store import create_engine
from mercato.store import tables as t
from mercato.store.projector import CursorConflictError, Projector

DAY_MS = 86_400_000
# Seven minutes before midnight UTC: the steps cross every interval's boundary.
START_MS = 1_767_225_600_000 - 7 * 60_000
STEP_MS = 9_000
SOL_MARKET = MarketSpec("SOL-USDT", "SOL", "USDT", "0.01", "0.01", "0.01", "1000", "0")


class Clock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


def feature_steps() -> list[list[Command]]:
    """Every order feature on a market of its own (an empty book, so the outcome is
    known): iceberg, stops of both kinds, amends (kept priority and re-queued), a market
    buy by quote amount, FOK, self-trade prevention (expiry and DECREMENT), GTD expiry
    carried by a rejected command, withdrawals, a duplicate deposit, freeze with cancel,
    cancel-all."""
    sol = "SOL-USDT"
    return [
        [UpsertAsset("SOL", 8), UpsertMarket(SOL_MARKET)]
        + [CreditDeposit(u, "SOL", 10**12, f"sol:{u}") for u in (1, 2, 3, 4)]
        + [CreditDeposit(1, "SOL", 10**12, "sol:1")],  # DUPLICATE: no events
        # DECREMENT self-trade prevention on an empty book: the maker stays, smaller.
        [PlaceOrder(3, sol, "SELL", "LIMIT", 50, 1200, client_order_id="dec")],
        [
            PlaceOrder(
                3, sol, "BUY", "LIMIT", 20, 1200, "IOC", stp="DECREMENT", client_order_id="dectaker"
            )
        ],
        [
            PlaceOrder(
                1, sol, "SELL", "LIMIT", 100, 1000, client_order_id="ice", iceberg_quantity=10
            ),
            PlaceOrder(
                2, sol, "SELL", "STOP_LOSS_LIMIT", 5, 980, stop_price=990, client_order_id="stop1"
            ),
            PlaceOrder(3, sol, "BUY", "STOP_LOSS", 5, stop_price=1010, client_order_id="stopbuy"),
        ],
        [PlaceOrder(2, sol, "BUY", "LIMIT", 30, 1000, client_order_id="b1000")],
        [
            PlaceOrder(4, sol, "BUY", "LIMIT", 20, 990, client_order_id="b990"),
            PlaceOrder(3, sol, "SELL", "MARKET", 25, client_order_id="m25"),  # fires stop1
        ],
        [
            AmendOrder(1, client_order_id="ice", quantity=60),  # keeps priority
            AmendOrder(2, client_order_id="stop1", price=985),  # re-queued
        ],
        [PlaceOrder(4, sol, "BUY", "MARKET", quote_quantity=79_250_000, client_order_id="q")],
        [PlaceOrder(4, sol, "BUY", "LIMIT", 100, 1000, "FOK", client_order_id="fok")],
        [PlaceOrder(1, sol, "BUY", "LIMIT", 5, 1000, client_order_id="self")],  # STP
        [
            PlaceOrder(
                3, sol, "BUY", "LIMIT", 2, 900, "GTD", client_order_id="gtd", expire_at=0
            ),  # expire_at is set by the driver: now + 5 s
        ],
        [CancelOrder(3, order_id=10**9)],  # REJECTED, and carries the GTD expiry
        [
            CancelOrder(3, client_order_id="stopbuy"),
            HoldWithdrawal(1, "USDT", 1_000_000, "w1", fee=10_000),
            HoldWithdrawal(2, "SOL", 500, "w2"),
        ],
        [
            SettleWithdrawal("w1"),
            ReleaseWithdrawal("w2"),
            PlaceOrder(2, sol, "SELL", "LIMIT", 4, 1000, client_order_id="x"),
        ],
        [
            PlaceOrder(
                4, sol, "SELL", "TAKE_PROFIT_LIMIT", 3, 1001, stop_price=1002, client_order_id="tp"
            ),
            PlaceOrder(3, sol, "SELL", "LIMIT", 2, 1003, client_order_id="s1003"),
            PlaceOrder(1, sol, "BUY", "LIMIT", 2, 1003, client_order_id="b1003"),  # fires tp
        ],
        [FreezeUser(4, cancel_orders=True), UnfreezeUser(4), CancelAll(1)],
        [Tick()],
    ]


def scenario(seed: int, count: int, chunk: int = 40) -> list[list[Command]]:
    setup, flow = generate_flow(seed=seed, count=count, users=6)
    steps = [setup] + [flow[i : i + chunk] for i in range(0, len(flow), chunk)]
    return steps + feature_steps()


@dataclasses.dataclass
class Run:
    """What the sequencer did: every applied command with its result, and the engine."""

    engine: Engine
    applied: list[tuple[int, int, Result]] = dataclasses.field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.engine.last_seq

    def record(self, batch: AppliedBatch) -> None:
        for i, result in enumerate(batch.results):
            self.applied.append((batch.seq0 + i, batch.ts, result))


class Driver:
    """A sequencer on ``data_dir`` with a clock that moves ``STEP_MS`` per step."""

    def __init__(self, data_dir: Path, *, max_batch: int = 16, snapshot_every: int = 400):
        self.clock = Clock()
        self.sequencer = Sequencer(
            data_dir, max_batch=max_batch, snapshot_every=snapshot_every, clock=self.clock
        )
        self.run = Run(self.sequencer.engine)
        self.sequencer.listeners.append(self.run.record)

    def step(self, commands: list[Command]) -> None:
        self.clock.now += STEP_MS
        commands = [
            msgspec.structs.replace(c, expire_at=self.clock.now + 5_000)
            if isinstance(c, PlaceOrder) and c.time_in_force == "GTD"
            else c
            for c in commands
        ]
        self.sequencer.process(commands)

    async def steps(self, steps: list[list[Command]]) -> None:
        for commands in steps:
            self.step(commands)
            await asyncio.sleep(0)  # the projector drains while the flow goes on

    def close(self) -> None:
        self.sequencer.close()


# -- what the tables must hold ---------------------------------------------------------


def expected_orders(run: Run) -> dict[int, dict[str, Any]]:
    """Every order's row, recomputed in one pass over all events (no batching, no
    restarts), then cross-checked with the engine's open orders."""
    rows: dict[int, dict[str, Any]] = {}
    for seq, ts, result in run.applied:
        for event in result.events:
            if isinstance(event, OrderAccepted):
                rows[event.order_id] = {
                    "order_id": event.order_id, "user_id": event.user, "market": event.market,
                    "side": event.side, "type": event.type,
                    "time_in_force": event.time_in_force,
                    "client_order_id": event.client_order_id, "price": event.price,
                    "stop_price": event.stop_price, "quantity": event.quantity,
                    "iceberg_quantity": event.iceberg_quantity,
                    "quote_quantity": event.quote_quantity, "expire_at": event.expire_at,
                    "stp": event.stp, "status": event.status, "filled": 0, "filled_base": 0,
                    "filled_quote": 0, "fee": 0, "fee_asset": None, "reason": "",
                    "created_at": event.ts, "updated_at": ts, "triggered_at": None,
                    "created_seq": seq, "updated_seq": seq,
                }  # fmt: skip
            elif isinstance(event, OrderUpdated):
                rows[event.order_id].update(
                    status=event.status, filled=event.filled, quantity=event.quantity,
                    reason=event.reason, updated_at=ts, updated_seq=seq,
                )  # fmt: skip
            elif isinstance(event, OrderAmended):
                rows[event.order_id].update(
                    price=event.price, quantity=event.quantity, updated_at=ts, updated_seq=seq
                )
            elif isinstance(event, OrderTriggered):
                rows[event.order_id].update(
                    status="NEW", triggered_at=ts, updated_at=ts, updated_seq=seq
                )
            elif isinstance(event, Trade):
                buyer_gets, seller_gets = event.base, event.quote
                for order_id, fee, is_buyer in (
                    (event.maker_order_id, event.maker_fee, event.taker_side == "SELL"),
                    (event.taker_order_id, event.taker_fee, event.taker_side == "BUY"),
                ):
                    row = rows[order_id]
                    row["filled_base"] += event.base_amount
                    row["filled_quote"] += event.quote_amount
                    row["fee"] += fee
                    row["fee_asset"] = buyer_gets if is_buyer else seller_gets
                    row.update(updated_at=ts, updated_seq=seq)
    engine = run.engine
    open_ids = {order.order_id for order in engine.open_orders()}
    for order in engine.open_orders():  # the engine's own view of what is still open
        row = rows[order.order_id]
        assert (row["status"], row["price"], row["quantity"]) == (
            order.status, order.price, order.quantity,
        ), order.order_id  # fmt: skip
        # filled comes from the trades (an open order's fills emit no OrderUpdated)
        row["filled"] = order.filled
    for order_id, row in rows.items():
        assert (order_id in open_ids) == (row["status"] in t.OPEN_ORDER_STATUSES), order_id
        market = engine.markets[row["market"]]
        assert row["filled_base"] == row["filled"] * market.lot_atoms, order_id
    return rows


def expected_trades(run: Run) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    trades: list[tuple[Any, ...]] = []
    fills: list[tuple[Any, ...]] = []
    for seq, _ts, result in run.applied:
        for e in result.events:
            if isinstance(e, Trade):
                trades.append(
                    (e.trade_id, e.market, e.price, e.quantity, e.base_amount, e.quote_amount,
                     e.taker_side, e.maker_order_id, e.taker_order_id, e.ts, seq)
                )  # fmt: skip
                buy = e.taker_side == "BUY"
                fills.append(
                    (e.maker_user, e.trade_id, e.maker_order_id, e.market,
                     "SELL" if buy else "BUY", "MAKER", e.price, e.quantity, e.base_amount,
                     e.quote_amount, e.maker_fee, e.quote if buy else e.base, e.ts, seq)
                )  # fmt: skip
                fills.append(
                    (e.taker_user, e.trade_id, e.taker_order_id, e.market, e.taker_side,
                     "TAKER", e.price, e.quantity, e.base_amount, e.quote_amount, e.taker_fee,
                     e.base if buy else e.quote, e.ts, seq)
                )  # fmt: skip
    return trades, fills


def expected_positions(fills: list[tuple[Any, ...]]) -> dict[tuple[int, str], tuple[int, ...]]:
    held: dict[tuple[int, str], Position] = {}
    seqs: dict[tuple[int, str], int] = {}
    for user, _, _, market, side, _, _, _, base, quote, fee, _, _, seq in fills:
        held.setdefault((user, market), Position()).add(side, base, quote, fee)
        seqs[(user, market)] = seq
    return {key: (p.quantity, p.cost, p.realised, seqs[key]) for key, p in held.items()}


def expected_candles(run: Run) -> dict[tuple[str, str, int], Candle]:
    """Every trade folded into every interval, in one pass."""
    current: dict[tuple[str, str], Candle] = {}
    out: dict[tuple[str, str, int], Candle] = {}
    for _seq, _ts, result in run.applied:
        for event in result.events:
            if isinstance(event, Trade):
                for interval in INTERVALS:
                    candle = fold(current.get((event.market, interval)), event, interval)
                    current[(event.market, interval)] = candle
                    out[(event.market, interval, candle.open_time)] = candle
    return out


async def fetch(connection: AsyncConnection, query: Any) -> list[Any]:
    return list((await connection.execute(query)).all())


async def table_rows(url: str) -> dict[str, list[Any]]:
    db = create_engine(url)
    try:
        async with db.connect() as c:
            return {
                "orders": await fetch(c, sa.select(t.orders).order_by(t.orders.c.order_id)),
                "trades": await fetch(c, sa.select(t.trades).order_by(t.trades.c.trade_id)),
                "fills": await fetch(c, sa.select(t.fills).order_by(t.fills.c.id)),
                "entries": await fetch(
                    c, sa.select(t.ledger_entries).order_by(t.ledger_entries.c.id)
                ),
                "balances": await fetch(c, sa.select(t.ledger_balances)),
                "positions": await fetch(c, sa.select(t.positions)),
                "candles": await fetch(c, sa.select(t.candles)),
                "cursor": await fetch(c, sa.select(t.projection_cursor)),
                "deposit_credits": await fetch(
                    c, sa.select(t.deposit_credits).order_by(t.deposit_credits.c.seq)
                ),
            }
    finally:
        await db.dispose()


def check_projection(url: str, run: Run) -> dict[str, list[Any]]:
    """The tables hold exactly the effects of every command of ``run``: nothing missing,
    nothing twice."""
    tables = asyncio.run(table_rows(url))
    engine = run.engine

    # orders: every order once, as recomputed
    orders = {row.order_id: row._asdict() for row in tables["orders"]}
    assert len(orders) == len(tables["orders"])
    assert orders == expected_orders(run)

    # the trade tape and the fills, in stream order (ids increase with it)
    trades, fills = expected_trades(run)
    assert [tuple(r) for r in tables["trades"]] == trades
    assert [tuple(r)[1:] for r in tables["fills"]] == fills  # without the id
    assert len({(r.trade_id, r.role) for r in tables["fills"]}) == 2 * len(trades)
    # an order's filled amounts are the sum of its fills; per user the fills' amounts
    # match the ledger's TRADE and FEE entries on available/locked
    by_order: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    from_fills: Counter[tuple[int, str]] = Counter()
    fees_from_fills: Counter[tuple[int, str]] = Counter()
    for fill in tables["fills"]:
        totals = by_order[fill.order_id]
        totals[0] += fill.base_amount
        totals[1] += fill.price * fill.quantity * engine.markets[fill.market].notional_unit
        totals[2] += fill.fee
        base, quote = engine.markets[fill.market].base, engine.markets[fill.market].quote
        sign = 1 if fill.side == "BUY" else -1
        from_fills[(fill.user_id, base)] += sign * fill.base_amount
        from_fills[(fill.user_id, quote)] -= sign * fill.quote_amount
        fees_from_fills[(fill.user_id, fill.fee_asset)] += fill.fee
    for order_id, row in orders.items():
        assert [row["filled_base"], row["filled_quote"], row["fee"]] == by_order.get(
            order_id, [0, 0, 0]
        ), order_id
    trade_deltas: Counter[tuple[int, str]] = Counter()
    fee_deltas: Counter[tuple[int, str]] = Counter()
    for entry in tables["entries"]:
        if entry.reason == "trade":
            trade_deltas[(entry.user_id, entry.asset)] += entry.delta
        elif entry.reason == "fee" and entry.account == "available":  # not withdrawal fees
            fee_deltas[(entry.user_id, entry.asset)] -= entry.delta
    assert +trade_deltas == +from_fills and -trade_deltas == -from_fills
    assert +fee_deltas == +fees_from_fills

    # positions: each user's fills of a market folded in stream order, once each
    assert {
        (p.user_id, p.market): (p.quantity, int(p.cost), int(p.realised), p.updated_seq)
        for p in tables["positions"]
    } == expected_positions(fills)

    # ledger entries: one per user-account leg, summing to the engine's balances
    legs = [
        (leg, seq, ts)
        for seq, ts, result in run.applied
        for event in result.events
        for leg in postings(event)
    ]
    expected_entries = []
    for leg, seq, ts in legs:
        reason = REASON_NAMES[leg.reason]
        for user, kind, delta in ((leg.debit_user, leg.debit_kind, -leg.amount),
                                  (leg.credit_user, leg.credit_kind, leg.amount)):  # fmt: skip
            if kind <= LOCKED:
                expected_entries.append(
                    (user, leg.asset, ACCOUNT_NAMES[kind], delta, reason, leg.ref, seq, ts)
                )
    got_entries = [
        (e.user_id, e.asset, e.account, e.delta, e.reason, e.ref, e.seq, e.ts)
        for e in tables["entries"]
    ]
    assert got_entries == expected_entries
    running: Counter[tuple[int, str, str]] = Counter()
    for e in tables["entries"]:
        running[(e.user_id, e.asset, e.account)] += e.delta
        assert e.balance_after == running[(e.user_id, e.asset, e.account)]
    for (user, asset, account), balance in running.items():
        available, locked = engine.balance(user, asset)
        assert balance == (available if account == "available" else locked)
    for user, assets in engine.balances.items():
        for asset, (available, locked) in assets.items():
            assert running[(user, asset, "available")] == available
            assert running[(user, asset, "locked")] == locked

    # balances: users' accounts and the system totals, exactly the engine's
    balances = {(b.user_id, b.asset, b.account): b.balance for b in tables["balances"]}
    assert len(balances) == len(tables["balances"])
    for (user, asset, account), balance in balances.items():
        if user:
            assert balance == running[(user, asset, account)]
    for asset, row in engine.total_balances().items():
        for account in ("fees", "external_deposits", "external_withdrawals"):
            assert balances.get((0, asset, account), 0) == row[account], (asset, account)
        users_total = sum(b for (u, a, _), b in balances.items() if u and a == asset)
        assert users_total == row["users_available"] + row["users_locked"]

    # candles: the trades folded, every interval; coarser ones are the 1m ones merged
    got = {
        (c.market, c.interval, c.open_time): Candle(
            c.market, c.interval, c.open_time, c.open, c.high, c.low, c.close, int(c.volume),
            int(c.quote_volume), c.trades, c.first_trade_id, c.last_trade_id,
        )
        for c in tables["candles"]
    }  # fmt: skip
    assert got == expected_candles(run)
    for market in {key[0] for key in got}:
        minutes = sorted(
            (c for k, c in got.items() if k[:2] == (market, "1m")), key=lambda c: c.open_time
        )
        for interval in INTERVALS:
            series = sorted(
                (c for k, c in got.items() if k[:2] == (market, interval)),
                key=lambda c: c.open_time,
            )
            assert merge(minutes, interval) == series

    # deposit credits: every DepositCredited once, with its seq and time (DUPLICATEs: none)
    credits = [
        (event.external_id, event.user, event.asset, event.amount, seq, ts)
        for seq, ts, result in run.applied
        for event in result.events
        if isinstance(event, DepositCredited)
    ]
    assert credits and [tuple(r) for r in tables["deposit_credits"]] == credits

    (cursor,) = tables["cursor"]
    assert (cursor.name, cursor.last_seq) == ("sql", run.last_seq)
    assert cursor.last_ts == run.applied[-1][1]
    return tables


# -- projecting ------------------------------------------------------------------------


async def live_projection(
    url: str,
    data_dir: Path,
    steps: list[list[Command]],
    *,
    max_commands: int = 97,
    projector_type: Callable[..., Projector] = Projector,
) -> tuple[Run, Projector]:
    """Drive ``steps`` with a projector listening from the start; stop it at the end."""
    driver = Driver(data_dir)
    db = create_engine(url)
    projector = projector_type(db, max_commands=max_commands, retry_initial=0.01)
    try:
        driver.sequencer.listeners.append(projector.on_batch)
        await projector.start(data_dir, driver.sequencer.last_seq)
        await driver.steps(steps)
    finally:
        await projector.stop(timeout=30)
        driver.close()
        await db.dispose()
    return driver.run, projector


def test_projection_matches_the_engine_and_the_events(migrated: str, tmp_path: Path) -> None:
    run, projector = asyncio.run(live_projection(migrated, tmp_path, scenario(1, 1500)))
    assert projector.error is None
    assert projector.cursor == run.last_seq
    assert projector.stats.transactions > 10  # orders live across many transactions
    tables = check_projection(migrated, run)

    # The scenario did reach what it is there for.
    by_client = {r.client_order_id: r for r in tables["orders"] if r.market == "SOL-USDT"}
    status = {cid: (r.status, r.reason) for cid, r in by_client.items()}
    assert status["ice"] == ("EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED")
    assert status["stop1"] == ("FILLED", "") and by_client["stop1"].triggered_at
    assert by_client["stop1"].price == 985 and by_client["stop1"].type == "STOP_LOSS_LIMIT"
    assert status["stopbuy"] == ("CANCELED", "USER_CANCELED")
    assert by_client["stopbuy"].triggered_at is None
    assert status["q"] == ("FILLED", "") and by_client["q"].quantity == 8
    assert status["fok"] == ("EXPIRED", "FOK_NOT_FILLABLE")
    assert status["m25"] == ("EXPIRED", "IOC_REMAINDER")
    assert status["self"] == ("CANCELED", "USER_CANCELED") and by_client["self"].filled == 4
    assert status["tp"][0] == "CANCELED" and by_client["tp"].triggered_at
    assert by_client["ice"].quantity == 60
    assert (status["dec"], by_client["dec"].quantity) == (("NEW", "SELF_TRADE_DECREMENTED"), 30)
    assert status["dectaker"] == ("EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED")
    # The GTD expiry came with a rejected command and was projected with it.
    gtd = by_client["gtd"]
    assert status["gtd"] == ("EXPIRED", "GTD_EXPIRED")
    seq_results = {seq: result for seq, _, result in run.applied}
    assert seq_results[gtd.updated_seq].status == "REJECTED"
    assert any(r.status == "DUPLICATE" for r in seq_results.values())
    assert {e.reason for e in tables["entries"]} == set(REASON_NAMES)
    assert any(int(p.realised) and p.quantity for p in tables["positions"])  # partly sold


def test_restart_part_way_catches_up_from_the_journal(migrated: str, tmp_path: Path) -> None:
    """Project the first half, stop; the sequencer goes on alone (and snapshots); a new
    projector reads the cursor and catches up from the journal, then projects live."""
    steps = scenario(2, 1200)
    first, second, third = steps[:15], steps[15:30], steps[30:]

    async def scenario_() -> tuple[Run, list[int]]:
        driver = Driver(tmp_path, snapshot_every=150)
        cursors = []
        try:
            db = create_engine(migrated)
            projector = Projector(db, max_commands=50)
            driver.sequencer.listeners.append(projector.on_batch)
            await projector.start(tmp_path, driver.sequencer.last_seq)
            await driver.steps(first)
            await projector.stop()
            cursors.append(projector.cursor)
            driver.sequencer.listeners.remove(projector.on_batch)
            await db.dispose()

            await driver.steps(second)  # nobody projects these

            db = create_engine(migrated)
            again = Projector(db, max_commands=64)
            driver.sequencer.listeners.append(again.on_batch)
            await again.start(tmp_path, driver.sequencer.last_seq)
            cursors.append(again.cursor)
            assert again.stats.caught_up == cursors[1] - cursors[0] > 0
            await driver.steps(third)
            await again.stop()
            cursors.append(again.cursor)
            await db.dispose()
        finally:
            driver.close()
        return driver.run, cursors

    run, cursors = asyncio.run(scenario_())
    assert cursors[0] < cursors[1] < cursors[2] == run.last_seq
    check_projection(migrated, run)


def test_a_projector_cancelled_inside_its_transaction_loses_nothing(
    migrated: str, tmp_path: Path
) -> None:
    """The drain task is killed after it wrote a transaction's rows, before the commit:
    the transaction rolls back, and the next projector catches up from the journal."""
    hung = asyncio.Event()

    class Hanging(Projector):
        writes = 0

        async def _write_rows(self, connection: AsyncConnection, plan: Any) -> None:
            await super()._write_rows(connection, plan)
            Hanging.writes += 1
            if Hanging.writes == 4:
                hung.set()
                await asyncio.Event().wait()  # never commits

    async def scenario_() -> Run:
        driver = Driver(tmp_path)
        try:
            db = create_engine(migrated)
            projector = Hanging(db, max_commands=60)
            driver.sequencer.listeners.append(projector.on_batch)
            await projector.start(tmp_path, driver.sequencer.last_seq)
            steps = scenario(3, 900)
            for commands in steps[:12]:
                driver.step(commands)
                await asyncio.sleep(0)
            await asyncio.wait_for(hung.wait(), 30)
            stuck = projector.cursor
            assert projector._task is not None
            projector._task.cancel()  # the process dies here, as far as the tables know
            await asyncio.gather(projector._task, return_exceptions=True)
            driver.sequencer.listeners.remove(projector.on_batch)
            await db.dispose()
            assert await committed_seq(migrated) == stuck

            for commands in steps[12:20]:
                driver.step(commands)
            db = create_engine(migrated)
            again = Projector(db, max_commands=80)
            driver.sequencer.listeners.append(again.on_batch)
            await again.start(tmp_path, driver.sequencer.last_seq)
            await driver.steps(steps[20:])
            await again.stop()
            await db.dispose()
        finally:
            driver.close()
        return driver.run

    run = asyncio.run(scenario_())
    check_projection(migrated, run)


async def committed_seq(url: str) -> int:
    db = create_engine(url)
    try:
        async with db.connect() as c:
            query = sa.select(t.projection_cursor.c.last_seq)
            return int((await c.execute(query)).scalar_one())
    finally:
        await db.dispose()


def test_failed_and_unacknowledged_commits_are_retried_and_land_once(
    migrated: str, tmp_path: Path
) -> None:
    """Two transactions fail after writing rows (rolled back, retried with the same rows);
    one commits but its acknowledgement is lost (the retry finds the cursor moved and
    writes nothing again)."""

    class Flaky(Projector):
        attempts = 0

        async def _write_rows(self, connection: AsyncConnection, plan: Any) -> None:
            await super()._write_rows(connection, plan)
            Flaky.attempts += 1
            if Flaky.attempts in (3, 4):
                raise sa.exc.OperationalError("INSERT ...", {}, OSError("connection reset"))

        async def _write(self, plan: Any) -> None:
            await super()._write(plan)
            if Flaky.attempts == 7:
                Flaky.attempts += 1
                raise sa.exc.OperationalError("COMMIT", {}, OSError("connection reset"))

    run, projector = asyncio.run(
        live_projection(migrated, tmp_path, scenario(4, 900), projector_type=Flaky)
    )
    assert projector.stats.retries == 3
    assert projector.error is None
    check_projection(migrated, run)


def test_batches_that_never_reached_the_listener_are_read_from_the_journal(
    migrated: str, tmp_path: Path
) -> None:
    """A projector started with a stale ``live_last_seq`` and registered late sees a gap
    before its first live batch: it reads the missing commands from the journal."""
    steps = scenario(5, 700)

    async def scenario_() -> tuple[Run, int]:
        driver = Driver(tmp_path)
        db = create_engine(migrated)
        projector = Projector(db, max_commands=100)
        try:
            await driver.steps(steps[:6])
            await projector.start(tmp_path, 3)  # stale: the engine is further
            await driver.steps(steps[6:9])  # not listening yet
            driver.sequencer.listeners.append(projector.on_batch)
            await driver.steps(steps[9:])
            await projector.stop()
        finally:
            driver.close()
            await db.dispose()
        return driver.run, projector.stats.caught_up

    run, caught_up = asyncio.run(scenario_())
    assert caught_up > 0
    check_projection(migrated, run)


def test_batches_from_another_thread_and_overlapping_the_catch_up(
    migrated: str, tmp_path: Path
) -> None:
    """The sync sequencer runs on a worker thread (on_batch wakes the loop thread-safely);
    the listener is registered long before start, so its first batches overlap the
    catch-up and must be skipped, one of them in the middle."""
    steps = scenario(6, 800)

    async def scenario_() -> Run:
        driver = Driver(tmp_path, max_batch=7)
        db = create_engine(migrated)
        projector = Projector(db, max_commands=100)
        try:
            driver.sequencer.listeners.append(projector.on_batch)
            await driver.steps(steps[:5])
            await projector.start(tmp_path, driver.sequencer.last_seq - 3)  # mid-batch
            assert projector.queued > 0
            threads = set()

            def worker() -> None:
                threads.add(threading.get_ident())
                for commands in steps[5:]:
                    driver.step(commands)

            await asyncio.to_thread(worker)
            assert threading.get_ident() not in threads
            assert await projector.wait_for(driver.sequencer.last_seq, timeout=60)
            await projector.stop()
        finally:
            driver.close()
            await db.dispose()
        return driver.run

    run = asyncio.run(scenario_())
    check_projection(migrated, run)


def test_a_full_backlog_leaves_batches_to_the_journal(migrated: str, tmp_path: Path) -> None:
    """With the backlog full (here: the loop is busy while the sequencer goes on), new
    batches are not queued; the projector reads them from the journal afterwards, also
    when no batch follows them."""

    async def scenario_() -> tuple[Run, Projector]:
        driver = Driver(tmp_path)
        db = create_engine(migrated)
        projector = Projector(db, max_commands=40, max_backlog=50)
        try:
            driver.sequencer.listeners.append(projector.on_batch)
            await projector.start(tmp_path, 0)
            for commands in scenario(9, 600):
                driver.step(commands)  # no await: nothing drains meanwhile
            assert projector.queued <= 50 + 16
            assert await projector.wait_for(driver.sequencer.last_seq, timeout=60)
            await projector.stop()
        finally:
            driver.close()
            await db.dispose()
        return driver.run, projector

    run, projector = asyncio.run(scenario_())
    assert projector.stats.caught_up > run.last_seq // 2
    check_projection(migrated, run)


def test_wait_for_lag_and_stop(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> None:
        driver = Driver(tmp_path)
        db = create_engine(migrated)
        projector = Projector(db)
        try:
            driver.sequencer.listeners.append(projector.on_batch)
            await projector.start(tmp_path, 0)
            setup, flow = generate_flow(seed=7, count=300, users=4)
            driver.step(setup + flow)  # the loop is blocked: nothing is projected yet
            last = driver.sequencer.last_seq
            assert projector.cursor == 0 and projector.lag(last) == last
            assert not await projector.wait_for(last + 1, timeout=0.3)  # never applied
            assert await projector.wait_for(last, timeout=30)
            assert projector.cursor == last and projector.lag(last) == 0
            assert projector.lag(last - 5) == 0
            waiting = asyncio.ensure_future(projector.wait_for(last + 1, timeout=30))
            await asyncio.sleep(0.05)
            driver.step([Tick()])
            driver.step([Tick()])  # queued, not yet projected when stop is called
            await projector.stop()  # projects what is queued, then stops
            assert projector.cursor == last + 2 == await committed_seq(migrated)
            assert await waiting
            assert not await projector.wait_for(last + 3, timeout=30)  # stopped: at once
            projector.on_batch(AppliedBatch(last + 3, 0, [Tick()], []))  # ignored
            assert projector.queued == 0
        finally:
            driver.close()
            await db.dispose()

    asyncio.run(scenario_())


def test_two_projectors_on_one_cursor_stop_the_stale_one(migrated: str, tmp_path: Path) -> None:
    """A second projector of the same name moved the cursor: the first one's next write
    finds the cursor elsewhere than it left it and stops instead of writing twice."""

    async def scenario_() -> Run:
        driver = Driver(tmp_path)
        db = create_engine(migrated)
        first, second = Projector(db), Projector(db)
        try:
            setup, flow = generate_flow(seed=8, count=200, users=4)
            driver.step(setup)
            await first.start(tmp_path, driver.sequencer.last_seq)
            await second.start(tmp_path, driver.sequencer.last_seq)  # reads the same cursor
            driver.sequencer.listeners.append(second.on_batch)
            driver.step(flow)
            assert await second.wait_for(driver.sequencer.last_seq, timeout=30)
            driver.sequencer.listeners.append(first.on_batch)
            driver.step([Tick()])  # first: a gap from its cursor, read from the journal
            assert await second.wait_for(driver.sequencer.last_seq, timeout=30)
            assert not await first.wait_for(driver.sequencer.last_seq, timeout=30)
            assert isinstance(first.error, CursorConflictError)
            assert not first.running and second.running
            assert await committed_seq(migrated) == driver.sequencer.last_seq
        finally:
            await first.stop()
            await second.stop()
            driver.close()
            await db.dispose()
        return driver.run

    check_projection(migrated, asyncio.run(scenario_()))


def test_a_projector_starts_once(migrated: str, tmp_path: Path) -> None:
    async def scenario_() -> None:
        Driver(tmp_path).close()
        db = create_engine(migrated)
        projector = Projector(db)
        try:
            await projector.start(tmp_path, 0)
            with pytest.raises(RuntimeError):
                await projector.start(tmp_path, 0)
        finally:
            await projector.stop()
            await db.dispose()

    asyncio.run(scenario_())
