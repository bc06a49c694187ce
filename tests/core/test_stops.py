"""Stop orders: UNTRIGGERED until the market's last trade price meets the stop.

BUY STOP_LOSS and SELL TAKE_PROFIT fire when last >= stop; SELL STOP_LOSS and BUY
TAKE_PROFIT fire when last <= stop. Among all stops that hold, the lowest order id fires
first and matches fully, then the conditions are evaluated again (cascades run inside the
command that started them).
"""

from __future__ import annotations

import pytest
from conftest import BTC, USDT, Exchange, kinds, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.model import AVAILABLE, LOCKED, RELEASE, RESERVE


def trade_at(ex: Exchange, price: str) -> None:
    """User 4 offers 0.001 BTC at ``price`` and user 2 takes it, so that a trade happens at
    ``price`` (the taker's result, with any stops it fired, is ``ex.results[-1]``)."""
    ex.sell(4, "0.001", price)
    ex.buy(2, "0.001", price)
    assert of_type(ex.results[-1], ev.Trade)[0].price == ex.px(price)


@pytest.fixture
def traded(funded: Exchange) -> Exchange:
    """Last price 30000, empty book."""
    trade_at(funded, "30000")
    assert funded.depth() == ([], [])
    return funded


def test_buy_stop_loss_waits_then_fires_at_or_above_its_stop(traded: Exchange) -> None:
    ex = traded
    result = ex.place(1, "BUY", "0.1", type="STOP_LOSS", stop_price="30500")
    stop = result.order_id
    (accepted,) = of_type(result, ev.OrderAccepted)
    assert (accepted.status, accepted.stop_price, accepted.price) == ("UNTRIGGERED", 3_050_000, 0)
    # A market buy is reserved at the 5 % band above its stop: 0.1 x 32025 = 3202.5 USDT.
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("USDT", 3_202_500_000, AVAILABLE, 1, LOCKED, 1, RESERVE, stop)
    ]
    assert ex.depth() == ([], [])
    assert ex.engine.orders[stop].status == "UNTRIGGERED"

    ex.sell(3, "0.5", "30600")  # liquidity for the stop
    trade_at(ex, "30499.99")
    assert ex.engine.orders[stop].status == "UNTRIGGERED"
    assert of_type(ex.results[-1], ev.OrderTriggered) == []

    trade_at(ex, "30500")
    result = ex.results[-1]
    assert kinds(result) == [
        "OrderAccepted", "Trade", "OrderUpdated", "OrderUpdated",  # user 2 takes user 4's ask
        "OrderTriggered", "Trade", "OrderUpdated", "OrderUpdated",
    ]  # fmt: skip
    (triggered,) = of_type(result, ev.OrderTriggered)
    assert (triggered.order_id, triggered.user, triggered.last_price) == (stop, 1, 3_050_000)
    stop_trade = of_type(result, ev.Trade)[1]
    assert (stop_trade.taker_order_id, stop_trade.price, stop_trade.quantity) == (
        stop, 3_060_000, 100,
    )  # fmt: skip
    assert ex.status(stop) == "FILLED"
    # Paid 3060 USDT of the 3202.5 reserved; the rest came back.
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_060 * USDT, 0)
    assert ex.engine.markets["BTC-USDT"].last_price == 3_060_000
    ex.engine.check_invariants()


def test_sell_stop_loss_fires_at_or_below_its_stop(traded: Exchange) -> None:
    ex = traded
    stop = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29500").order_id
    assert ex.bal(1, "BTC") == (10 * BTC - 10_000_000, 10_000_000)
    ex.buy(3, "0.5", "29400")
    trade_at(ex, "29500.01")
    assert ex.engine.orders[stop].status == "UNTRIGGERED"
    trade_at(ex, "29500")
    (triggered,) = of_type(ex.results[-1], ev.OrderTriggered)
    assert (triggered.order_id, triggered.last_price) == (stop, 2_950_000)
    trades = [t for t in of_type(ex.results[-1], ev.Trade) if t.taker_order_id == stop]
    assert [(t.price, t.quantity, t.maker_user) for t in trades] == [(2_940_000, 100, 3)]
    assert ex.status(stop) == "FILLED"
    assert ex.bal(1, "BTC") == (10 * BTC - 10_000_000, 0)


@pytest.mark.parametrize(
    ("side", "otype", "stop", "quiet", "fires"),
    [
        ("BUY", "TAKE_PROFIT", "29500", "29500.01", "29500"),  # buy the dip: last <= stop
        ("SELL", "TAKE_PROFIT", "30500", "30499.99", "30500"),  # sell the rally: last >= stop
        ("BUY", "STOP_LOSS", "30500", "30499.99", "30500"),
        ("SELL", "STOP_LOSS", "29500", "29500.01", "29500"),
        ("BUY", "TAKE_PROFIT", "29500", "29600", "29000"),
        ("SELL", "TAKE_PROFIT", "30500", "30400", "31000"),
        ("BUY", "STOP_LOSS", "30500", "30000.01", "31000"),
        ("SELL", "STOP_LOSS", "29500", "29999.99", "29000"),
    ],
)
def test_trigger_direction(
    traded: Exchange, side: str, otype: str, stop: str, quiet: str, fires: str
) -> None:
    ex = traded
    oid = ex.place(1, side, "0.01", type=otype, stop_price=stop).order_id
    trade_at(ex, quiet)
    assert ex.engine.orders[oid].status == "UNTRIGGERED"
    trade_at(ex, fires)
    (triggered,) = of_type(ex.results[-1], ev.OrderTriggered)
    assert (triggered.order_id, triggered.last_price) == (oid, ex.px(fires))
    # No opposite liquidity is left: the triggered market order expires unfilled.
    assert ex.status(oid) == "EXPIRED"
    assert ex.bal(1, "USDT")[1] == 0 and ex.bal(1, "BTC")[1] == 0


def test_stop_limit_rests_as_a_limit_order_once_triggered(traded: Exchange) -> None:
    ex = traded
    result = ex.place(1, "SELL", "0.2", "29400", type="STOP_LOSS_LIMIT", stop_price="29500")
    stop = result.order_id
    assert ex.bal(1, "BTC") == (10 * BTC - 20_000_000, 20_000_000)
    ex.buy(3, "0.05", "29450")
    trade_at(ex, "29500")
    result = ex.results[-1]
    assert [t.order_id for t in of_type(result, ev.OrderTriggered)] == [stop]
    trades = [t for t in of_type(result, ev.Trade) if t.taker_order_id == stop]
    assert [(t.price, t.quantity) for t in trades] == [(2_945_000, 50)]
    order = ex.engine.orders[stop]
    assert (order.type, order.status, order.filled, order.price) == (
        "LIMIT", "PARTIALLY_FILLED", 50, 2_940_000,
    )  # fmt: skip
    assert ex.depth() == ([], [(2_940_000, 150)])
    assert ex.bal(1, "BTC") == (10 * BTC - 20_000_000, 15_000_000)
    ex.engine.check_invariants()


def test_stop_limit_buy_reserves_its_limit_price(traded: Exchange) -> None:
    ex = traded
    result = ex.place(1, "BUY", "0.1", "30600", type="STOP_LOSS_LIMIT", stop_price="30500")
    assert [(t.reason, t.amount) for t in of_type(result, ev.Transfer)] == [(RESERVE, 3_060 * USDT)]


@pytest.mark.parametrize(
    ("side", "otype", "stop"),
    [
        ("BUY", "STOP_LOSS", "30000"),
        ("BUY", "STOP_LOSS", "29000"),
        ("SELL", "STOP_LOSS", "30000"),
        ("SELL", "STOP_LOSS", "31000"),
        ("BUY", "TAKE_PROFIT", "30000"),
        ("BUY", "TAKE_PROFIT", "31000"),
        ("SELL", "TAKE_PROFIT", "30000"),
        ("SELL", "TAKE_PROFIT", "29000"),
        ("BUY", "STOP_LOSS_LIMIT", "30000"),
        ("SELL", "STOP_LOSS_LIMIT", "30000"),
        ("BUY", "TAKE_PROFIT_LIMIT", "30000"),
        ("SELL", "TAKE_PROFIT_LIMIT", "30000"),
    ],
)
def test_stop_already_met_is_rejected(traded: Exchange, side: str, otype: str, stop: str) -> None:
    ex = traded
    price = "30000" if otype.endswith("LIMIT") else 0
    order = ex.order(1, side, "0.01", price, type=otype, stop_price=stop)
    ex.reject(order, "ORDER_WOULD_TRIGGER_IMMEDIATELY")


@pytest.mark.parametrize(
    ("side", "otype", "stop"),
    [
        ("BUY", "STOP_LOSS", "30000.01"),
        ("SELL", "STOP_LOSS", "29999.99"),
        ("BUY", "TAKE_PROFIT", "29999.99"),
        ("SELL", "TAKE_PROFIT", "30000.01"),
    ],
)
def test_stop_one_tick_away_is_accepted(traded: Exchange, side: str, otype: str, stop: str) -> None:
    result = traded.place(1, side, "0.01", type=otype, stop_price=stop)
    assert traded.engine.orders[result.order_id].status == "UNTRIGGERED"


def test_any_stop_is_accepted_before_the_first_trade(funded: Exchange) -> None:
    ex = funded
    for side, otype in (("BUY", "STOP_LOSS"), ("SELL", "STOP_LOSS"),
                        ("BUY", "TAKE_PROFIT"), ("SELL", "TAKE_PROFIT")):  # fmt: skip
        result = ex.place(1, side, "0.01", type=otype, stop_price="30000")
        assert of_type(result, ev.OrderAccepted)[0].status == "UNTRIGGERED"
    assert len(ex.engine.orders) == 4


def test_lowest_order_id_fires_first_among_stops_that_hold(traded: Exchange) -> None:
    ex = traded
    first = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29000").order_id
    second = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29500").order_id
    ex.buy(3, "1", "28800")
    trade_at(ex, "28900")  # jumps past both stops at once
    result = ex.results[-1]
    assert [(t.order_id, t.last_price) for t in of_type(result, ev.OrderTriggered)] == [
        (first, 2_890_000),
        (second, 2_880_000),  # evaluated again after `first` traded at 28800
    ]
    names = kinds(result)
    first_at = names.index("OrderTriggered")
    # `first` matched completely (Trade, then its FILLED update) before `second` fired.
    assert names[first_at:] == [
        "OrderTriggered", "Trade", "OrderUpdated", "OrderUpdated",
        "OrderTriggered", "Trade", "OrderUpdated",
    ]  # fmt: skip
    stop_trades = [(t.taker_order_id, t.price) for t in of_type(result, ev.Trade)[1:]]
    assert stop_trades == [(first, 2_880_000), (second, 2_880_000)]
    assert ex.status(first) == ex.status(second) == "FILLED"


def test_stop_cascade_runs_inside_one_command(traded: Exchange) -> None:
    ex = traded
    ex.buy(3, "0.1", "29500")
    ex.buy(3, "0.05", "29400")
    ex.buy(3, "0.2", "29000")
    a = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29500").order_id
    b = ex.place(2, "SELL", "0.1", type="STOP_LOSS", stop_price="29200").order_id
    result = ex.sell(4, "0.1", "29500")
    triggered = of_type(result, ev.OrderTriggered)
    assert [(t.order_id, t.last_price) for t in triggered] == [(a, 2_950_000), (b, 2_900_000)]
    trades = [(t.taker_order_id, t.price, t.quantity) for t in of_type(result, ev.Trade)]
    assert trades == [
        (result.order_id, 2_950_000, 100),
        (a, 2_940_000, 50),
        (a, 2_900_000, 50),
        (b, 2_900_000, 100),
    ]
    assert ex.status(a) == ex.status(b) == "FILLED"
    assert ex.depth() == ([(2_900_000, 50)], [])
    assert ex.engine.markets["BTC-USDT"].last_price == 2_900_000
    ex.engine.check_invariants()


def test_cancelled_stop_releases_and_never_fires(traded: Exchange) -> None:
    ex = traded
    stop = ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29500").order_id
    result = ex.cancel(1, stop)
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("BTC", 10_000_000, LOCKED, 1, AVAILABLE, 1, RELEASE, stop)
    ]
    assert [(u.status, u.reason) for u in of_type(result, ev.OrderUpdated)] == [
        ("CANCELED", "USER_CANCELED")
    ]
    ex.buy(3, "0.5", "28900")
    trade_at(ex, "29000")
    assert of_type(ex.results[-1], ev.OrderTriggered) == []
    assert ex.bal(1, "BTC") == (10 * BTC, 0)


def test_stop_fields_are_validated(traded: Exchange) -> None:
    ex = traded
    ex.reject(ex.order(1, "SELL", "0.1", type="STOP_LOSS"), "INVALID_PRICE")
    ex.reject(ex.order(1, "SELL", "0.1", "29000", type="STOP_LOSS", stop_price="29500"),
              "INVALID_ORDER")  # fmt: skip
    ex.reject(ex.order(1, "SELL", "0.1", type="STOP_LOSS_LIMIT", stop_price="29500"),
              "INVALID_PRICE")  # fmt: skip
    ex.reject(ex.order(1, "SELL", "0.1", "29000", stop_price="29500"), "INVALID_ORDER")
    ex.reject(ex.order(1, "SELL", "0.1", type="MARKET", stop_price="29500"), "INVALID_ORDER")


@pytest.mark.parametrize("otype", ["STOP_LOSS", "TAKE_PROFIT"])
def test_a_stop_by_quote_amount_is_refused(traded: Exchange, otype: str) -> None:
    """As on Binance, where quoteOrderQty is for MARKET orders only: a waiting stop by
    quote amount would have no quantity (which broke the invariants, and `mercato audit`
    with them) and no defined reservation."""
    ex = traded
    stop = "31000" if otype == "STOP_LOSS" else "29000"
    order = ex.order(1, "BUY", type=otype, stop_price=stop, quote_quantity=1_000 * USDT)
    assert ex.reject(order, "INVALID_ORDER").message == (
        f"quote_quantity is only for MARKET orders; a {otype} BUY takes a quantity"
    )
    ex.place(1, "BUY", "0.01", type=otype, stop_price=stop)  # by quantity it waits
    ex.engine.check_invariants()


def test_untriggered_stop_cannot_be_amended(traded: Exchange) -> None:
    ex = traded
    stop = ex.place(1, "SELL", "0.2", "29000", type="STOP_LOSS_LIMIT", stop_price="29500")
    ex.reject(c.AmendOrder(1, order_id=stop.order_id, quantity=100), "ORDER_NOT_AMENDABLE")


def test_triggered_stop_limit_queues_behind_orders_placed_before_the_trigger(
    traded: Exchange,
) -> None:
    ex = traded
    stop = ex.place(1, "SELL", "0.1", "29600", type="STOP_LOSS_LIMIT", stop_price="29500")
    later = ex.sell(3, "0.1", "29600").order_id  # placed after the stop, before the trigger
    trade_at(ex, "29500")  # the stop fires and rests at 29600, behind `later`
    order = ex.engine.orders[stop.order_id]
    assert (order.type, order.status) == ("LIMIT", "NEW")
    assert ex.depth() == ([], [(2_960_000, 200)])
    result = ex.buy(4, "0.15", "29600")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (later, 100),
        (stop.order_id, 50),
    ]


def test_triggered_stop_market_buy_fills_only_what_its_reservation_pays(
    traded: Exchange,
) -> None:
    """Reserved at the band above its stop (0.1 x 32025 = 3202.5 USDT): when the book has
    gapped higher by the trigger, the fills stop when that money is spent."""
    ex = traded
    stop = ex.place(1, "BUY", "0.1", type="STOP_LOSS", stop_price="30500").order_id
    ex.sell(3, "0.05", "32000")
    ex.sell(3, "0.1", "32500")
    trade_at(ex, "30600")
    result = ex.results[-1]
    assert [t.order_id for t in of_type(result, ev.OrderTriggered)] == [stop]
    fills = [(t.price, t.quantity) for t in of_type(result, ev.Trade) if t.taker_order_id == stop]
    # 50 lots at 32000 cost 1600 USDT; the remaining 1602.5 buy 49 lots at 32500 (1592.5).
    assert fills == [(3_200_000, 50), (3_250_000, 49)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (stop, "EXPIRED", 99)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 1_600 * USDT - 1_592_500_000, 0)


def test_amend_that_trades_fires_stops_in_the_same_command(traded: Exchange) -> None:
    ex = traded
    stop = ex.place(1, "BUY", "0.1", type="STOP_LOSS", stop_price="30500").order_id
    ex.sell(3, "0.1", "30500")
    ex.sell(3, "0.2", "30600")
    bid = ex.buy(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(2, order_id=bid, price=ex.px("30500")))
    assert [(t.taker_order_id, t.price) for t in of_type(result, ev.Trade)] == [
        (bid, 3_050_000),
        (stop, 3_060_000),
    ]
    assert [t.order_id for t in of_type(result, ev.OrderTriggered)] == [stop]
    assert ex.status(stop) == "FILLED"
