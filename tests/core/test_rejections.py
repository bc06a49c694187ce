"""Every rejection changes nothing (``Exchange.reject`` compares the canonical state minus
last_seq/last_ts before and after); market status, kill switch, frozen users, and
configuration commands."""

from __future__ import annotations

import msgspec
import pytest
from conftest import BTC, BTC_USDT, ETH_USDT, START_TS, USDT, Exchange, of_type

from mercato.core import commands as c
from mercato.core import events as ev

# ---------------------------------------------------------------------------- orders


def test_insufficient_balance_at_the_exact_boundary(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 3_000 * USDT - 1)
    ex.deposit(2, "BTC", 100_000 - 1)
    ex.reject(ex.order(1, "BUY", "0.1", "30000"), "INSUFFICIENT_BALANCE")
    ex.reject(ex.order(2, "SELL", "0.001", "30000"), "INSUFFICIENT_BALANCE")
    ex.reject(ex.order(3, "SELL", "0.001", "30000"), "INSUFFICIENT_BALANCE")  # no account
    ex.reject(ex.order(3, "BUY", "0.001", type="MARKET"), "INSUFFICIENT_BALANCE")
    ex.deposit(1, "USDT", 1)
    ex.deposit(2, "BTC", 1)
    ex.buy(1, "0.1", "30000")
    ex.sell(2, "0.001", "31000")
    assert ex.bal(1, "USDT") == (0, 3_000 * USDT)
    assert ex.bal(2, "BTC") == (0, 100_000)


def test_locked_funds_cannot_back_a_second_order(ex: Exchange) -> None:
    ex.deposit(1, "BTC", BTC)
    ex.sell(1, "0.6", "31000")
    ex.reject(ex.order(1, "SELL", "0.5", "32000"), "INSUFFICIENT_BALANCE")
    ex.sell(1, "0.4", "32000")


@pytest.mark.parametrize("price", [0, -1, 10**15 + 1])
def test_invalid_price(funded: Exchange, price: int) -> None:
    funded.reject(c.PlaceOrder(1, "BTC-USDT", "BUY", quantity=1, price=price), "INVALID_PRICE")
    funded.reject(
        c.PlaceOrder(1, "BTC-USDT", "BUY", "LIMIT_MAKER", quantity=1, price=price),
        "INVALID_PRICE",
    )


def test_quantity_out_of_range(funded: Exchange) -> None:
    ex = funded
    ex.ok(c.UpsertMarket(msgspec.structs.replace(BTC_USDT, min_qty="0.01", max_qty="2")))
    for lots in (0, -5, 9, 2_001):
        ex.reject(c.PlaceOrder(1, "BTC-USDT", "BUY", quantity=lots, price=3_000_000),
                  "INVALID_QUANTITY")  # fmt: skip
    ex.reject(c.PlaceOrder(1, "BTC-USDT", "SELL", "MARKET", quantity=2_001), "INVALID_QUANTITY")
    ex.buy(1, "0.01", "30000")
    ex.buy(1, "2", "30000")


def test_below_min_notional(funded: Exchange) -> None:
    ex = funded
    ex.reject(ex.order(1, "BUY", "0.001", "9999.99"), "NOTIONAL_TOO_SMALL")  # 9.99999 USDT
    ex.reject(ex.order(1, "SELL", "0.001", "9999.99"), "NOTIONAL_TOO_SMALL")
    ex.reject(ex.order(1, "SELL", "0.001", "9999.99", type="STOP_LOSS_LIMIT", stop_price="9000"),
              "NOTIONAL_TOO_SMALL")  # fmt: skip
    ex.buy(1, "0.001", "10000")  # exactly 10 USDT
    # Market orders by quantity are not checked (their price is unknown).
    ex.place(1, "SELL", "0.001", type="MARKET")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"side": "HOLD"}, "INVALID_ORDER"),
        ({"type": "TRAILING_STOP"}, "INVALID_ORDER"),
        ({"time_in_force": "DAY"}, "INVALID_ORDER"),
        ({"market": "DOGE-USDT"}, "UNKNOWN_MARKET"),
    ],
)
def test_malformed_orders(funded: Exchange, fields: dict[str, object], code: str) -> None:
    base: dict[str, object] = {
        "user": 1, "market": "BTC-USDT", "side": "BUY", "quantity": 100, "price": 3_000_000,
    }  # fmt: skip
    base.update(fields)
    funded.reject(c.PlaceOrder(**base), code)  # type: ignore[arg-type]


def test_unknown_command(funded: Exchange) -> None:
    result = funded.apply("not a command")  # type: ignore[arg-type]
    assert (result.status, result.code) == ("REJECTED", "UNKNOWN_COMMAND")


# ---------------------------------------------------------------------------- market status


def test_halted_market_refuses_orders_amends_and_cancels(funded: Exchange) -> None:
    ex = funded
    resting = ex.buy(1, "0.1", "29000").order_id
    eth = ex.place(1, "BUY", "1", "2000", market="ETH-USDT").order_id
    result = ex.ok(c.SetMarketStatus("BTC-USDT", "HALTED"))
    assert result.events == [ev.MarketStatusChanged("BTC-USDT", "HALTED")]
    ex.reject(ex.order(2, "SELL", "0.1", "29000"), "MARKET_HALTED")
    ex.reject(c.CancelOrder(1, order_id=resting), "MARKET_HALTED")
    ex.reject(c.AmendOrder(1, order_id=resting, quantity=50), "MARKET_HALTED")
    ex.reject(c.CancelAll(1, market="BTC-USDT"), "MARKET_HALTED")
    # Cancel-all over every market skips the halted one.
    result = ex.ok(c.CancelAll(1))
    assert [u.order_id for u in of_type(result, ev.OrderUpdated)] == [eth]
    assert ex.open_ids(1) == [resting]
    ex.ok(c.SetMarketStatus("BTC-USDT", "TRADING"))
    ex.cancel(1, resting)


def test_gtd_expiry_still_releases_in_a_halted_market(funded: Exchange) -> None:
    ex = funded
    oid = ex.buy(1, "0.1", "29000", time_in_force="GTD", expire_at=START_TS + 100).order_id
    ex.ok(c.SetMarketStatus("BTC-USDT", "HALTED"))
    result = ex.ok(c.Tick(), ts=START_TS + 100)
    assert [(u.order_id, u.status) for u in of_type(result, ev.OrderUpdated)] == [(oid, "EXPIRED")]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)


def test_cancel_only_market_allows_cancels_but_no_new_orders(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    b = ex.buy(1, "0.1", "28000").order_id
    ex.ok(c.SetMarketStatus("BTC-USDT", "CANCEL_ONLY"))
    ex.reject(ex.order(2, "SELL", "0.1", "29000"), "MARKET_CANCEL_ONLY")
    ex.reject(ex.order(2, "SELL", "0.1", type="MARKET"), "MARKET_CANCEL_ONLY")
    ex.reject(c.AmendOrder(1, order_id=a, price=2_950_000), "MARKET_CANCEL_ONLY")
    ex.cancel(1, a)
    result = ex.ok(c.CancelAll(1, market="BTC-USDT"))
    assert [u.order_id for u in of_type(result, ev.OrderUpdated)] == [b]
    # The other market trades on.
    ex.place(2, "SELL", "1", "2000", market="ETH-USDT")


def test_market_status_validation(funded: Exchange) -> None:
    funded.reject(c.SetMarketStatus("NOPE", "HALTED"), "UNKNOWN_MARKET")
    funded.reject(c.SetMarketStatus("BTC-USDT", "PAUSED"), "INVALID_STATUS")  # type: ignore[arg-type]
    funded.reject(c.SetKillSwitch("MAYBE"), "INVALID_STATUS")  # type: ignore[arg-type]


def test_kill_switch_overrides_every_market_and_off_restores_each_status(
    funded: Exchange,
) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    e1 = ex.place(1, "BUY", "1", "2000", market="ETH-USDT").order_id
    e2 = ex.place(1, "BUY", "1", "1900", market="ETH-USDT").order_id
    ex.ok(c.SetMarketStatus("ETH-USDT", "CANCEL_ONLY"))

    assert ex.ok(c.SetKillSwitch("CANCEL_ONLY")).events == [ev.KillSwitchSet("CANCEL_ONLY")]
    ex.reject(ex.order(2, "SELL", "0.1", "30000"), "MARKET_CANCEL_ONLY")
    ex.cancel(1, a)

    ex.ok(c.SetKillSwitch("HALT"))
    ex.reject(ex.order(2, "SELL", "0.1", "30000"), "MARKET_HALTED")
    ex.reject(ex.order(2, "SELL", "1", "2100", market="ETH-USDT"), "MARKET_HALTED")
    ex.reject(c.CancelOrder(1, order_id=e1), "MARKET_HALTED")

    ex.ok(c.SetKillSwitch("OFF"))
    ex.sell(2, "0.1", "30000")  # BTC-USDT trades again
    ex.reject(ex.order(2, "SELL", "1", "2100", market="ETH-USDT"), "MARKET_CANCEL_ONLY")
    ex.cancel(1, e1)

    # A halted market stays halted under a CANCEL_ONLY kill switch.
    ex.ok(c.SetMarketStatus("ETH-USDT", "HALTED"))
    ex.ok(c.SetKillSwitch("CANCEL_ONLY"))
    ex.reject(c.CancelOrder(1, order_id=e2), "MARKET_HALTED")


# ---------------------------------------------------------------------------- frozen users


def test_frozen_user_may_only_cancel(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    b = ex.buy(1, "0.1", "28000").order_id
    result = ex.ok(c.FreezeUser(1))
    assert result.events == [ev.UserFrozen(1, True)]
    ex.reject(ex.order(1, "BUY", "0.1", "29000"), "USER_FROZEN")
    ex.reject(c.AmendOrder(1, order_id=a, quantity=50), "USER_FROZEN")
    ex.reject(c.HoldWithdrawal(1, "USDT", 1, "w"), "USER_FROZEN")
    ex.deposit(1, "USDT", 1)  # deposits are still credited
    # Its resting orders still trade.
    trade = of_type(ex.sell(2, "0.05", "29000"), ev.Trade)
    assert [t.maker_order_id for t in trade] == [a]
    ex.cancel(1, a)
    ex.buy(2, "0.1", "29000")  # other users are not affected
    assert ex.ok(c.UnfreezeUser(1)).events == [ev.UserFrozen(1, False)]
    ex.buy(1, "0.1", "29000")
    assert b in ex.engine.orders


def test_freeze_with_cancel_orders_cancels_all_of_the_users_orders(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    other = ex.buy(2, "0.1", "29000").order_id
    b = ex.place(1, "SELL", "1", "2500", market="ETH-USDT").order_id
    s = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="28000").order_id
    result = ex.ok(c.FreezeUser(1, cancel_orders=True))
    assert result.events[0] == ev.UserFrozen(1, True)
    assert [(u.order_id, u.status, u.reason) for u in of_type(result, ev.OrderUpdated)] == [
        (a, "CANCELED", "USER_FROZEN"),
        (b, "CANCELED", "USER_FROZEN"),
        (s, "CANCELED", "USER_FROZEN"),
    ]
    assert ex.open_ids() == [other]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)
    assert ex.bal(1, "BTC") == (10 * BTC, 0)
    assert ex.bal(1, "ETH")[1] == 0


# ---------------------------------------------------------------------------- configuration


def test_asset_decimals_are_immutable(ex: Exchange) -> None:
    ex.reject(c.UpsertAsset("BTC", 6), "ASSET_DECIMALS_IMMUTABLE")
    assert ex.ok(c.UpsertAsset("BTC", 8)).events == [ev.AssetUpserted("BTC", 8)]
    for symbol, decimals in (("", 8), ("BT-C", 8), ("X" * 17, 8), ("NEW", 31), ("NEW", -1)):
        ex.reject(c.UpsertAsset(symbol, decimals), "INVALID_ASSET")
    ex.ok(c.UpsertAsset("NEW", 30))


def test_market_shape_cannot_change_with_open_orders(funded: Exchange) -> None:
    ex = funded
    stop = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="28000").order_id
    for change in (
        {"tick_size": "0.1"},
        {"step_size": "0.0001", "min_qty": "0.001"},
        {"quote": "ETH", "tick_size": "0.00001"},
    ):
        ex.reject(c.UpsertMarket(msgspec.structs.replace(BTC_USDT, **change)), "MARKET_HAS_ORDERS")
    # Fees, limits and the band may change with orders open.
    looser = msgspec.structs.replace(BTC_USDT, maker_fee="0", min_notional="1", protection_bps=100)
    ex.ok(c.UpsertMarket(looser))
    assert ex.engine.markets["BTC-USDT"].rules.maker_fee == 0
    ex.buy(2, "0.001", "5000")  # 5 USDT: allowed under the new min_notional
    ex.ok(c.CancelAll(2))
    ex.cancel(1, stop)
    ex.ok(c.UpsertMarket(msgspec.structs.replace(BTC_USDT, tick_size="0.1")))
    assert ex.engine.markets["BTC-USDT"].rules.notional_unit == 100
    assert ex.px("30000") == 300_000


def test_market_validation(ex: Exchange) -> None:
    ex.reject(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, quote="DOGE")), "UNKNOWN_ASSET")
    ex.reject(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, quote="ETH")), "INVALID_MARKET")
    ex.reject(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, symbol="")), "INVALID_MARKET")
    ex.reject(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, status="OPEN")), "INVALID_MARKET")
    ex.reject(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, step_size="0.000000001")),
              "INVALID_MARKET")  # fmt: skip


def test_market_can_be_created_halted(ex: Exchange) -> None:
    spec = msgspec.structs.replace(ETH_USDT, symbol="ETH-BTC", quote="BTC", tick_size="0.00001",
                                   min_notional="0.0001", status="HALTED")  # fmt: skip
    ex.ok(c.UpsertMarket(spec))
    ex.deposit(1, "BTC", BTC)
    ex.reject(c.PlaceOrder(1, "ETH-BTC", "BUY", quantity=1, price=5_000), "MARKET_HALTED")
    ex.ok(c.SetMarketStatus("ETH-BTC", "TRADING"))
    ex.ok(c.PlaceOrder(1, "ETH-BTC", "BUY", quantity=1, price=5_000))


def test_freeze_with_cancel_orders_leaves_orders_in_a_halted_market(funded: Exchange) -> None:
    ex = funded
    halted = ex.buy(1, "0.1", "29000").order_id
    eth = ex.place(1, "BUY", "1", "2000", market="ETH-USDT").order_id
    ex.ok(c.SetMarketStatus("BTC-USDT", "HALTED"))
    result = ex.ok(c.FreezeUser(1, cancel_orders=True))
    assert [u.order_id for u in of_type(result, ev.OrderUpdated)] == [eth]
    assert ex.open_ids(1) == [halted]
