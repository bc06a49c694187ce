"""The read-only view adapters read the engine through (mercato.core.view)."""

from __future__ import annotations

import pytest
from conftest import BTC, START_TS, USDT, Exchange

from mercato.core import commands as c
from mercato.core.view import EngineView, view_of


@pytest.mark.parametrize(
    ("kill_switch", "status", "effective"),
    [
        ("OFF", "TRADING", "TRADING"),
        ("OFF", "CANCEL_ONLY", "CANCEL_ONLY"),
        ("OFF", "HALTED", "HALTED"),
        ("CANCEL_ONLY", "TRADING", "CANCEL_ONLY"),
        ("CANCEL_ONLY", "HALTED", "HALTED"),
        ("HALT", "TRADING", "HALTED"),
        ("HALT", "CANCEL_ONLY", "HALTED"),
    ],
)
def test_trading_status_combines_the_kill_switch_with_the_market(
    ex: Exchange, kill_switch: str, status: str, effective: str
) -> None:
    ex.ok(c.SetMarketStatus("BTC-USDT", status))  # type: ignore[arg-type]
    ex.ok(c.SetKillSwitch(kill_switch))  # type: ignore[arg-type]
    view = EngineView(ex.engine)
    assert view.trading_status("BTC-USDT") == effective
    alone = {"OFF": "TRADING", "CANCEL_ONLY": "CANCEL_ONLY", "HALT": "HALTED"}[kill_switch]
    assert view.trading_status("ETH-USDT") == alone  # a trading market: the switch alone


def test_markets_assets_and_rules(ex: Exchange) -> None:
    view = EngineView(ex.engine)
    assert view.market_symbols() == ["BTC-USDT", "ETH-USDT"]
    assert view.has_market("BTC-USDT") and not view.has_market("XRP-USDT")
    assert view.spec("XRP-USDT") is None and view.rules("XRP-USDT") is None
    spec, rules = view.spec("BTC-USDT"), view.rules("BTC-USDT")
    assert spec is not None and (spec.base, spec.quote) == ("BTC", "USDT")
    assert rules is not None and rules.parse_price("30000") == 3_000_000
    assert sorted(view.assets()) == ["BTC", "ETH", "USDT"]
    usdt = view.asset("USDT")
    assert usdt is not None and usdt.decimals == 6
    assert view.asset("XRP") is None


def test_orders_levels_balances_and_the_next_expiry(funded: Exchange) -> None:
    view = EngineView(funded.engine)
    assert view.next_expiry() is None
    gtd = funded.sell(1, "0.5", "31000", time_in_force="GTD", expire_at=START_TS + 60_000)
    resting = funded.buy(2, "0.2", "30000", client_order_id="mine")
    funded.buy(3, "0.1", "30000")
    assert view.next_expiry() == START_TS + 60_000
    assert view.order_id_of(2, "mine") == resting.order_id
    assert view.order_id_of(3, "mine") == 0  # client ids are per user
    order = view.order(resting.order_id)
    assert order is not None and (order.user, order.client_order_id) == (2, "mine")
    assert view.order(10**9) is None
    assert [o.order_id for o in view.open_orders(1)] == [gtd.order_id]
    assert len(view.open_orders()) == 3
    assert view.level_qty("BTC-USDT", True, 3_000_000) == 300  # lots: 0.2 + 0.1
    assert view.level_qty("BTC-USDT", False, 3_000_000) == 0
    bids, asks = view.levels("BTC-USDT")
    assert (bids, asks) == ([(3_000_000, 300)], [(3_100_000, 500)])
    available, locked = view.balance(1, "BTC")
    assert (available, locked) == (10 * BTC - BTC // 2, BTC // 2)
    assert view.balance(99, "BTC") == (0, 0)
    funded.apply(c.Tick(), ts=START_TS + 60_000)
    assert view.next_expiry() is None and view.order(gtd.order_id) is None
    assert (view.last_seq, view.last_ts) == (funded.seq, START_TS + 60_000)


def test_held_withdrawals_and_asset_totals(funded: Exchange) -> None:
    """What custody reads: a withdrawal while it is held, and the ledger of an asset to
    reconcile its holdings with."""
    view = EngineView(funded.engine)
    funded.ok(c.HoldWithdrawal(1, "USDT", 600 * USDT, "w1", 2 * USDT, START_TS))
    funded.ok(c.HoldWithdrawal(2, "BTC", BTC, "w2"))
    funded.buy(3, "0.1", "30000")  # locks 3,000 USDT
    assert view.held_withdrawal("w1") == (1, "USDT", 600 * USDT, 2 * USDT)
    assert view.held_withdrawal("w2") == (2, "BTC", BTC, 0)
    assert view.held_withdrawal("nope") is None
    funded.ok(c.SettleWithdrawal("w1"))
    funded.ok(c.ReleaseWithdrawal("w2"))
    assert view.held_withdrawal("w1") is None and view.held_withdrawal("w2") is None
    assert view.asset_totals("USDT") == {
        "users_available": 4_000_000 * USDT - 600 * USDT - 3_000 * USDT,
        "users_locked": 3_000 * USDT,
        "fees": 2 * USDT,
        "external_deposits": -4_000_000 * USDT,
        "external_withdrawals": 598 * USDT,
        "sum": 0,
    }
    assert view.asset_totals("BTC") == funded.engine.total_balances()["BTC"]
    assert view.asset_totals("BTC")["users_available"] == 40 * BTC
    assert set(view.asset_totals("XRP").values()) == {0}


def test_view_of_wraps_an_engine_and_keeps_a_view(ex: Exchange) -> None:
    view = EngineView(ex.engine)
    assert view_of(view) is view
    wrapped = view_of(ex.engine)
    assert isinstance(wrapped, EngineView) and wrapped.market_symbols() == view.market_symbols()
