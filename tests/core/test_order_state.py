"""The order-state reducer against the engine: folding a random run's events gives, for
every order, what the engine holds (status, filled lots, latest price and quantity, the
order's own fields), and for a finished order a terminal status; fills add up to the
trades of the order; folding one command's events equals folding the stream."""

from __future__ import annotations

import random

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.engine import Engine
from mercato.core.model import LIMIT_PRICED_TYPES, STOP_TYPES, TERMINAL_STATUSES
from mercato.core.order_state import (
    OrderState,
    accepted,
    apply_event,
    fills_of,
    fold,
)
from mercato.flow import MARKETS, setup_commands

USERS = (1, 2)
MIDS: dict[str, int] = {symbol: mid for symbol, *_, mid in MARKETS}
START_TS = 1_700_000_000_000


def _commands(seed: int, count: int) -> list[c.Command]:
    """A random run: mostly orders of every type near the mid (so they cross, trigger,
    self-trade under every STP mode), with cancels, amends, cancel-alls and ticks."""
    rng = random.Random(seed)
    commands: list[c.Command] = []
    for _ in range(count):
        user = rng.choice(USERS)
        roll = rng.random()
        if roll < 0.10:
            commands.append(c.CancelOrder(user, rng.randint(1, count)))
            continue
        if roll < 0.20:
            price = rng.choice([0, *(mid + rng.randint(-6, 6) for mid in MIDS.values())])
            commands.append(c.AmendOrder(user, rng.randint(1, count), quantity=rng.randint(0, 40),
                                         price=price))  # fmt: skip
            continue
        if roll < 0.23:
            commands.append(c.CancelAll(user))
            continue
        if roll < 0.26:
            commands.append(c.Tick())
            continue
        market = rng.choice(["BTC-USDT", "BTC-USDT", "BTC-USDT", "ETH-USDT"])
        mid = MIDS[market]
        kind = rng.choice(["LIMIT"] * 6 + ["MARKET", "LIMIT_MAKER", *sorted(STOP_TYPES)])
        priced = kind in LIMIT_PRICED_TYPES
        tif = rng.choice(["GTC", "GTC", "IOC", "FOK", "GTD"]) if priced else "GTC"
        commands.append(c.PlaceOrder(
            user, market, rng.choice(["BUY", "SELL"]), kind, rng.randint(5, 40),  # type: ignore[arg-type]
            price=mid + rng.randint(-6, 6) if priced else 0,
            time_in_force=tif,  # type: ignore[arg-type]
            client_order_id=rng.choice(["", "", "", "", "a", "b"]),
            stop_price=mid + rng.randint(-4, 4) if kind in STOP_TYPES else 0,
            expire_at=START_TS + rng.randint(1, 40_000) if tif == "GTD" else 0,
            iceberg_quantity=rng.choice([0, 0, 0, 5]) if kind == "LIMIT" else 0,
            stp=rng.choice([None, "NONE", "EXPIRE_TAKER", "EXPIRE_BOTH", "DECREMENT"]),  # type: ignore[arg-type]
        ))  # fmt: skip
    return commands


def _concerned(event: ev.Event) -> tuple[int, ...]:
    if type(event) is ev.Trade:
        return (event.maker_order_id, event.taker_order_id)
    if type(event) in (ev.OrderUpdated, ev.OrderAmended, ev.OrderTriggered):
        return (event.order_id,)  # type: ignore[union-attr]
    return ()


def _run(commands: list[c.Command]) -> tuple[Engine, dict[int, OrderState], list[ev.Trade]]:
    engine = Engine()
    seq = 0
    for command in setup_commands(len(USERS)):
        seq += 1
        engine.apply(seq, START_TS, command)
    states: dict[int, OrderState] = {}
    trades: list[ev.Trade] = []
    ts = START_TS
    for command in commands:
        seq += 1
        ts += 500
        result = engine.apply(seq, ts, command)
        for event in result.events:
            if type(event) is ev.OrderAccepted:
                states[event.order_id] = accepted(event, seq, ts)
            if type(event) is ev.Trade:
                trades.append(event)
            for order_id in _concerned(event):
                apply_event(states[order_id], event, seq, ts)
        # One command's events, folded alone, give the same state as the whole stream.
        if result.order_id and result.order_id in states:
            alone = fold(result.events, result.order_id, ts, seq)
            if alone is not None:
                assert alone == states[result.order_id]
    return engine, states, trades


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 200))
def test_folded_states_are_the_engines_orders(seed: int, count: int) -> None:
    engine, states, trades = _run(_commands(seed, count))
    for order_id, state in states.items():
        order = engine.orders.get(order_id)
        if order is None:
            assert state.status in TERMINAL_STATUSES, state
            continue
        assert state.status not in TERMINAL_STATUSES
        assert (state.status, state.filled, state.price) == (
            order.status, order.filled, order.price,
        )  # fmt: skip
        assert state.quantity == order.quantity
        assert (state.user, state.market, state.side, state.client_order_id) == (
            order.user, order.market, order.side, order.client_order_id,
        )  # fmt: skip
        assert (state.stop_price, state.expire_at, state.iceberg_quantity) == (
            order.stop_price, order.expire_at, order.iceberg_quantity,
        )  # fmt: skip
        # A triggered stop is a MARKET or LIMIT order in the engine; its state keeps the
        # type it was placed with (as the SQL projection does).
        if state.triggered_at is None:
            assert state.type == order.type
        else:
            assert order.type in ("MARKET", "LIMIT") and state.type != order.type
    for order_id, state in states.items():
        mine = [t for t in trades if order_id in (t.maker_order_id, t.taker_order_id)]
        lot_atoms = engine.markets[state.market].lot_atoms
        assert state.filled_base == sum(t.base_amount for t in mine) == state.filled * lot_atoms
        assert state.filled_quote == sum(t.quote_amount for t in mine)
        fees = sum(t.taker_fee if t.taker_order_id == order_id else t.maker_fee for t in mine)
        assert state.fee == fees
        if mine:
            assert state.fee_asset == (mine[0].base if state.side == "BUY" else mine[0].quote)
        else:
            assert state.fee_asset is None


def _accept(order_id: int = 7, side: str = "BUY") -> ev.OrderAccepted:
    return ev.OrderAccepted(
        order_id, 1, "BTC-USDT", side, "LIMIT", 10, 500, "GTC", "mine", 0, 0, 0, 0,  # type: ignore[arg-type]
        "NONE", "NEW", 1_000,
    )  # fmt: skip


def _trade(maker: int, taker: int, taker_side: str = "SELL") -> ev.Trade:
    return ev.Trade(
        1, "BTC-USDT", "BTC", "USDT", 500, 4, 4_000, 2_000, taker_side, maker, taker,  # type: ignore[arg-type]
        1, 2, 3, 5, 1_500,
    )  # fmt: skip


def test_a_fill_adds_up_and_names_the_side_fee() -> None:
    state = accepted(_accept(), seq=3, ts=1_000)
    apply_event(state, _trade(maker=7, taker=8), seq=4, ts=2_000)
    apply_event(state, _trade(maker=9, taker=10), seq=5, ts=3_000)  # someone else's
    assert (state.filled, state.filled_base, state.filled_quote, state.fee) == (4, 4_000, 2_000, 3)
    assert state.fee_asset == "BTC"  # a buyer pays in what it receives
    assert (state.updated_at, state.updated_seq, state.created_at, state.created_seq) == (
        2_000, 4, 1_000, 3,
    )  # fmt: skip
    seller = accepted(_accept(8, "SELL"), seq=3, ts=1_000)
    apply_event(seller, _trade(maker=7, taker=8), seq=4, ts=2_000)
    assert (seller.fee, seller.fee_asset) == (5, "USDT")


def test_updates_amends_and_triggers_follow_the_last_event() -> None:
    state = accepted(_accept(), seq=1, ts=1_000)
    apply_event(
        state, ev.OrderUpdated(7, 1, "BTC-USDT", "NEW", 0, 6, "SELF_TRADE_DECREMENTED"), 2, 2
    )
    assert (state.quantity, state.reason, state.status) == (6, "SELF_TRADE_DECREMENTED", "NEW")
    apply_event(state, ev.OrderAmended(7, 1, "BTC-USDT", 480, 5, False), 3, 3)
    assert (state.price, state.quantity, state.reason) == (480, 5, "SELF_TRADE_DECREMENTED")
    apply_event(state, ev.OrderTriggered(7, 1, "BTC-USDT", 470), 4, 4)
    assert (state.status, state.triggered_at, state.updated_seq) == ("NEW", 4, 4)
    apply_event(state, ev.OrderUpdated(7, 1, "BTC-USDT", "CANCELED", 0, 5, "USER"), 5, 5)
    assert (state.status, state.reason, state.updated_at) == ("CANCELED", "USER", 5)
    before = msgspec.structs.replace(state)
    apply_event(state, ev.OrderUpdated(8, 1, "BTC-USDT", "FILLED", 5, 5, ""), 6, 6)
    assert state == before  # another order's event changes nothing


def test_fold_is_none_without_the_acceptance_and_fills_of_picks_the_order() -> None:
    events: list[ev.Event] = [_trade(maker=7, taker=8), _trade(maker=9, taker=10)]
    assert fold(events, 7, ts=1) is None
    assert fills_of(events, 8) == events[:1]
    folded = fold([_accept(), *events], 7, ts=9, seq=2)
    assert folded is not None and (folded.filled, folded.updated_at) == (4, 9)


def test_a_decremented_taker_says_so() -> None:
    mid = MIDS["ETH-USDT"]
    engine, states, _ = _run([
        c.PlaceOrder(2, "ETH-USDT", "SELL", "LIMIT", 5, mid),
        c.PlaceOrder(2, "ETH-USDT", "BUY", "LIMIT", 12, mid + 6, stp="DECREMENT"),
    ])  # fmt: skip
    taker = max(states)
    assert engine.orders[taker].quantity == 7
    assert states[taker].quantity == engine.orders[taker].quantity
