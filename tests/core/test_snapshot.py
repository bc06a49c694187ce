"""Snapshot/restore and replay: same state hash, and the restored engine goes on exactly
like the original."""

from __future__ import annotations

import msgspec
import pytest
from conftest import START_TS, USDT, Exchange, busy_scenario, make_exchange, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.engine import Engine


def rich_state() -> Exchange:
    """Open state of every kind: a partly filled iceberg refreshed behind another order,
    dead queue entries (amends), a GTD order, stops on both sides, client ids, a fee
    tier, a held withdrawal, a frozen user, a market in CANCEL_ONLY."""
    ex = make_exchange()
    for user in (1, 2, 3, 4):
        ex.deposit(user, "BTC", 10 * 10**8)
        ex.deposit(user, "USDT", 1_000_000 * USDT)
    ex.ok(c.SetFeeTier(1, "0.0002", "0.0004"))
    ex.ok(c.SetUserFeeTier(2, 1))
    ex.sell(1, "1", "30000", iceberg_quantity="0.1", client_order_id="ice")
    ex.sell(3, "0.2", "30000")
    ex.buy(2, "0.15", "30000")  # the iceberg's next slice now queues behind user 3
    ex.buy(4, "0.3", "28000", time_in_force="GTD", expire_at=START_TS + 1_000,
           client_order_id="gtd")  # fmt: skip
    ex.buy(2, "0.2", "29000")
    moved = ex.buy(1, "0.1", "28500").order_id
    ex.ok(c.AmendOrder(1, order_id=moved, price=ex.px("28600")))
    ex.ok(c.AmendOrder(1, order_id=moved, price=ex.px("29000")))  # now behind user 2
    ex.place(3, "SELL", "0.1", type="STOP_LOSS", stop_price="29500")
    ex.place(4, "BUY", "0.1", "31000", type="STOP_LOSS_LIMIT", stop_price="30500")
    ex.ok(c.HoldWithdrawal(1, "USDT", 100 * USDT, "w1", fee=1))
    ex.ok(c.FreezeUser(4))
    ex.ok(c.SetMarketStatus("ETH-USDT", "CANCEL_ONLY"))
    ex.engine.check_invariants()
    return ex


def continuation(ex: Exchange) -> list[tuple[int | None, c.Command]]:
    """Commands that depend on every piece of restored state."""
    return [
        (None, ex.order(2, "BUY", "0.3", "30000")),  # user 3's rest, then iceberg slices
        (None, ex.order(1, "SELL", "0.1", "31000", client_order_id="ice")),  # duplicate id
        (None, c.CreditDeposit(1, "BTC", 5, "dep-1")),  # duplicate deposit
        (None, c.HoldWithdrawal(1, "USDT", 5, "w1")),  # duplicate withdrawal
        (None, c.SettleWithdrawal("w1")),
        (None, ex.order(4, "BUY", "0.1", "29000")),  # frozen
        (None, ex.order(1, "BUY", "1", "2000", market="ETH-USDT")),  # cancel-only
        (None, ex.order(3, "SELL", "0.3", "29000")),  # FIFO at 29000; fires the sell stop
        (START_TS + 1_000, c.Tick()),  # expires what the stop left of the GTD order
        (None, ex.order(2, "SELL", "0.2", "30500")),
        (None, ex.order(3, "BUY", "0.9", "30500")),  # the iceberg's rest, then 30500: fires
        (None, c.CancelOrder(1, client_order_id="ice")),  # filled by now: unknown
        (None, c.UnfreezeUser(4)),
        (None, c.CancelAll(4)),
        (None, ex.order(4, "SELL", "0.05", "30000", client_order_id="gtd")),
    ]


def run_both(original: Exchange, restored: Exchange) -> None:
    for ts, command in continuation(original):
        a = original.apply(command, ts)
        b = restored.apply(command, ts)
        assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b), command
        assert original.engine.state_hash() == restored.engine.state_hash(), command
        restored.engine.check_invariants()


def test_snapshot_restore_gives_the_same_hash_and_goes_on_identically() -> None:
    ex = rich_state()
    data = ex.engine.snapshot()
    restored_engine = Engine.restore(data)
    assert restored_engine.state_hash() == ex.engine.state_hash()
    assert restored_engine.snapshot() == data
    assert (restored_engine.last_seq, restored_engine.last_ts) == (ex.seq, ex.ts)
    restored_engine.check_invariants()
    restored = Exchange(restored_engine, ts=ex.ts)
    run_both(ex, restored)
    # The continuation really exercised the restored state.
    codes = [r.code for r in restored.results]
    assert "DUPLICATE_CLIENT_ORDER_ID" in codes and "DUPLICATE_WITHDRAWAL" in codes
    assert "USER_FROZEN" in codes and "MARKET_CANCEL_ONLY" in codes
    assert "DUPLICATE_DEPOSIT" in codes
    events = restored.all_events()
    assert len(of_type(events, ev.OrderTriggered)) == 2
    expired = [e for e in of_type(events, ev.OrderUpdated) if e.reason == "GTD_EXPIRED"]
    assert [(e.user, e.filled) for e in expired] == [(4, 100)]
    assert len(of_type(events, ev.Trade)) >= 8


def test_restored_queues_keep_their_priority() -> None:
    ex = rich_state()
    restored = Exchange(Engine.restore(ex.engine.snapshot()), ts=ex.ts)
    for engine_ex in (ex, restored):
        result = engine_ex.apply(engine_ex.order(3, "SELL", "0.3", "29000"))
        makers = [(t.maker_user, t.quantity, t.price) for t in of_type(result, ev.Trade)]
        # User 2 before the amended order of user 1; then user 3's stop meets the GTD bid.
        assert makers == [(2, 200, 2_900_000), (1, 100, 2_900_000), (4, 100, 2_800_000)]
    assert ex.engine.state_hash() == restored.engine.state_hash()


def test_snapshot_of_a_busy_scenario_round_trips() -> None:
    ex = busy_scenario()
    restored = Engine.restore(ex.engine.snapshot())
    assert restored.state_hash() == ex.engine.state_hash()
    assert restored.snapshot() == ex.engine.snapshot()
    restored.check_invariants()


def test_replaying_the_log_reproduces_results_and_hash() -> None:
    ex = busy_scenario()
    fresh = Engine()
    for (seq, ts, command), result in zip(ex.log, ex.results, strict=True):
        again = fresh.apply(seq, ts, command)
        assert msgspec.msgpack.encode(again) == msgspec.msgpack.encode(result)
    assert fresh.state_hash() == ex.engine.state_hash()


def test_state_hash_depends_on_state_not_history() -> None:
    a = make_exchange()
    b = make_exchange()
    a.deposit(1, "USDT", 1_000 * USDT)
    b.deposit(1, "USDT", 1_000 * USDT)
    assert a.engine.state_hash() == b.engine.state_hash()
    a.buy(1, "0.01", "30000")
    assert a.engine.state_hash() != b.engine.state_hash()


def test_restore_refuses_another_state_version() -> None:
    state = msgspec.msgpack.decode(make_exchange().engine.snapshot())
    state["version"] = 999
    with pytest.raises(ValueError, match="version"):
        Engine.restore(msgspec.msgpack.encode(state))


def test_an_emptied_account_and_no_account_answer_alike_after_a_restore() -> None:
    """A snapshot keeps no zero balances, so a restored engine has no account where the
    original holds an emptied one: an order against it must be rejected the same way
    (found by the hypothesis state machine, which compares results across a restore)."""
    ex = make_exchange()
    user = 9  # never deposited anything
    # A rejected withdrawal leaves user 9 an empty ETH account in this engine only.
    assert ex.apply(c.HoldWithdrawal(user, "ETH", 5, "w9")).status == "REJECTED"
    assert ex.engine.balances[user]["ETH"] == [0, 0]
    restored = Exchange(Engine.restore(ex.engine.snapshot()), ts=ex.ts)
    assert "ETH" not in restored.engine.balances.get(user, {})
    for market in ("BTC-USDT", "ETH-USDT"):
        for side in ("BUY", "SELL"):
            order = c.PlaceOrder(user, market, side, "MARKET", ex.lots("0.01", market))
            a, b = ex.apply(order), restored.apply(order)
            assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b), order
            state = ex.engine.markets[market]
            asset = state.quote if side == "BUY" else state.base
            assert (a.code, a.message.endswith(f" 0 {asset} available")) == (
                "INSUFFICIENT_BALANCE",
                True,
            )
