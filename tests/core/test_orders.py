"""Order types: LIMIT, MARKET (by quantity and by quote amount), LIMIT_MAKER, iceberg.

Numbers (see conftest): price "30000" = 3_000_000 ticks, 1 lot = 0.001 BTC = 100_000 BTC
atoms, ticks x lots x 10 = USDT atoms. Taker fee 0.2 %, maker fee 0.1 %, band 5 %.
"""

from __future__ import annotations

import msgspec
import pytest
from conftest import BTC, ETH_USDT, PPM, USDT, Exchange, ceil_div, kinds, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.model import AVAILABLE, LOCKED, RELEASE, RESERVE


@pytest.fixture
def traded_eth(funded: Exchange) -> Exchange:
    """ETH-USDT last traded at 2000, empty book."""
    funded.place(4, "SELL", "0.01", "2000", "ETH-USDT")
    funded.place(2, "BUY", "0.01", "2000", "ETH-USDT")
    assert funded.engine.markets["ETH-USDT"].last_price == funded.px("2000", "ETH-USDT")
    return funded


# ---------------------------------------------------------------------------- LIMIT


def test_limit_buy_rests_and_reserves_price_times_quantity(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    result = ex.buy(1, "0.5", "30000", client_order_id="b1")
    oid = result.order_id
    assert oid == 1
    (accepted,) = of_type(result, ev.OrderAccepted)
    assert (accepted.order_id, accepted.user, accepted.side, accepted.type) == (
        1,
        1,
        "BUY",
        "LIMIT",
    )
    assert (accepted.quantity, accepted.price, accepted.status) == (500, 3_000_000, "NEW")
    assert accepted.client_order_id == "b1"
    # 0.5 BTC x 30000 USDT = 15000 USDT locked.
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("USDT", 15_000 * USDT, AVAILABLE, 1, LOCKED, 1, RESERVE, oid)
    ]
    assert ex.bal(1, "USDT") == (85_000 * USDT, 15_000 * USDT)
    assert ex.depth() == ([(3_000_000, 500)], [])
    order = ex.engine.orders[oid]
    assert (order.status, order.filled, order.reserved) == ("NEW", 0, 15_000 * USDT)
    assert ex.open_ids(1) == [oid]


def test_limit_sell_reserves_base_lots(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 2 * BTC)
    result = ex.sell(1, "0.5", "30000")
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("BTC", BTC // 2, AVAILABLE, 1, LOCKED, 1, RESERVE, result.order_id)
    ]
    assert ex.bal(1, "BTC") == (BTC * 3 // 2, BTC // 2)
    assert ex.depth() == ([], [(3_000_000, 500)])


def test_limit_cross_trades_at_the_makers_price_and_releases_the_improvement(
    ex: Exchange,
) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 10_000 * USDT)
    maker = ex.sell(1, "0.5", "30000").order_id
    result = ex.buy(2, "0.2", "30500")
    taker = result.order_id
    assert kinds(result) == ["OrderAccepted", "Trade", "OrderUpdated", "OrderUpdated"]
    (trade,) = of_type(result, ev.Trade)
    assert (trade.price, trade.quantity, trade.taker_side) == (3_000_000, 200, "BUY")
    assert (trade.maker_order_id, trade.taker_order_id) == (maker, taker)
    assert (trade.maker_user, trade.taker_user) == (1, 2)
    assert trade.quote_amount == 6_000 * USDT  # 0.2 x 30000
    # Taker (buyer) pays 0.2 % of the 0.2 BTC it receives, maker 0.1 % of 6000 USDT.
    assert trade.taker_fee == ceil_div(20_000_000 * 2000, PPM) == 40_000
    assert trade.maker_fee == ceil_div(6_000 * USDT * 1000, PPM) == 6 * USDT
    maker_update, taker_update = of_type(result, ev.OrderUpdated)
    assert (maker_update.order_id, maker_update.status, maker_update.filled) == (
        maker, "PARTIALLY_FILLED", 200,
    )  # fmt: skip
    assert (taker_update.order_id, taker_update.status, taker_update.filled) == (
        taker, "FILLED", 200,
    )  # fmt: skip
    # Reserved 0.2 x 30500 = 6100 USDT, paid 6000, released the 100 USDT improvement.
    reserve_release = [t for t in of_type(result, ev.Transfer) if t.reason in (RESERVE, RELEASE)]
    assert reserve_release == [
        ev.Transfer("USDT", 6_100 * USDT, AVAILABLE, 2, LOCKED, 2, RESERVE, taker),
        ev.Transfer("USDT", 100 * USDT, LOCKED, 2, AVAILABLE, 2, RELEASE, taker),
    ]
    assert ex.bal(2, "USDT") == (4_000 * USDT, 0)
    assert ex.bal(2, "BTC") == (20_000_000 - 40_000, 0)
    assert ex.bal(1, "BTC") == (BTC // 2, 30_000_000)  # 0.3 BTC still locked for the rest
    assert ex.bal(1, "USDT") == (6_000 * USDT - 6 * USDT, 0)
    assert ex.engine.fees == {"BTC": 40_000, "USDT": 6 * USDT}
    assert ex.depth() == ([], [(3_000_000, 300)])
    assert ex.engine.markets["BTC-USDT"].last_price == 3_000_000
    ex.engine.check_invariants()


def test_limit_walks_levels_best_first_and_rests_the_rest(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 100_000 * USDT)
    a = ex.sell(1, "0.1", "30100").order_id
    b = ex.sell(1, "0.1", "30000").order_id
    ex.sell(1, "0.1", "30300")  # beyond the buyer's limit
    result = ex.buy(2, "0.3", "30200")
    taker = result.order_id
    trades = of_type(result, ev.Trade)
    assert [(t.maker_order_id, t.price, t.quantity) for t in trades] == [
        (b, 3_000_000, 100),
        (a, 3_010_000, 100),
    ]
    # Resting 0.1 at 30200 keeps 3020 USDT; reserved 0.3 x 30200 = 9060, paid 3000 + 3010.
    assert ex.bal(2, "USDT") == (100_000 * USDT - 9_060 * USDT + 30 * USDT, 3_020 * USDT)
    assert ex.depth() == ([(3_020_000, 100)], [(3_030_000, 100)])
    assert ex.status(taker) == "PARTIALLY_FILLED"
    assert ex.engine.orders[taker].filled == 200
    ex.engine.check_invariants()


def test_fifo_within_a_level(funded: Exchange) -> None:
    ex = funded
    first = ex.sell(1, "0.1", "30000").order_id
    second = ex.sell(2, "0.1", "30000").order_id
    third = ex.sell(3, "0.1", "30000").order_id
    result = ex.buy(4, "0.15", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (first, 100),
        (second, 50),
    ]
    result = ex.buy(4, "0.1", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (second, 50),
        (third, 50),
    ]


def test_limit_sell_cross_fees_in_quote_for_the_taker(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.3", "30000")
    result = ex.sell(2, "0.3", "29000")
    (trade,) = of_type(result, ev.Trade)
    assert (trade.price, trade.quantity, trade.taker_side) == (3_000_000, 300, "SELL")
    assert trade.quote_amount == 9_000 * USDT
    assert trade.taker_fee == ceil_div(9_000 * USDT * 2000, PPM) == 18 * USDT
    assert trade.maker_fee == ceil_div(30_000_000 * 1000, PPM) == 30_000
    assert ex.bal(2, "USDT") == (9_000 * USDT - 18 * USDT, 0)
    assert ex.bal(2, "BTC") == (70_000_000, 0)
    assert ex.bal(1, "BTC") == (30_000_000 - 30_000, 0)
    assert ex.bal(1, "USDT") == (91_000 * USDT, 0)


# ---------------------------------------------------------------------------- MARKET


def test_market_buy_by_quantity_stops_at_the_band_and_expires_the_rest(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 100_000 * USDT)
    a = ex.sell(1, "0.1", "30000").order_id
    b = ex.sell(1, "0.1", "31000").order_id
    ex.sell(1, "0.1", "31600")  # band: 30000 x 1.05 = 31500
    result = ex.place(2, "BUY", "0.3", type="MARKET")
    taker = result.order_id
    assert [(t.maker_order_id, t.price, t.quantity) for t in of_type(result, ev.Trade)] == [
        (a, 3_000_000, 100),
        (b, 3_100_000, 100),
    ]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled, final.quantity) == (
        taker, "EXPIRED", 200, 300,
    )  # fmt: skip
    # Reserved 0.3 x 31500 = 9450 USDT, spent 3000 + 3100, the rest came back.
    reserve = of_type(result, ev.Transfer)[0]
    assert (reserve.reason, reserve.amount) == (RESERVE, 9_450 * USDT)
    assert ex.bal(2, "USDT") == (100_000 * USDT - 6_100 * USDT, 0)
    assert ex.bal(2, "BTC") == (20_000_000 - ceil_div(20_000_000 * 2000, PPM), 0)
    assert ex.depth() == ([], [(3_160_000, 100)])
    assert taker not in ex.engine.orders


def test_market_buy_the_account_cannot_fund_in_full_is_refused(ex: Exchange) -> None:
    """Changed (issue 15): as on Binance (-2010, "insufficient balance"), a MARKET buy
    whose whole fill against the book costs more than the available quote is refused
    at entry; it used to fill what 4000 USDT bought (132 lots) and expire
    FUNDS_EXHAUSTED."""
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 4_000 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "31000")
    # 0.1 x 30000 + 0.1 x 31000 = 6100 USDT needed (the buyer's fee is paid in BTC).
    result = ex.reject(ex.order(2, "BUY", "0.2", type="MARKET"), "INSUFFICIENT_BALANCE")
    assert result.message == "order needs 6100 USDT, 4000 USDT available"
    assert ex.depth() == ([], [(3_000_000, 100), (3_100_000, 100)])


def test_market_buy_reserves_at_most_the_available_quote_and_fills_in_full(
    ex: Exchange,
) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 6_100 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "31000")
    result = ex.place(2, "BUY", "0.2", type="MARKET")
    # min(6100 available, 0.2 x 31500 = 6300) = 6100 USDT reserved: exactly the cost.
    reserve = of_type(result, ev.Transfer)[0]
    assert (reserve.reason, reserve.amount) == (RESERVE, 6_100 * USDT)
    trades = of_type(result, ev.Trade)
    assert [(t.price, t.quantity) for t in trades] == [(3_000_000, 100), (3_100_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled, final.quantity) == ("FILLED", 200, 200)
    assert ex.bal(2, "USDT") == (0, 0)
    assert ex.bal(2, "BTC") == (20_000_000 - 40_000, 0)  # fees 0.2 % of what it got
    assert ex.depth() == ([], [])


def test_market_buy_needs_only_what_the_book_can_fill(ex: Exchange) -> None:
    """A book thinner than the order: the buyer needs the cost of what is there (it
    fills that and the rest expires, as on Binance), not of the whole quantity."""
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 3_000 * USDT)
    ex.sell(1, "0.1", "30000")
    result = ex.place(2, "BUY", "0.5", type="MARKET")
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled, final.reason) == ("EXPIRED", 100, "IOC_REMAINDER")
    assert ex.bal(2, "USDT") == (0, 0)


def test_market_buy_cost_stops_at_the_band(ex: Exchange) -> None:
    """Asks beyond the protection band are not part of what the buyer must afford."""
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 3_000 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "31600")  # above 30000 x 1.05 = 31500
    result = ex.place(2, "BUY", "0.2", type="MARKET")
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    assert ex.bal(2, "USDT") == (0, 0)


def test_market_sell_by_quantity_stops_at_the_band(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    a = ex.buy(1, "0.1", "30000").order_id
    b = ex.buy(1, "0.1", "28500").order_id  # band: 30000 x 0.95 = 28500, inclusive
    ex.buy(1, "0.1", "28499.99")
    result = ex.place(2, "SELL", "0.3", type="MARKET")
    assert [(t.maker_order_id, t.price, t.quantity) for t in of_type(result, ev.Trade)] == [
        (a, 3_000_000, 100),
        (b, 2_850_000, 100),
    ]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled, final.quantity) == ("EXPIRED", 200, 300)
    assert ex.bal(2, "BTC") == (80_000_000, 0)  # 0.1 BTC unsold came back
    received = 3_000 * USDT + 2_850 * USDT
    fees = ceil_div(3_000 * USDT * 2000, PPM) + ceil_div(2_850 * USDT * 2000, PPM)
    assert ex.bal(2, "USDT") == (received - fees, 0)
    assert ex.depth() == ([(2_849_999, 100)], [])


def test_market_order_on_an_empty_book_expires_and_changes_no_balance(ex: Exchange) -> None:
    ex.deposit(2, "BTC", 1 * BTC)
    ex.deposit(3, "USDT", 1_000 * USDT)
    result = ex.place(2, "SELL", "0.1", type="MARKET")
    assert of_type(result, ev.Trade) == []
    assert [(u.status, u.filled) for u in of_type(result, ev.OrderUpdated)] == [("EXPIRED", 0)]
    assert ex.bal(2, "BTC") == (1 * BTC, 0)
    result = ex.place(3, "BUY", "0.1", type="MARKET")
    assert [(u.status, u.filled) for u in of_type(result, ev.OrderUpdated)] == [("EXPIRED", 0)]
    assert ex.bal(3, "USDT") == (1_000 * USDT, 0)
    assert ex.engine.orders == {}


def test_market_order_rejects_a_price(funded: Exchange) -> None:
    funded.reject(funded.order(1, "BUY", "0.1", "30000", type="MARKET"), "INVALID_ORDER")


# ---------------------------------------------------------------------------- MARKET by quote


def test_quote_market_buy_is_filled_when_the_leftover_cannot_buy_a_lot(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 10_000 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "31000")
    result = ex.place(2, "BUY", type="MARKET", quote_quantity=4_000 * USDT)
    (accepted,) = of_type(result, ev.OrderAccepted)
    assert (accepted.quantity, accepted.quote_quantity) == (0, 4_000 * USDT)
    trades = of_type(result, ev.Trade)
    assert [(t.price, t.quantity) for t in trades] == [(3_000_000, 100), (3_100_000, 32)]
    assert sum(t.quote_amount for t in trades) == 3_992 * USDT
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (result.order_id, "FILLED", 132)
    # 4000 reserved, 3992 spent, 8 USDT back to available.
    assert ex.bal(2, "USDT") == (6_008 * USDT, 0)
    assert ex.depth() == ([], [(3_100_000, 68)])


def test_quote_market_buy_expires_when_the_book_runs_out(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 10_000 * USDT)
    ex.sell(1, "0.1", "30000")
    result = ex.place(2, "BUY", type="MARKET", quote_quantity=4_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled) == ("EXPIRED", 100)
    assert ex.bal(2, "USDT") == (7_000 * USDT, 0)


def test_quote_market_buy_expires_at_the_band(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 20_000 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "31600")  # above 31500
    result = ex.place(2, "BUY", type="MARKET", quote_quantity=10_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled) == ("EXPIRED", 100)
    assert ex.bal(2, "USDT") == (17_000 * USDT, 0)
    assert ex.depth() == ([], [(3_160_000, 100)])


def test_quote_market_buy_that_spends_everything_is_filled(ex: Exchange) -> None:
    """3000 USDT buys exactly the 0.1 BTC offered: nothing is left to buy a further lot,
    so the order is FILLED, whether or not more asks happen to be in the book."""
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 10_000 * USDT)
    ex.sell(1, "0.1", "30000")
    result = ex.place(2, "BUY", type="MARKET", quote_quantity=3_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (result.order_id, "FILLED", 100)
    assert ex.bal(2, "USDT") == (7_000 * USDT, 0)


def test_quote_market_buy_that_spends_everything_with_asks_left_is_filled(
    ex: Exchange,
) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 10_000 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.sell(1, "0.1", "30100")
    result = ex.place(2, "BUY", type="MARKET", quote_quantity=3_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (result.order_id, "FILLED", 100)
    assert ex.bal(2, "USDT") == (7_000 * USDT, 0)


def test_quote_market_buy_needs_the_quote_amount_available(ex: Exchange) -> None:
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 999 * USDT)
    ex.sell(1, "0.1", "30000")
    ex.reject(
        ex.order(2, "BUY", type="MARKET", quote_quantity=1_000 * USDT), "INSUFFICIENT_BALANCE"
    )


def test_quote_quantity_only_for_market_orders(funded: Exchange) -> None:
    """A MARKET sell by quote amount is allowed now (issue 15, Binance's quoteOrderQty
    on SELL; see test_quote_market_sell_* below); only the type, a quantity given too
    and min_notional are refused."""
    ex = funded
    ex.reject(ex.order(1, "SELL", 0, "30000", quote_quantity=100 * USDT), "INVALID_ORDER")
    ex.reject(ex.order(1, "BUY", "0.1", type="MARKET", quote_quantity=100 * USDT),
              "INVALID_ORDER")  # fmt: skip
    ex.reject(ex.order(1, "SELL", "0.1", type="MARKET", quote_quantity=100 * USDT),
              "INVALID_ORDER")  # fmt: skip
    ex.reject(ex.order(1, "BUY", 0, "30000", quote_quantity=100 * USDT), "INVALID_ORDER")
    ex.reject(ex.order(1, "BUY", type="MARKET", quote_quantity=9 * USDT), "NOTIONAL_TOO_SMALL")
    ex.reject(ex.order(1, "SELL", type="MARKET", quote_quantity=9 * USDT), "NOTIONAL_TOO_SMALL")


# ---------------------------------------------------------------------------- LIMIT_MAKER


def test_limit_maker_that_would_cross_is_rejected(funded: Exchange) -> None:
    ex = funded
    ex.sell(1, "0.1", "30000")
    ex.buy(1, "0.1", "29000")
    ex.reject(ex.order(2, "BUY", "0.1", "30000", type="LIMIT_MAKER"), "ORDER_WOULD_TAKE")
    ex.reject(ex.order(2, "BUY", "0.1", "35000", type="LIMIT_MAKER"), "ORDER_WOULD_TAKE")
    ex.reject(ex.order(2, "SELL", "0.1", "29000", type="LIMIT_MAKER"), "ORDER_WOULD_TAKE")
    ex.reject(ex.order(2, "SELL", "0.1", "28000", type="LIMIT_MAKER"), "ORDER_WOULD_TAKE")
    maker = ex.place(2, "BUY", "0.1", "29999.99", type="LIMIT_MAKER")
    assert of_type(maker, ev.Trade) == []
    assert ex.engine.orders[maker.order_id].status == "NEW"
    ex.reject(ex.order(2, "SELL", "0.1", "29999.99", type="LIMIT_MAKER"), "ORDER_WOULD_TAKE")
    ex.place(2, "SELL", "0.1", "30000", type="LIMIT_MAKER")
    assert ex.depth() == ([(2_999_999, 100), (2_900_000, 100)], [(3_000_000, 200)])
    # A later taker trades with the LIMIT_MAKER order as maker.
    taker = ex.sell(3, "0.1", "29999.99")
    (trade,) = of_type(taker, ev.Trade)
    assert (trade.maker_order_id, trade.maker_user, trade.price) == (maker.order_id, 2, 2_999_999)


def test_limit_maker_must_be_gtc(funded: Exchange) -> None:
    funded.reject(
        funded.order(1, "BUY", "0.1", "29000", type="LIMIT_MAKER", time_in_force="IOC"),
        "INVALID_ORDER",
    )


# ---------------------------------------------------------------------------- iceberg


def test_iceberg_shows_only_its_slice_and_refreshes_at_the_back(funded: Exchange) -> None:
    ex = funded
    iceberg = ex.sell(1, "1", "30000", iceberg_quantity="0.1").order_id
    other = ex.sell(3, "0.05", "30000").order_id
    (accepted,) = of_type(ex.results[-2], ev.OrderAccepted)
    assert (accepted.quantity, accepted.iceberg_quantity) == (1000, 100)
    assert ex.depth() == ([], [(3_000_000, 150)])  # 100 visible + 50
    assert ex.bal(1, "BTC") == (9 * BTC, 1 * BTC)  # the whole quantity is reserved

    # 0.15: the visible 0.1 of the iceberg, whose next slice goes behind `other`.
    result = ex.buy(2, "0.15", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (iceberg, 100),
        (other, 50),
    ]
    assert ex.depth() == ([], [(3_000_000, 100)])
    assert ex.engine.orders[iceberg].filled == 100

    # Alone at its level, the iceberg serves a taker larger than its slice, slice by slice.
    result = ex.buy(2, "0.25", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (iceberg, 100),
        (iceberg, 100),
        (iceberg, 50),
    ]
    assert ex.engine.orders[iceberg].filled == 350
    assert ex.depth() == ([], [(3_000_000, 50)])
    assert ex.bal(1, "BTC") == (9 * BTC, 65_000_000)
    ex.engine.check_invariants()


def test_iceberg_refresh_loses_priority_to_orders_behind_it(funded: Exchange) -> None:
    ex = funded
    iceberg = ex.buy(1, "0.3", "30000", iceberg_quantity="0.1").order_id
    other = ex.buy(3, "0.2", "30000").order_id
    result = ex.sell(2, "0.3", "30000")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (iceberg, 100),
        (other, 200),
    ]
    assert ex.depth() == ([(3_000_000, 100)], [])


def test_iceberg_validation(funded: Exchange) -> None:
    ex = funded
    ex.reject(ex.order(1, "SELL", "0.1", "30000", iceberg_quantity="0.1"), "INVALID_QUANTITY")
    ex.reject(ex.order(1, "SELL", "0.1", "30000", iceberg_quantity="0.2"), "INVALID_QUANTITY")
    ex.reject(
        ex.order(1, "SELL", "0.2", "30000", iceberg_quantity="0.1", time_in_force="IOC"),
        "INVALID_ORDER",
    )
    ex.reject(ex.order(1, "SELL", "0.2", iceberg_quantity="0.1", type="MARKET"), "INVALID_ORDER")


def whole_eth_market(ex: Exchange) -> None:
    """ETH-USDT with min_qty 1 ETH on a step of 0.01 ETH (Binance's LOT_SIZE shape)."""
    ex.ok(c.UpsertMarket(msgspec.structs.replace(ETH_USDT, min_qty="1")))


def test_an_iceberg_slice_below_min_qty_is_refused(funded: Exchange) -> None:
    """The visible slice is an order quantity of its own: at least min_qty (iceberg
    quantities are lots, so always on the step; off-step decimals are refused at the API)."""
    ex = funded
    whole_eth_market(ex)
    small = ex.order(1, "SELL", "5", "2000", "ETH-USDT", iceberg_quantity="0.5")
    assert ex.reject(small, "INVALID_QUANTITY").message == (
        "iceberg_quantity 0.5 ETH is below min_qty 1 ETH"
    )
    just_enough = ex.place(1, "SELL", "5", "2000", "ETH-USDT", iceberg_quantity="1")
    assert ex.depth("ETH-USDT") == ([], [(200_000, 100)])
    assert ex.engine.orders[just_enough.order_id].iceberg_quantity == 100


def test_the_last_iceberg_slice_may_be_below_min_qty(funded: Exchange) -> None:
    """As on Binance, the quantity need not be a multiple of the slice: the last slice is
    the remainder, 0.5 ETH here, below the market's min_qty of 1 ETH."""
    ex = funded
    whole_eth_market(ex)
    iceberg = ex.place(1, "SELL", "2.5", "2000", "ETH-USDT", iceberg_quantity="1").order_id
    result = ex.place(2, "BUY", "2", "2000", "ETH-USDT")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [
        (iceberg, 100),
        (iceberg, 100),
    ]
    assert ex.depth("ETH-USDT") == ([], [(200_000, 50)])
    result = ex.place(3, "BUY", "1", "2000", "ETH-USDT")
    assert [(t.maker_order_id, t.quantity) for t in of_type(result, ev.Trade)] == [(iceberg, 50)]
    assert ex.status(iceberg) == "FILLED"


def test_an_iceberg_has_at_most_100_parts(funded: Exchange) -> None:
    """Binance's ICEBERG_PARTS: ceil(quantity / iceberg_quantity) <= 100, also after an
    amend that raises the quantity. It bounds the fills one order yields per sweep."""
    ex = funded
    too_many = ex.order(1, "SELL", "10", "2000", "ETH-USDT", iceberg_quantity="0.09")  # 112
    assert ex.reject(too_many, "INVALID_QUANTITY").message == (
        "an iceberg has at most 100 parts: iceberg_quantity must be at least 0.1 ETH for a "
        "quantity of 10 ETH"
    )
    ex.reject(ex.order(1, "SELL", "10.01", "2000", "ETH-USDT", iceberg_quantity="0.1"),
              "INVALID_QUANTITY")  # fmt: skip
    oid = ex.place(1, "SELL", "10", "2000", "ETH-USDT", iceberg_quantity="0.1").order_id
    ex.reject(c.AmendOrder(1, order_id=oid, quantity=ex.lots("10.01", "ETH-USDT")),
              "INVALID_QUANTITY")  # fmt: skip
    ex.ok(c.AmendOrder(1, order_id=oid, quantity=ex.lots("9", "ETH-USDT")))
    assert ex.depth("ETH-USDT") == ([], [(200_000, 10)])


def test_every_resting_limit_type_can_be_an_iceberg(traded_eth: Exchange) -> None:
    """LIMIT and LIMIT_MAKER (GTC), GTD, and the stop-limit types, as on Binance (which
    takes icebergQty on LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT and TAKE_PROFIT_LIMIT)."""
    ex = traded_eth
    ex.place(1, "SELL", "1", "2100", "ETH-USDT", iceberg_quantity="0.1", type="LIMIT_MAKER")
    ex.place(1, "SELL", "1", "2200", "ETH-USDT", iceberg_quantity="0.1", time_in_force="GTD",
             expire_at=ex.ts + 1_000)  # fmt: skip
    for otype, stop in (("STOP_LOSS_LIMIT", "1900"), ("TAKE_PROFIT_LIMIT", "2050")):
        ex.place(1, "SELL", "1", "1800", "ETH-USDT", iceberg_quantity="0.1", type=otype,
                 stop_price=stop)  # fmt: skip
    assert ex.depth("ETH-USDT")[1] == [(210_000, 10), (220_000, 10)]


def test_iceberg_taker_matches_its_full_quantity(funded: Exchange) -> None:
    ex = funded
    ex.sell(1, "0.5", "30000")
    result = ex.buy(2, "0.4", "30000", iceberg_quantity="0.1")
    assert [t.quantity for t in of_type(result, ev.Trade)] == [400]
    assert ex.status(result.order_id) == "FILLED"


def test_cancel_releases_an_icebergs_hidden_part_too(funded: Exchange) -> None:
    ex = funded
    oid = ex.sell(1, "1", "30000", iceberg_quantity="0.1").order_id
    ex.buy(2, "0.1", "30000")
    result = ex.cancel(1, oid)
    release = of_type(result, ev.Transfer)
    assert release == [ev.Transfer("BTC", 90_000_000, LOCKED, 1, AVAILABLE, 1, RELEASE, oid)]
    assert ex.bal(1, "BTC") == (990_000_000, 0)
    assert ex.depth() == ([], [])


def test_depth_aggregates_levels_best_first(funded: Exchange) -> None:
    ex = funded
    ex.buy(1, "0.1", "29990")
    ex.buy(2, "0.2", "29990")
    ex.buy(1, "0.1", "29980")
    ex.buy(1, "0.3", "29995", iceberg_quantity="0.05")
    ex.sell(3, "0.1", "30010")
    ex.sell(3, "0.1", "30005")
    assert ex.depth() == (
        [(2_999_500, 50), (2_999_000, 300), (2_998_000, 100)],
        [(3_000_500, 100), (3_001_000, 100)],
    )
    assert ex.depth(n=1) == ([(2_999_500, 50)], [(3_000_500, 100)])


def test_order_ids_are_sequential_and_independent_of_market(funded: Exchange) -> None:
    ex = funded
    assert ex.buy(1, "0.1", "29000").order_id == 1
    assert ex.place(1, "BUY", "1", "2000", market="ETH-USDT").order_id == 2
    ex.reject(ex.order(1, "BUY", "0.1", "0.01"), "NOTIONAL_TOO_SMALL")
    assert ex.buy(1, "0.1", "29000").order_id == 3
    assert ex.engine.next_order_id == 4
    command = c.PlaceOrder(1, "ETH-USDT", "SELL", quantity=100, price=210_000)
    assert ex.ok(command).order_id == 4
