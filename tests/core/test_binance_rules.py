"""The engine rules Binance clients rely on (issue 15): a MARKET sell by quote amount,
MARKET orders refused unless funded in full, quote amounts refused on an empty book,
priority-keeping amends on CANCEL_ONLY markets, and the decrease-only amend.

Numbers (see conftest): 1 lot = 0.001 BTC; at 30000 a lot is worth 30 USDT. Taker fee
0.2 %, band 5 %.
"""

from __future__ import annotations

from conftest import BTC, PPM, USDT, Exchange, ceil_div, of_type

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.model import AVAILABLE, LOCKED, RESERVE

# ---------------------------------------------------------------- 1. MARKET sell by quote


def test_quote_market_sell_stops_at_the_last_whole_lot_within_the_amount(ex: Exchange) -> None:
    """4000 USDT: 100 lots at 30000 bring 3000, then 34 lots at 29000 bring 986; a 35th
    would pass 4000. The base locked is what the walk of the book at entry sells."""
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.1", "30000")
    ex.buy(1, "0.1", "29000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=4_000 * USDT)
    oid = result.order_id
    (accepted,) = of_type(result, ev.OrderAccepted)
    assert (accepted.side, accepted.quantity, accepted.quote_quantity) == ("SELL", 0, 4_000 * USDT)
    assert of_type(result, ev.Transfer)[0] == ev.Transfer(
        "BTC", 13_400_000, AVAILABLE, 2, LOCKED, 2, RESERVE, oid
    )
    trades = of_type(result, ev.Trade)
    assert [(t.price, t.quantity) for t in trades] == [(3_000_000, 100), (2_900_000, 34)]
    received = sum(t.quote_amount for t in trades)
    assert received == 3_986 * USDT
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled, final.quantity) == (oid, "FILLED", 134, 134)
    fees = sum(ceil_div(t.quote_amount * 2000, PPM) for t in trades)
    assert ex.bal(2, "USDT") == (received - fees, 0)
    assert ex.bal(2, "BTC") == (1 * BTC - 13_400_000, 0)
    assert ex.depth() == ([(2_900_000, 66)], [])
    ex.engine.check_invariants()


def test_quote_market_sell_that_reaches_its_amount_exactly_is_filled(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.2", "30000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=3_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    assert ex.status(result.order_id) == "FILLED"
    assert result.order_id not in ex.engine.orders
    assert ex.depth() == ([(3_000_000, 100)], [])


def test_quote_market_sell_expires_when_the_book_runs_out(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.1", "30000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=4_000 * USDT)
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled) == ("EXPIRED", 100)
    assert ex.bal(2, "BTC") == (1 * BTC - 10_000_000, 0)


def test_quote_market_sell_stops_at_the_band(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.1", "30000")
    ex.buy(1, "0.1", "28499.99")  # below 30000 x 0.95 = 28500
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=4_000 * USDT)
    # Only the 0.1 BTC within the band is locked and sold.
    assert of_type(result, ev.Transfer)[0].amount == 10_000_000
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 100)]
    assert of_type(result, ev.OrderUpdated)[-1].status == "EXPIRED"
    assert ex.depth() == ([(2_849_999, 100)], [])


def test_quote_market_sell_needs_the_base_it_would_sell(ex: Exchange) -> None:
    """Point 2 for this order: the walk at entry needs 0.134 BTC, the seller has 0.1."""
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", BTC // 10)
    ex.buy(1, "0.1", "30000")
    ex.buy(1, "0.1", "29000")
    result = ex.reject(
        ex.order(2, "SELL", type="MARKET", quote_quantity=4_000 * USDT), "INSUFFICIENT_BALANCE"
    )
    assert result.message == "order needs 0.134 BTC, 0.1 BTC available"


def test_quote_market_sell_below_one_lot_trades_nothing(ex: Exchange) -> None:
    """20 USDT cannot sell one lot worth 30: accepted (it passes min_notional), nothing
    locked or sold, expired."""
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.buy(1, "0.1", "30000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=20 * USDT)
    assert of_type(result, ev.Trade) == [] and of_type(result, ev.Transfer) == []
    assert of_type(result, ev.OrderUpdated)[-1].status == "EXPIRED"
    assert ex.bal(2, "BTC") == (1 * BTC, 0)


def test_quote_market_sell_skips_its_own_bid_with_expire_maker(ex: Exchange) -> None:
    """Its own best bid expires (STP); the quote amount is sold into the next level, and
    the lock at entry counted only the bids it may trade with."""
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    own = ex.buy(2, "0.1", "30000").order_id
    ex.buy(1, "0.2", "29000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=2_900 * USDT, stp="EXPIRE_MAKER")
    assert of_type(result, ev.Transfer)[0].amount == 10_000_000
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(2_900_000, 100)]
    assert own not in ex.engine.orders
    assert of_type(result, ev.OrderUpdated)[-1].status == "FILLED"
    ex.engine.check_invariants()


def test_quote_market_sell_decrement_counts_the_prevented_lots(ex: Exchange) -> None:
    """DECREMENT: the 50 lots of its own bid are prevented, not sold, and count against
    the amount as they would have brought (as for a buy by quote amount): 3000 USDT
    reaches 100 lots at 30000, 50 prevented and 50 sold."""
    ex.deposit(1, "USDT", 100_000 * USDT)
    ex.deposit(2, "USDT", 100_000 * USDT)
    ex.deposit(2, "BTC", 1 * BTC)
    own = ex.buy(2, "0.05", "30000").order_id
    ex.buy(1, "0.1", "30000")
    result = ex.place(2, "SELL", type="MARKET", quote_quantity=3_000 * USDT, stp="DECREMENT")
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_000_000, 50)]
    assert own not in ex.engine.orders
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.order_id, final.status, final.filled) == (result.order_id, "FILLED", 50)
    assert ex.bal(2, "BTC") == (1 * BTC - 5_000_000, 0)
    ex.engine.check_invariants()


# ---------------------------------------------------------------- 2. funded in full


def test_market_buy_cost_skips_its_own_asks_under_stp(ex: Exchange) -> None:
    """With EXPIRE_MAKER the buyer's own ask expires and the buy fills deeper: what it
    must afford is that deeper fill (31 USDT a lot), not the 30 USDT of its own ask."""
    ex.deposit(1, "BTC", 1 * BTC)
    ex.deposit(2, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 3_000 * USDT)
    ex.sell(2, "0.1", "30000")
    ex.sell(1, "0.1", "31000")
    ex.reject(ex.order(2, "BUY", "0.1", type="MARKET", stp="EXPIRE_MAKER"), "INSUFFICIENT_BALANCE")
    ex.deposit(2, "USDT", 100 * USDT)
    result = ex.place(2, "BUY", "0.1", type="MARKET", stp="EXPIRE_MAKER")
    assert [(t.price, t.quantity) for t in of_type(result, ev.Trade)] == [(3_100_000, 100)]
    assert of_type(result, ev.OrderUpdated)[-1].status == "FILLED"


def test_market_buy_meeting_only_its_own_asks_is_prevented_not_short_of_funds(
    ex: Exchange,
) -> None:
    """Its own ask is all the book offers: the buy has nothing to pay for (it may have
    almost no quote) and self-trade prevention ends it. It used to stop FUNDS_EXHAUSTED
    when its reservation could not have paid for the prevented lots."""
    ex.deposit(2, "BTC", 1 * BTC)
    ex.deposit(2, "USDT", 1 * USDT)
    own = ex.sell(2, "0.1", "30000").order_id
    result = ex.place(2, "BUY", "0.1", type="MARKET", stp="EXPIRE_TAKER")
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.reason) == ("EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED")
    assert own in ex.engine.orders
    assert ex.bal(2, "USDT") == (1 * USDT, 0)


def test_market_buy_is_never_cut_short_by_its_funds(funded: Exchange) -> None:
    """No MARKET order placed directly ends FUNDS_EXHAUSTED any more."""
    ex = funded
    for price in ("30000", "30100", "30200"):
        ex.sell(1, "0.5", price)
    ex.deposit(5, "USDT", 30_100 * USDT)  # 0.5 x 30000 + 0.5 x 30100 = 30050 needed
    result = ex.place(5, "BUY", "1", type="MARKET")
    final = of_type(result, ev.OrderUpdated)[-1]
    assert (final.status, final.filled, final.reason) == ("FILLED", 1000, "")
    assert ex.bal(5, "USDT") == (50 * USDT, 0)


def test_market_sell_by_quantity_needs_the_whole_quantity(funded: Exchange) -> None:
    ex = funded
    ex.buy(1, "1", "30000")
    ex.deposit(5, "BTC", BTC // 2)
    ex.reject(ex.order(5, "SELL", "0.6", type="MARKET"), "INSUFFICIENT_BALANCE")


# ---------------------------------------------------------------- 3. empty book


def test_quote_market_orders_on_an_empty_side_are_refused(funded: Exchange) -> None:
    """As on Binance (-2010 "Order book liquidity is less than symbol minimum
    quantity."): nothing to trade a quote amount against. It used to be accepted and
    expire NO_LIQUIDITY."""
    ex = funded
    ex.sell(1, "0.1", "31000")  # asks only
    buy = ex.order(2, "BUY", type="MARKET", quote_quantity=100 * USDT)
    sell = ex.order(2, "SELL", type="MARKET", quote_quantity=100 * USDT)
    assert ex.reject(sell, "NO_LIQUIDITY").message == (
        "no buy orders in BTC-USDT to trade a quote amount against"
    )
    ex.ok(buy)  # 3 lots at 31000
    ex.ok(c.CancelAll(1))
    assert ex.reject(buy, "NO_LIQUIDITY").message == (
        "no sell orders in BTC-USDT to trade a quote amount against"
    )


def test_market_orders_by_quantity_on_an_empty_book_are_still_accepted(funded: Exchange) -> None:
    """Binance accepts those and expires them; so does Mercato (NO_LIQUIDITY)."""
    ex = funded
    for side in ("BUY", "SELL"):
        result = ex.place(2, side, "0.1", type="MARKET")
        final = of_type(result, ev.OrderUpdated)[-1]
        assert (final.status, final.reason) == ("EXPIRED", "NO_LIQUIDITY")


# ---------------------------------------------------------------- 4. CANCEL_ONLY amends


def test_cancel_only_market_takes_a_quantity_decrease_that_keeps_priority(
    funded: Exchange,
) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    ex.ok(c.SetMarketStatus("BTC-USDT", "CANCEL_ONLY"))
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2")))
    assert of_type(result, ev.OrderAmended) == [
        ev.OrderAmended(a, 1, "BTC-USDT", 3_000_000, 200, True)
    ]
    # Anything that would re-queue the order is still refused there.
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.25")), "MARKET_CANCEL_ONLY")
    ex.reject(c.AmendOrder(1, order_id=a, price=ex.px("30001")), "MARKET_CANCEL_ONLY")
    ex.reject(
        c.AmendOrder(1, order_id=a, quantity=ex.lots("0.1"), price=ex.px("30001")),
        "MARKET_CANCEL_ONLY",
    )


def test_cancel_only_kill_switch_takes_the_decrease_too(funded: Exchange) -> None:
    ex = funded
    a = ex.buy(1, "0.3", "30000").order_id
    ex.ok(c.SetKillSwitch("CANCEL_ONLY"))
    ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.1"), keep_priority=True))
    assert ex.bal(1, "USDT") == (1_000_000 * USDT - 3_000 * USDT, 3_000 * USDT)


def test_a_decrease_stays_refused_when_halted_or_frozen(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    ex.ok(c.SetMarketStatus("BTC-USDT", "CANCEL_ONLY"))
    ex.ok(c.FreezeUser(1))
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2")), "USER_FROZEN")
    ex.ok(c.UnfreezeUser(1))
    ex.ok(c.SetMarketStatus("BTC-USDT", "HALTED"))
    ex.reject(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2")), "MARKET_HALTED")


# ---------------------------------------------------------------- 5. decrease-only amend


def test_keep_priority_amend_refuses_a_larger_quantity(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    refused = ex.reject(
        c.AmendOrder(1, order_id=a, quantity=ex.lots("0.4"), keep_priority=True),
        "AMEND_QUANTITY_INCREASE",
    )
    assert refused.message == (
        "an amend that keeps priority only reduces the quantity: 0.4 BTC is more than the "
        "order's 0.3 BTC"
    )
    ex.reject(
        c.AmendOrder(1, order_id=a, quantity=ex.lots("0.3"), keep_priority=True), "INVALID_AMEND"
    )
    ex.reject(
        c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2"), price=ex.px("30001"),
                     keep_priority=True),
        "INVALID_AMEND",
    )  # fmt: skip
    # The native amend (keep_priority off) still takes the increase, re-queued.
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.4")))
    assert of_type(result, ev.OrderAmended)[0].kept_priority is False


def test_keep_priority_amend_reduces_in_place(funded: Exchange) -> None:
    ex = funded
    a = ex.sell(1, "0.3", "30000").order_id
    b = ex.sell(2, "0.1", "30000").order_id
    result = ex.ok(c.AmendOrder(1, order_id=a, quantity=ex.lots("0.2"), keep_priority=True))
    assert of_type(result, ev.OrderAmended)[0].kept_priority is True
    taker = ex.buy(3, "0.1", "30000")
    assert [t.maker_order_id for t in of_type(taker, ev.Trade)] == [a]
    assert ex.engine.orders[b].filled == 0
