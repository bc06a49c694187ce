"""The depth mirror: a client applying the updates to its copy has exactly the engine's
book after every batch, and each market's sequence numbers are contiguous."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.flows import mixed_flow
from mercato.core import commands as c
from mercato.core.engine import Engine
from mercato.core.events import OrderUpdated
from mercato.core.model import MarketSpec
from mercato.marketdata.depth import DepthChange, DepthTracker

Book = dict[str, tuple[dict[int, int], dict[int, int]]]


def engine_book(engine: Engine) -> Book:
    out: Book = {}
    for symbol in engine.markets:
        bids, asks = engine.depth(symbol, 10**9)
        out[symbol] = (dict(bids), dict(asks))
    return out


def apply_changes(copy: Book, changes: list[DepthChange], seqs: dict[str, int]) -> None:
    """What a client does with the updates (and its gap check)."""
    for change in changes:
        assert change.seq == seqs[change.market] + 1, "sequence gap"
        seqs[change.market] = change.seq
        assert change.bids == sorted(change.bids, reverse=True)
        assert change.asks == sorted(change.asks)
        assert change.bids or change.asks  # an update is never empty
        bids, asks = copy.setdefault(change.market, ({}, {}))
        for side, levels in ((bids, change.bids), (asks, change.asks)):
            for price, qty in levels:
                assert side.get(price, 0) != qty, "an update repeats an unchanged level"
                if qty:
                    side[price] = qty
                else:
                    del side[price]


def run(
    engine: Engine, tracker: DepthTracker, seed: int, count: int, copy: Book, seqs: dict[str, int]
) -> Counter[str]:
    seq = engine.last_seq
    seen: Counter[str] = Counter()
    for ts, batch in mixed_flow(seed, count, engine):
        events = []
        for command in batch:
            seq += 1
            result = engine.apply(seq, ts, command)
            events.extend(result.events)
            seen[type(command).__name__ + ("" if result.accepted else ":rejected")] += 1
        changes = tracker.apply(events, ts)
        assert len({change.market for change in changes}) == len(changes)
        for market in {change.market for change in changes}:
            seqs.setdefault(market, tracker.books[market].seq - 1)
        apply_changes(copy, changes, seqs)
        truth = engine_book(engine)
        assert {m: v for m, v in copy.items() if v != ({}, {})} == {
            m: v for m, v in truth.items() if v != ({}, {})
        }
        for symbol, (bids, asks) in truth.items():
            book = tracker.books[symbol]
            assert (book.bids, book.asks) == (bids, asks)
            assert book.bid_prices == sorted(bids) and book.ask_prices == sorted(asks)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(20, 400))
def test_updates_rebuild_the_engine_book_exactly(seed: int, count: int) -> None:
    engine = Engine()
    tracker = DepthTracker(engine)
    run(engine, tracker, seed, count, {}, {})


def test_the_mixed_flow_exercises_every_feature() -> None:
    """Guards the property test against a flow that stopped reaching the hard cases."""
    engine = Engine()
    seen = run(engine, DepthTracker(engine), 7, 3000, {}, {})
    for name in ("AmendOrder", "CancelAll", "FreezeUser", "CancelOrder", "Tick"):
        assert seen[name] >= 5, (name, seen)
    events: Counter[str] = Counter()
    engine2 = Engine()
    seq = 0
    for ts, batch in mixed_flow(7, 3000, engine2):
        for command in batch:
            seq += 1
            for event in engine2.apply(seq, ts, command).events:
                reason = event.reason if isinstance(event, OrderUpdated) else ""
                events[type(event).__name__ + reason] += 1
    for name in (
        "OrderTriggered",
        "OrderAmended",
        "OrderUpdatedGTD_EXPIRED",
        "OrderUpdatedSELF_TRADE_PREVENTED",
        "Trade",
    ):
        assert events[name] > 0, (name, events)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(0, 300), after=st.integers(1, 300))
def test_a_tracker_built_on_a_running_engine_starts_from_its_book(
    seed: int, before: int, after: int
) -> None:
    """As after a restart: the mirror starts as the engine's book, the sequence at the
    engine's last seq, and goes on exactly."""
    engine = Engine()
    seq = 0
    for ts, batch in mixed_flow(seed, before, engine):
        for command in batch:
            seq += 1
            engine.apply(seq, ts, command)
    tracker = DepthTracker(engine)
    assert {s: b.seq for s, b in tracker.books.items()} == dict.fromkeys(
        engine.markets, engine.last_seq
    )
    copy = {s: (dict(b.bids), dict(b.asks)) for s, b in tracker.books.items()}
    assert copy == engine_book(engine)
    seqs = {s: b.seq for s, b in tracker.books.items()}
    run(engine, tracker, seed + 1, after, copy, seqs)


def test_a_decrement_self_trade_shrinks_the_resting_level() -> None:
    """DECREMENT changes a resting order with only a RELEASE transfer: still seen."""
    engine = Engine()
    setup = [
        c.UpsertAsset("BTC", 8),
        c.UpsertAsset("USDT", 8),
        c.UpsertMarket(MarketSpec("BTC-USDT", "BTC", "USDT", "0.01", "0.001", "0.001", "100", "0")),
        c.CreditDeposit(1, "BTC", 10**10, "a"),
        c.CreditDeposit(1, "USDT", 10**14, "b"),
    ]
    for seq, command in enumerate(setup, 1):
        engine.apply(seq, 1, command)
    tracker = DepthTracker(engine)
    placed = engine.apply(6, 2, c.PlaceOrder(1, "BTC-USDT", "SELL", "LIMIT", 10, 100))
    assert tracker.apply(placed.events, 2) == [DepthChange("BTC-USDT", 6, 2, [], [(100, 10)])]
    changes = tracker.apply(
        engine.apply(
            7, 3, c.PlaceOrder(1, "BTC-USDT", "BUY", "LIMIT", 4, 100, "IOC", stp="DECREMENT")
        ).events,
        3,
    )
    assert changes == [DepthChange("BTC-USDT", 7, 3, [], [(100, 6)])]
    assert not [e for e in engine.apply(8, 4, c.Tick()).events]
