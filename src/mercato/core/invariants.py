"""Ledger and book invariants, checked by tests, `mercato audit` and the crash test."""

from __future__ import annotations

from mercato.core.book import BookSide, MarketState
from mercato.core.model import DEPOSIT_ID_WINDOW_MS, LIMIT_PRICED_TYPES
from mercato.core.state import EngineState, IdWindow


def check_engine(engine: EngineState) -> None:
    """Raise AssertionError naming the first broken invariant."""
    _check_conservation(engine)
    _check_reservations(engine)
    _check_windows(engine)
    for symbol, market in engine.markets.items():
        _check_book(engine, symbol, market)


def _check_conservation(engine: EngineState) -> None:
    for asset, row in engine.total_balances().items():
        assert row["sum"] == 0, f"{asset}: accounts sum to {row['sum']}, not 0: {row}"
        assert row["fees"] >= 0, f"{asset}: negative fee account"
        assert row["external_deposits"] <= 0, f"{asset}: deposits account above 0"
        assert row["external_withdrawals"] >= 0, f"{asset}: withdrawals account below 0"


def _check_reservations(engine: EngineState) -> None:
    expected: dict[tuple[int, str], int] = {}
    for order in engine.orders.values():
        market = engine.markets[order.market]
        rules = market.rules
        asset = market.spec.quote if order.side == "BUY" else market.spec.base
        assert order.reserved >= 0, f"order {order.order_id} reserves {order.reserved}"
        assert 0 <= order.filled < order.quantity, f"order {order.order_id} filled {order.filled}"
        remaining = order.quantity - order.filled
        if order.status == "UNTRIGGERED":
            assert not order.in_book, f"untriggered stop {order.order_id} is in the book"
        else:
            assert order.in_book, f"open order {order.order_id} ({order.status}) is not in the book"
            assert order.status in ("NEW", "PARTIALLY_FILLED"), (
                f"order {order.order_id}: {order.status}"
            )
            assert order.type in LIMIT_PRICED_TYPES, (
                f"resting order {order.order_id} is {order.type}"
            )
            want = (
                order.price * remaining * rules.notional_unit
                if order.side == "BUY"
                else remaining * rules.lot_atoms
            )
            assert order.reserved == want, (
                f"order {order.order_id} reserves {order.reserved}, needs exactly {want}"
            )
        key = (order.user, asset)
        expected[key] = expected.get(key, 0) + order.reserved
    for user, asset, amount, _fee, _issued in engine.withdrawals.values():
        expected[(user, asset)] = expected.get((user, asset), 0) + amount
    for user, accounts in engine.balances.items():
        for asset, (available, locked) in accounts.items():
            assert available >= 0, f"user {user} {asset} available {available} < 0"
            want = expected.pop((user, asset), 0)
            assert locked == want, (
                f"user {user} {asset} locked {locked}, reservations sum to {want}"
            )
    leftovers = {k: v for k, v in expected.items() if v}
    assert not leftovers, f"reservations without accounts: {leftovers}"


def _check_windows(engine: EngineState) -> None:
    # An id is accepted only with issued_at within the window of the engine's clock, so
    # nothing is remembered beyond two windows ahead: the bound on the windows' size.
    horizon = engine.last_ts + 2 * DEPOSIT_ID_WINDOW_MS
    for name, window in (
        ("deposit_ids", engine.deposit_ids),
        ("finished_withdrawals", engine.finished_withdrawals),
    ):
        _check_window(name, window, horizon)
    both = [w for w in engine.withdrawals if w in engine.finished_withdrawals]
    assert not both, f"withdrawals both held and finished: {both}"
    for wid, (_u, _a, _amount, _fee, issued) in engine.withdrawals.items():
        assert issued <= engine.last_ts + DEPOSIT_ID_WINDOW_MS, f"withdrawal {wid} from {issued}"


def _check_window(name: str, window: IdWindow, horizon: int) -> None:
    pairs = sorted((t, k) for k, t in window.forget_at.items())
    assert sorted(window.heap) == pairs, f"{name}: heap and ids disagree"
    late = [k for t, k in pairs if t > horizon]
    assert not late, f"{name}: remembered beyond {horizon}: {late}"


def _check_book(engine: EngineState, symbol: str, market: MarketState) -> None:
    best_bid, best_ask = market.bids.best(), market.asks.best()
    assert not (best_bid and best_ask and best_bid >= best_ask), (
        f"{symbol} crossed: bid {best_bid} >= ask {best_ask}"
    )
    for side in (market.bids, market.asks):
        _check_side(engine, symbol, side)


def _check_side(engine: EngineState, symbol: str, side: BookSide) -> None:
    keys = side.keys
    assert keys == sorted(set(keys)), f"{symbol}: price keys unsorted or repeated"
    assert {k if side.is_bid else -k for k in keys} == set(side.levels), f"{symbol}: keys != levels"
    wanted_side = "BUY" if side.is_bid else "SELL"
    for price, level in side.levels.items():
        live = side.live_orders(price)
        assert live, f"{symbol} level {price} has no live order"
        assert level.live == len(live), f"{symbol} level {price} counts {level.live} != {len(live)}"
        assert level.qty == sum(o.display for o in live), f"{symbol} level {price} qty mismatch"
        queued = [o.queued for o in live]
        assert queued == sorted(queued) and len(set(queued)) == len(queued), (
            f"{symbol} level {price} is not in FIFO order: {queued}"
        )
        for order in live:
            assert engine.orders.get(order.order_id) is order, f"order {order.order_id} not open"
            assert order.price == price and order.side == wanted_side and order.market == symbol
            assert 0 < order.display <= order.quantity - order.filled, (
                f"order {order.order_id} shows {order.display}"
            )
