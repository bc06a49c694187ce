"""Rejection messages speak the API's units: prices in quote, quantities in base, amounts
with their asset's symbol, as exact decimal strings (never atoms, ticks or lots). One test
per rejection family, each pinning the whole message: the same command in the same state
always answers the same bytes.

Units of the conftest markets: BTC-USDT has tick 0.01 USDT, step 0.001 BTC, quantities
0.001..100 BTC, min notional 10 USDT; BTC has 8 decimals, USDT 6.
"""

from __future__ import annotations

import msgspec
from conftest import BTC, BTC_USDT, USDT, Exchange

from mercato.core import commands as c
from mercato.core.engine import MAX_SUPPLY


def message(ex: Exchange, command: c.Command, code: str) -> str:
    return ex.reject(command, code).message


def test_insufficient_balance_says_how_much_of_which_asset(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 2_500 * USDT)
    ex.deposit(2, "BTC", BTC // 2)
    assert message(ex, ex.order(1, "BUY", "0.1", "30000"), "INSUFFICIENT_BALANCE") == (
        "order needs 3000 USDT, 2500 USDT available"
    )
    assert message(ex, ex.order(2, "SELL", "100", "30000"), "INSUFFICIENT_BALANCE") == (
        "order needs 100 BTC, 0.5 BTC available"
    )
    # A market buy into an empty book reserves nothing, yet needs some funds.
    assert message(ex, ex.order(3, "BUY", "0.001", type="MARKET"), "INSUFFICIENT_BALANCE") == (
        "order needs some USDT, 0 USDT available"
    )
    assert message(ex, c.HoldWithdrawal(2, "BTC", BTC, "w"), "INSUFFICIENT_BALANCE") == (
        "withdrawal needs 1 BTC, 0.5 BTC available"
    )


def test_an_amend_beyond_the_balance_says_what_it_needs(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 5_000 * USDT)
    order_id = ex.buy(1, "0.1", "30000").order_id  # 3000 USDT locked, 2000 available
    amend = c.AmendOrder(1, order_id=order_id, quantity=ex.lots("0.2"))
    assert message(ex, amend, "INSUFFICIENT_BALANCE") == (
        "amended order needs 6000 USDT locked, 3000 USDT more than now; 2000 USDT available"
    )


def test_prices_are_quoted_in_the_quote_asset(funded: Exchange) -> None:
    ex = funded
    too_high = c.PlaceOrder(1, "BTC-USDT", "BUY", quantity=1, price=10**15 + 1)
    assert message(ex, too_high, "INVALID_PRICE") == (
        "LIMIT needs a price of 0.01..10000000000000 USDT"
    )
    stop = ex.order(1, "SELL", "0.1", "30000", type="STOP_LOSS_LIMIT")
    assert message(ex, stop, "INVALID_PRICE") == (
        "STOP_LOSS_LIMIT needs a stop_price of 0.01..10000000000000 USDT"
    )
    resting = ex.sell(1, "0.1", "30000").order_id
    assert message(ex, c.AmendOrder(1, order_id=resting, price=-1), "INVALID_PRICE") == (
        "price must be within 0.01..10000000000000 USDT"
    )
    ex.buy(2, "0.001", "30000.5")  # the last price is now 30000
    assert message(
        ex, ex.order(1, "SELL", "0.1", type="STOP_LOSS", stop_price="30000.01"),
        "ORDER_WOULD_TRIGGER_IMMEDIATELY",
    ) == "last price 30000 USDT already meets stop_price 30000.01 USDT"  # fmt: skip


def test_quantities_are_in_the_base_asset(funded: Exchange) -> None:
    ex = funded
    assert message(ex, ex.order(1, "BUY", "100.001", "30000"), "INVALID_QUANTITY") == (
        "quantity must be within 0.001..100 BTC, got 100.001 BTC"
    )
    order_id = ex.sell(1, "0.3", "30000").order_id
    ex.buy(2, "0.1", "30000")
    amend = c.AmendOrder(1, order_id=order_id, quantity=ex.lots("0.05"))
    assert message(ex, amend, "INVALID_QUANTITY") == (
        "quantity must exceed the 0.1 BTC filled and lie within 0.001..100 BTC, got 0.05 BTC"
    )
    iceberg = ex.order(1, "SELL", "0.1", "30000", iceberg_quantity="0.2")
    assert message(ex, iceberg, "INVALID_QUANTITY") == (
        "iceberg_quantity must be above 0 and below the quantity 0.1 BTC, got 0.2 BTC"
    )


def test_min_notional_is_in_the_quote_asset(funded: Exchange) -> None:
    ex = funded
    assert message(ex, ex.order(1, "BUY", "0.001", "9999.99"), "NOTIONAL_TOO_SMALL") == (
        "order value 9.99999 USDT is below min notional 10 USDT"
    )
    quote_buy = ex.order(1, "BUY", type="MARKET", quote_quantity=9_500_000)
    assert message(ex, quote_buy, "NOTIONAL_TOO_SMALL") == (
        "quote_quantity 9.5 USDT is below min notional 10 USDT"
    )
    order_id = ex.buy(1, "0.001", "20000").order_id
    amend = c.AmendOrder(1, order_id=order_id, price=ex.px("5000"))
    assert message(ex, amend, "NOTIONAL_TOO_SMALL") == (
        "order value 5 USDT is below min notional 10 USDT"
    )


def test_the_supply_limit_is_in_the_asset(ex: Exchange) -> None:
    ex.ok(c.CreditDeposit(1, "BTC", MAX_SUPPLY, "all"))
    assert message(ex, c.CreditDeposit(2, "BTC", 1, "more"), "SUPPLY_LIMIT") == (
        "total BTC deposits would exceed 92233720368.54775807 BTC"
    )


def test_units_follow_the_market(funded: Exchange) -> None:
    """Another market's units and symbols: a tick of 0.5 and a step of 10."""
    ex = funded
    spec = msgspec.structs.replace(
        BTC_USDT, symbol="ETH-BTC", base="ETH", quote="BTC", tick_size="0.5",
        step_size="10", min_qty="20", max_qty="1000", min_notional="100",
    )  # fmt: skip
    ex.ok(c.UpsertMarket(spec))
    too_few = ex.order(1, "SELL", "10", "1", market="ETH-BTC")
    assert message(ex, too_few, "INVALID_QUANTITY") == (
        "quantity must be within 20..1000 ETH, got 10 ETH"
    )
    too_cheap = ex.order(1, "SELL", "30", "0.5", market="ETH-BTC")
    assert message(ex, too_cheap, "NOTIONAL_TOO_SMALL") == (
        "order value 15 BTC is below min notional 100 BTC"
    )
