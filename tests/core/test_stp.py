"""Self-trade prevention, as Binance: the taker's mode decides what happens when it meets
an order of its own user. Orders expired by STP end EXPIRED_IN_MATCH."""

from __future__ import annotations

import msgspec
import pytest
from conftest import BTC, BTC_USDT, PPM, USDT, Exchange, ceil_div, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.model import AVAILABLE, LOCKED, RELEASE


@pytest.fixture
def book(funded: Exchange) -> tuple[Exchange, int, int, int]:
    """Asks at 30000: user 2 (0.1), then user 1 (0.1), then user 2 (0.1)."""
    ex = funded
    first = ex.sell(2, "0.1", "30000").order_id
    own = ex.sell(1, "0.1", "30000").order_id
    third = ex.sell(2, "0.1", "30000").order_id
    return ex, first, own, third


def test_stp_none_lets_the_user_trade_with_itself(funded: Exchange) -> None:
    ex = funded
    maker = ex.sell(1, "0.1", "30000").order_id
    result = ex.buy(1, "0.1", "30000", stp="NONE")
    (trade,) = of_type(result, ev.Trade)
    assert (trade.maker_order_id, trade.maker_user, trade.taker_user) == (maker, 1, 1)
    assert ex.status(maker) == ex.status(result.order_id) == "FILLED"
    buyer_fee = ceil_div(10_000_000 * 2000, PPM)  # taker fee on the 0.1 BTC received
    seller_fee = ceil_div(3_000 * USDT * 1000, PPM)  # maker fee on the 3000 USDT received
    assert ex.bal(1, "BTC") == (10 * BTC - buyer_fee, 0)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - seller_fee, 0)


def test_expire_taker(book: tuple[Exchange, int, int, int]) -> None:
    ex, first, own, third = book
    result = ex.buy(1, "0.3", "30000", stp="EXPIRE_TAKER")
    taker = result.order_id
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [(first, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled, final.reason) == (
        taker, "EXPIRED_IN_MATCH", 100, "SELF_TRADE_PREVENTED",
    )  # fmt: skip
    assert ex.engine.orders[own].status == "NEW"
    assert ex.engine.orders[third].status == "NEW"
    assert ex.depth() == ([], [(3_000_000, 200)])
    # Reserved 9000 USDT, paid 3000, the 6000 left released.
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)
    assert taker not in ex.engine.orders


def test_expire_maker(book: tuple[Exchange, int, int, int]) -> None:
    ex, first, own, third = book
    result = ex.buy(1, "0.3", "30000", stp="EXPIRE_MAKER")
    taker = result.order_id
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (first, 100),
        (third, 100),
    ]
    own_updates = [u for u in of_type(result, ev.OrderUpdated) if u.order_id == own]
    assert [(u.status, u.filled, u.reason) for u in own_updates] == [
        ("EXPIRED_IN_MATCH", 0, "SELF_TRADE_PREVENTED")
    ]
    assert ev.Transfer("BTC", 10_000_000, LOCKED, 1, AVAILABLE, 1, RELEASE, own) in result.events
    # The taker carries on and rests its last 0.1.
    order = ex.engine.orders[taker]
    assert (order.status, order.filled) == ("PARTIALLY_FILLED", 200)
    assert ex.depth() == ([(3_000_000, 100)], [])
    assert ex.bal(1, "BTC") == (10 * BTC + 20_000_000 - 2 * ceil_div(10_000_000 * 2000, PPM), 0)


def test_expire_both(book: tuple[Exchange, int, int, int]) -> None:
    ex, first, own, third = book
    result = ex.buy(1, "0.3", "30000", stp="EXPIRE_BOTH")
    taker = result.order_id
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [(first, 100)]
    statuses = {u.order_id: (u.status, u.filled) for u in of_type(result, ev.OrderUpdated)}
    assert statuses[own] == ("EXPIRED_IN_MATCH", 0)
    assert statuses[taker] == ("EXPIRED_IN_MATCH", 100)
    assert ex.engine.orders[third].status == "NEW"
    assert ex.depth() == ([], [(3_000_000, 100)])
    assert ex.bal(1, "BTC") == (10 * BTC + 10_000_000 - ceil_div(10_000_000 * 2000, PPM), 0)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)


def test_decrement_smaller_taker_expires_and_the_maker_shrinks(funded: Exchange) -> None:
    ex = funded
    maker = ex.sell(1, "0.5", "30000").order_id
    result = ex.buy(1, "0.2", "30000", stp="DECREMENT")
    taker = result.order_id
    assert of_type(result, ev.Trade) == []
    updates = of_type(result, ev.OrderUpdated)
    assert [(u.order_id, u.status, u.filled, u.quantity, u.reason) for u in updates] == [
        (maker, "NEW", 0, 300, "SELF_TRADE_DECREMENTED"),  # the maker stays, smaller
        (taker, "EXPIRED_IN_MATCH", 0, 0, "SELF_TRADE_PREVENTED"),
    ]
    order = ex.engine.orders[maker]
    assert (order.quantity, order.filled, order.status) == (300, 0, "NEW")
    releases = [
        (t.ref, t.asset, t.amount) for t in of_type(result, ev.Transfer) if t.reason == RELEASE
    ]
    assert sorted(releases) == sorted([(maker, "BTC", 20_000_000), (taker, "USDT", 6_000 * USDT)])
    assert ex.bal(1, "BTC") == (10 * BTC - 30_000_000, 30_000_000)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)
    assert ex.depth() == ([], [(3_000_000, 300)])


def test_decrement_smaller_maker_expires_and_the_taker_goes_on(funded: Exchange) -> None:
    ex = funded
    own = ex.sell(1, "0.1", "30000").order_id
    other = ex.sell(2, "0.2", "30000").order_id
    result = ex.buy(1, "0.2", "30000", stp="DECREMENT")
    taker = result.order_id
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [(other, 100)]
    statuses = {u.order_id: (u.status, u.filled) for u in of_type(result, ev.OrderUpdated)}
    assert statuses[own] == ("EXPIRED_IN_MATCH", 0)
    assert statuses[taker] == ("FILLED", 100)
    assert ex.engine.orders[other].filled == 100
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)
    assert ex.bal(1, "BTC") == (10 * BTC + 10_000_000 - ceil_div(10_000_000 * 2000, PPM), 0)


def test_decrement_equal_quantities_expire_both(funded: Exchange) -> None:
    ex = funded
    own = ex.sell(1, "0.1", "30000").order_id
    result = ex.buy(1, "0.1", "30000", stp="DECREMENT")
    statuses = {u.order_id: u.status for u in of_type(result, ev.OrderUpdated)}
    assert statuses == {own: "EXPIRED_IN_MATCH", result.order_id: "EXPIRED_IN_MATCH"}
    assert of_type(result, ev.Trade) == []
    assert ex.engine.orders == {}
    assert ex.bal(1, "BTC") == (10 * BTC, 0)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)


def test_the_takers_mode_decides(funded: Exchange) -> None:
    ex = funded
    maker = ex.sell(1, "0.1", "30000", stp="EXPIRE_TAKER").order_id
    result = ex.buy(1, "0.05", "30000", stp="NONE")
    assert [t.maker_order_id for t in of_type(result, ev.Trade)] == [maker]
    maker2 = ex.sell(3, "0.1", "29500", stp="NONE").order_id
    result = ex.buy(3, "0.05", "29500", stp="EXPIRE_MAKER")
    assert of_type(result, ev.Trade) == []
    assert ex.status(maker2) == "EXPIRED_IN_MATCH"


def test_default_stp_applies_when_the_order_gives_none(funded: Exchange) -> None:
    ex = funded
    maker = ex.sell(1, "0.1", "30000").order_id
    result = ex.buy(1, "0.1", "30000")
    assert of_type(result, ev.OrderAccepted)[0].stp == "EXPIRE_MAKER"  # the market default
    assert ex.status(maker) == "EXPIRED_IN_MATCH"
    assert of_type(result, ev.Trade) == []
    assert ex.engine.orders[result.order_id].status == "NEW"


def test_allowed_stp_modes_are_enforced(funded: Exchange) -> None:
    ex = funded
    strict = msgspec.structs.replace(
        BTC_USDT, default_stp="EXPIRE_TAKER", allowed_stp=("EXPIRE_TAKER", "EXPIRE_BOTH")
    )
    ex.ok(c.UpsertMarket(strict))
    for mode in ("NONE", "EXPIRE_MAKER", "DECREMENT"):
        ex.reject(ex.order(1, "BUY", "0.1", "29000", stp=mode), "STP_MODE_NOT_ALLOWED")
    assert ex.buy(1, "0.1", "29000", stp="EXPIRE_BOTH").order_id
    result = ex.buy(1, "0.1", "29000")
    assert of_type(result, ev.OrderAccepted)[0].stp == "EXPIRE_TAKER"
    # Other markets are unaffected.
    assert ex.place(1, "BUY", "1", "2000", market="ETH-USDT", stp="NONE").order_id


def test_market_order_self_trade_expire_taker(funded: Exchange) -> None:
    ex = funded
    other = ex.sell(2, "0.1", "30000").order_id
    ex.sell(1, "0.1", "30000")
    result = ex.place(1, "BUY", "0.3", type="MARKET", stp="EXPIRE_TAKER")
    assert [t.maker_order_id for t in of_type(result, ev.Trade)] == [other]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled, final.quantity) == ("EXPIRED_IN_MATCH", 100, 300)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)


def test_quote_market_buy_expired_by_stp_reports_its_real_quantity(funded: Exchange) -> None:
    """A market buy by quote amount reports quantity == filled when it closes (as it does
    when FILLED or EXPIRED); an STP expiry must not leak an internal placeholder."""
    ex = funded
    other = ex.sell(2, "0.1", "30000").order_id
    ex.sell(1, "0.1", "30000")
    result = ex.place(1, "BUY", type="MARKET", quote_quantity=10_000 * USDT, stp="EXPIRE_TAKER")
    assert [t.maker_order_id for t in of_type(result, ev.Trade)] == [other]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled, final.quantity) == (
        result.order_id, "EXPIRED_IN_MATCH", 100, 100,
    )  # fmt: skip
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 0)


def test_decrement_quote_market_buy_cuts_only_what_its_amount_could_buy(funded: Exchange) -> None:
    """30 USDT buys one lot (0.001 BTC) at 30000: DECREMENT reduces both sides by that
    overlap of one lot, so the 0.1 BTC maker keeps 0.099 BTC and the taker expires."""
    ex = funded
    own = ex.sell(1, "0.1", "30000").order_id
    result = ex.place(1, "BUY", type="MARKET", quote_quantity=30 * USDT, stp="DECREMENT")
    assert of_type(result, ev.Trade) == []
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (
        result.order_id, "EXPIRED_IN_MATCH", 0,
    )  # fmt: skip
    assert own in ex.engine.orders
    assert ex.engine.orders[own].quantity == 99
    assert ex.depth() == ([], [(3_000_000, 99)])
    assert ex.bal(1, "USDT") == (1_000_000 * USDT, 0)
    assert ex.bal(1, "BTC") == (10 * BTC - 9_900_000, 9_900_000)


def test_decrement_against_an_iceberg_refreshes_its_slice_at_the_back(funded: Exchange) -> None:
    ex = funded
    iceberg = ex.sell(1, "1", "30000", iceberg_quantity="0.1").order_id
    other = ex.sell(2, "0.1", "30000").order_id
    result = ex.buy(1, "0.15", "30000", stp="DECREMENT")
    # The visible 0.1 of the iceberg is cut from both; the taker's last 0.05 trades with
    # user 2, now ahead of the iceberg's refreshed slice.
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [(other, 50)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (result.order_id, "FILLED", 50)
    order = ex.engine.orders[iceberg]
    assert (order.quantity, order.filled, order.display) == (900, 0, 100)
    assert ex.bal(1, "BTC") == (10 * BTC - 90_000_000 + 5_000_000 - 10_000, 90_000_000)
    assert ex.depth() == ([], [(3_000_000, 150)])
    taker = ex.buy(3, "0.1", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(taker, ev.Trade)] == [
        (other, 50),
        (iceberg, 50),
    ]
