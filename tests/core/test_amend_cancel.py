"""Amending and cancelling orders; client order ids."""

from __future__ import annotations

from conftest import BTC, USDT, Exchange, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.model import AVAILABLE, LOCKED, RELEASE, RESERVE

# ---------------------------------------------------------------------------- amend


def test_quantity_decrease_keeps_priority_and_releases_exactly_the_freed_part(
    funded: Exchange,
) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    b = ex.sell(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2")))
    assert result.order_id == a
    assert result.events == [
        ev.Transfer("BTC", 10_000_000, LOCKED, 1, AVAILABLE, 1, RELEASE, a),
        ev.OrderAmended(a, 1, "BTC-USDT", 3_000_000, 200, True),
    ]
    assert ex.bal(1, "BTC") == (10 * BTC - 20_000_000, 20_000_000)
    assert ex.depth() == ([], [(3_000_000, 300)])
    taker = ex.buy(3, "0.1", "30000")
    assert [t.maker_order_id for t in of_type(taker, ev.Trade)] == [a]
    assert ex.engine.orders[b].filled == 0


def test_buy_quantity_decrease_releases_quote(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.3", "30000").order_id
    b = ex.buy(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.1")))
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("USDT", 6_000 * USDT, LOCKED, 1, AVAILABLE, 1, RELEASE, a)
    ]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 3_000 * USDT)
    taker = ex.sell(3, "0.15", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(taker, ev.Trade)] == [
        (a, 100),
        (b, 50),
    ]


def test_quantity_increase_requeues_at_the_back(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.1", "30000").order_id
    b = ex.sell(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2")))
    assert result.events == [
        ev.Transfer("BTC", 10_000_000, AVAILABLE, 1, LOCKED, 1, RESERVE, a),
        ev.OrderAmended(a, 1, "BTC-USDT", 3_000_000, 200, False),
    ]
    assert ex.bal(1, "BTC") == (10 * BTC - 20_000_000, 20_000_000)
    taker = ex.buy(3, "0.15", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(taker, ev.Trade)] == [
        (b, 100),
        (a, 50),
    ]


def test_price_change_requeues_at_the_back_of_the_new_level(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.1", "30100").order_id
    c_ = ex.sell(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, price=ex.px("30000")))
    assert of_type(result, ev.OrderAmended) == [
        ev.OrderAmended(a, 1, "BTC-USDT", 3_000_000, 100, False)
    ]
    assert of_type(result, ev.Transfer) == []  # a sell's reservation does not depend on price
    assert ex.depth() == ([], [(3_000_000, 200)])
    taker = ex.buy(3, "0.15", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(taker, ev.Trade)] == [
        (c_, 100),
        (a, 50),
    ]


def test_price_decrease_of_a_bid_releases_and_increase_reserves(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, price=ex.px("28000")))
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("USDT", 100 * USDT, LOCKED, 1, AVAILABLE, 1, RELEASE, a)
    ]
    result = ex.ok(c.AmendOrder(1, order_id=a, price=ex.px("28500"), quantity=ex.lots("0.2")))
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("USDT", 2_900 * USDT, AVAILABLE, 1, LOCKED, 1, RESERVE, a)  # 5700 - 2800
    ]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 5_700 * USDT, 5_700 * USDT)
    assert ex.depth() == ([(2_850_000, 200)], [])
    ex.engine.check_invariants()


def test_amend_that_now_crosses_trades_at_the_makers_price(funded: Exchange) -> None:
    ex = funded
    bid = ex.buy(1, "0.1", "29000").order_id
    ask = ex.sell(2, "0.1", "29500").order_id
    result = ex.ok(c.AmendOrder(1, order_id=bid, price=ex.px("29600")))
    (trade,) = of_type(result, ev.Trade)
    assert (trade.maker_order_id, trade.taker_order_id, trade.price, trade.quantity) == (
        ask, bid, 2_950_000, 100,
    )  # fmt: skip
    assert ex.status(bid) == ex.status(ask) == "FILLED"
    # Reserved 2900, then 60 more for 29600; paid 2950, released 10.
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 2_950 * USDT, 0)
    assert ex.depth() == ([], [])


def test_amend_increase_without_funds_is_rejected(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 5_000 * USDT)
    a = ex.buy(1, "0.1", "30000").order_id  # 3000 locked, 2000 free
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.17")), "INSUFFICIENT_BALANCE")
    ex.reject(c.AmendOrder(1, order_id=a, price=ex.px("50001")), "INSUFFICIENT_BALANCE")
    # Exactly the available amount is enough: 0.1 x 50000 = 5000.
    ex.ok(c.AmendOrder(1, order_id=a, price=ex.px("50000")))
    assert ex.bal(1, "USDT") == (0, 5_000 * USDT)


def test_amend_to_filled_or_less_is_rejected(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    ex.buy(2, "0.1", "30000")
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.1")), "INVALID_QUANTITY")
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.05")), "INVALID_QUANTITY")
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.15")))
    # 0.2 BTC was still locked; 0.05 remains to be sold.
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("BTC", 15_000_000, LOCKED, 1, AVAILABLE, 1, RELEASE, a)
    ]
    order = ex.engine.orders[a]
    assert (order.quantity, order.filled, order.status) == (150, 100, "PARTIALLY_FILLED")
    assert ex.depth() == ([], [(3_000_000, 50)])


def test_amend_validation(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000", client_order_id="mine").order_id
    ex.reject(c.AmendOrder(1, order_id=a), "INVALID_AMEND")
    ex.reject(c.AmendOrder(1, order_id=a, quantity=300, price=3_000_000), "INVALID_AMEND")
    ex.reject(c.AmendOrder(2, order_id=a, quantity=200), "UNKNOWN_ORDER")
    ex.reject(c.AmendOrder(1, order_id=999, quantity=200), "UNKNOWN_ORDER")
    ex.reject(c.AmendOrder(1, order_id=a, quantity=100_001), "INVALID_QUANTITY")
    ex.reject(c.AmendOrder(1, order_id=a, price=10**15 + 1), "INVALID_PRICE")
    ex.reject(c.AmendOrder(1, order_id=a, price=1), "NOTIONAL_TOO_SMALL")
    ex.reject(c.AmendOrder(1), "INVALID_ORDER")
    result = ex.ok(c.AmendOrder(1, client_order_id="mine", quantity=ex.lots("0.2")))
    assert of_type(result, ev.OrderAmended)[0].order_id == a


def test_amended_limit_maker_may_not_cross(funded: Exchange) -> None:
    ex = funded
    ex.sell(2, "0.1", "30000")
    a = ex.place(1, "BUY", "0.1", "29000", type="LIMIT_MAKER").order_id
    ex.reject(c.AmendOrder(1, order_id=a, price=ex.px("30000")), "ORDER_WOULD_TAKE")
    ex.ok(c.AmendOrder(1, order_id=a, price=ex.px("29999.99")))
    assert ex.depth() == ([(2_999_999, 100)], [(3_000_000, 100)])


def test_iceberg_decrease_keeps_priority_and_trims_the_visible_slice(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "1", "30000", iceberg_quantity="0.1").order_id
    b = ex.sell(2, "0.1", "30000").order_id
    ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.05")))
    order = ex.engine.orders[a]
    assert (order.quantity, order.display) == (50, 50)
    assert ex.depth() == ([], [(3_000_000, 150)])
    taker = ex.buy(3, "0.06", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(taker, ev.Trade)] == [
        (a, 50),
        (b, 10),
    ]


# ---------------------------------------------------------------------------- cancel


def test_cancel_by_order_id(funded: Exchange) -> None:
    ex = funded
    oid = ex.buy(1, "0.1", "29000").order_id
    result = ex.cancel(1, oid)
    assert result.order_id == oid
    assert result.events == [
        ev.Transfer("USDT", 2_900 * USDT, LOCKED, 1, AVAILABLE, 1, RELEASE, oid),
        ev.OrderUpdated(oid, 1, "BTC-USDT", "CANCELED", 0, 100, "USER_CANCELED"),
    ]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)
    assert ex.depth() == ([], [])
    assert ex.engine.orders == {}


def test_cancel_by_client_order_id(funded: Exchange) -> None:
    ex = funded
    oid = ex.sell(1, "0.1", "31000", client_order_id="abc").order_id
    result = ex.ok(c.CancelOrder(1, client_order_id="abc"))
    assert result.order_id == oid
    assert [(u.order_id, u.status) for u in of_type(result, ev.OrderUpdated)] == [(oid, "CANCELED")]
    ex.reject(c.CancelOrder(1, client_order_id="abc"), "UNKNOWN_ORDER")


def test_another_users_order_looks_exactly_like_a_missing_one(funded: Exchange) -> None:
    ex = funded
    oid = ex.buy(1, "0.1", "29000", client_order_id="secret").order_id
    foreign = ex.reject(c.CancelOrder(2, order_id=oid), "UNKNOWN_ORDER")
    missing = ex.reject(c.CancelOrder(2, order_id=oid + 100), "UNKNOWN_ORDER")
    foreign_cid = ex.reject(c.CancelOrder(2, client_order_id="secret"), "UNKNOWN_ORDER")
    assert foreign.message == missing.message == foreign_cid.message
    assert ex.engine.orders[oid].status == "NEW"


def test_cancel_of_a_closed_order_is_unknown(funded: Exchange) -> None:
    ex = funded
    filled = ex.sell(1, "0.1", "30000").order_id
    ex.buy(2, "0.1", "30000")
    ex.reject(c.CancelOrder(1, order_id=filled), "UNKNOWN_ORDER")
    cancelled = ex.buy(1, "0.1", "29000").order_id
    ex.cancel(1, cancelled)
    ex.reject(c.CancelOrder(1, order_id=cancelled), "UNKNOWN_ORDER")
    ex.reject(c.CancelOrder(1), "INVALID_ORDER")


def test_cancel_partially_filled_releases_only_the_rest(funded: Exchange) -> None:
    ex = funded
    oid = ex.buy(1, "0.3", "30000").order_id
    ex.sell(2, "0.1", "30000")
    result = ex.cancel(1, oid)
    assert result.events == [
        ev.Transfer("USDT", 6_000 * USDT, LOCKED, 1, AVAILABLE, 1, RELEASE, oid),
        ev.OrderUpdated(oid, 1, "BTC-USDT", "CANCELED", 100, 300, "USER_CANCELED"),
    ]
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)


def test_cancel_all_of_a_user(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    other = ex.buy(2, "0.1", "29000").order_id
    b = ex.place(1, "SELL", "1", "2500", market="ETH-USDT").order_id
    s = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="28000").order_id
    result = ex.ok(c.CancelAll(1))
    assert [(u.order_id, u.status, u.reason) for u in of_type(result, ev.OrderUpdated)] == [
        (a, "CANCELED", "USER_CANCELED"),
        (b, "CANCELED", "USER_CANCELED"),
        (s, "CANCELED", "USER_CANCELED"),
    ]
    assert ex.open_ids() == [other]
    for asset in ("BTC", "ETH", "USDT"):
        assert ex.bal(1, asset)[1] == 0
    assert ex.ok(c.CancelAll(1)).events == []


def test_cancel_all_in_one_market(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.1", "29000").order_id
    b = ex.place(1, "SELL", "1", "2500", market="ETH-USDT").order_id
    c2 = ex.sell(1, "0.1", "31000").order_id
    result = ex.ok(c.CancelAll(1, market="BTC-USDT"))
    assert [u.order_id for u in of_type(result, ev.OrderUpdated)] == [a, c2]
    assert ex.open_ids(1) == [b]
    ex.reject(c.CancelAll(1, market="NOPE-USDT"), "UNKNOWN_MARKET")


# ---------------------------------------------------------------------------- client ids


def test_duplicate_client_order_id_among_open_orders(funded: Exchange) -> None:
    ex = funded
    first = ex.buy(1, "0.1", "29000", client_order_id="x").order_id
    ex.reject(ex.order(1, "SELL", "0.1", "31000", client_order_id="x"), "DUPLICATE_CLIENT_ORDER_ID")
    ex.reject(
        ex.order(1, "SELL", "1", "2500", market="ETH-USDT", client_order_id="x"),
        "DUPLICATE_CLIENT_ORDER_ID",
    )
    ex.buy(2, "0.1", "29000", client_order_id="x")  # ids are per user
    ex.cancel(1, first)
    second = ex.buy(1, "0.1", "29000", client_order_id="x").order_id
    ex.sell(3, "0.2", "29000")  # fills user 2's order, then `second`
    assert ex.status(second) == "FILLED"
    third = ex.buy(1, "0.1", "28000", client_order_id="x").order_id
    assert ex.engine.client_ids[(1, "x")] == third


def test_client_order_id_of_an_immediately_closed_order_is_free_again(funded: Exchange) -> None:
    ex = funded
    ex.buy(1, "0.1", "29000", client_order_id="ioc", time_in_force="IOC")
    ex.buy(1, "0.1", "29000", client_order_id="ioc")


def test_client_order_id_of_an_untriggered_stop_is_taken(funded: Exchange) -> None:
    ex = funded
    ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="28000", client_order_id="s")
    ex.reject(ex.order(1, "SELL", "0.1", "31000", client_order_id="s"), "DUPLICATE_CLIENT_ORDER_ID")


def test_client_order_id_length(funded: Exchange) -> None:
    ex = funded
    ex.buy(1, "0.1", "29000", client_order_id="k" * 64)
    ex.reject(ex.order(1, "BUY", "0.1", "29000", client_order_id="k" * 65), "INVALID_ORDER")
