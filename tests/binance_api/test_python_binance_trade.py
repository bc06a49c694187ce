"""python-binance's ``Client`` (unmodified, only its URL Mercato's) trading on the
Binance dialect: orders, reads, the account, and its BinanceAPIException codes."""

from __future__ import annotations

import pytest

from binance_api.conftest import Exchange, python_binance, python_binance_client


def test_python_binance_orders_reads_and_exceptions(exchange: Exchange) -> None:
    exceptions = python_binance()[1]
    ann = python_binance_client(exchange, exchange.ann)
    bob = python_binance_client(exchange, exchange.bob)

    account = ann.get_account()
    assert account["accountType"] == "SPOT" and account["canTrade"] is True
    assert {"asset": "BTC", "free": "10.00000000", "locked": "0.00000000"} in account["balances"]

    bought = ann.order_limit_buy(symbol="BTCUSDT", quantity="0.02", price="60000")
    assert (bought["status"], bought["origQty"]) == ("NEW", "0.02000000")
    sold = bob.order_market_sell(symbol="BTCUSDT", quantity="0.01")
    assert (sold["status"], sold["executedQty"]) == ("FILLED", "0.01000000")
    assert sold["fills"][0]["commissionAsset"] == "USDT"

    order = ann.get_order(symbol="BTCUSDT", orderId=bought["orderId"])
    assert (order["status"], order["executedQty"]) == ("PARTIALLY_FILLED", "0.01000000")
    assert [o["orderId"] for o in ann.get_open_orders(symbol="BTCUSDT")] == [bought["orderId"]]
    trades = ann.get_my_trades(symbol="BTCUSDT")
    assert [(t["orderId"], t["isBuyer"], t["isMaker"]) for t in trades] == [
        (bought["orderId"], True, True)
    ]
    cancelled = ann.cancel_order(symbol="BTCUSDT", orderId=bought["orderId"])
    assert cancelled["status"] == "CANCELED"
    assert [o["status"] for o in ann.get_all_orders(symbol="BTCUSDT")] == ["CANCELED"]

    with pytest.raises(exceptions.BinanceAPIException) as unknown:
        ann.cancel_order(symbol="BTCUSDT", orderId=bought["orderId"])
    assert (unknown.value.code, unknown.value.message) == (-2011, "Unknown order sent.")
    with pytest.raises(exceptions.BinanceAPIException) as missing:
        ann.get_order(symbol="BTCUSDT", orderId=424242)
    assert missing.value.code == -2013
    with pytest.raises(exceptions.BinanceAPIException) as poor:
        ann.order_limit_buy(symbol="BTCUSDT", quantity="100", price="60000")
    assert (poor.value.status_code, poor.value.code) == (400, -2010)
