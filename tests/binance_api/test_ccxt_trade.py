"""The real ``ccxt.binance`` (unmodified, only its URLs Mercato's) trading on Mercato's
Binance dialect: balances, every order type it creates on spot, the order and trade
reads, cancels, and the error classes it derives from Binance's answers."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from binance_api.conftest import Exchange, ccxt_binance


def trader(exchange: Exchange, who: str = "ann") -> Any:
    client = ccxt_binance(exchange, getattr(exchange, who))
    client.load_markets()
    return client


def test_balance_and_order_types(exchange: Exchange) -> None:
    ann, bob = trader(exchange), trader(exchange, "bob")
    balance = ann.fetch_balance()
    assert balance["BTC"]["free"] == 10.0 and balance["USDT"]["total"] == 1_000_000.0

    resting = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 50000)
    assert (resting["status"], resting["price"], resting["amount"]) == ("open", 50000.0, 0.01)
    assert resting["clientOrderId"].startswith("x-")

    # bob's asks, then ann takes them: by amount, then by cost (quoteOrderQty)
    bob.create_order("BTC/USDT", "limit", "sell", 0.5, 60000)
    by_amount = ann.create_order("BTC/USDT", "market", "buy", 0.1)
    assert (by_amount["status"], by_amount["filled"], by_amount["average"]) == (
        "closed",
        0.1,
        60000.0,
    )
    assert by_amount["trades"][0]["price"] == 60000.0
    assert by_amount["fee"]["currency"] == "BTC"
    by_cost = ann.create_market_buy_order_with_cost("BTC/USDT", 600)
    assert (by_cost["status"], by_cost["filled"], by_cost["cost"]) == ("closed", 0.01, 600.0)

    stop = ann.create_order("BTC/USDT", "limit", "sell", 0.01, 55000, {"stopLossPrice": 55500})
    assert stop["type"] == "stop_loss_limit" or stop["info"]["type"] == "STOP_LOSS_LIMIT"
    take = ann.create_order("BTC/USDT", "limit", "sell", 0.01, 70000,
                            {"takeProfitPrice": 69000})  # fmt: skip
    assert take["info"].get("type", "TAKE_PROFIT_LIMIT") == "TAKE_PROFIT_LIMIT"
    for placed in (stop, take):
        fetched = ann.fetch_order(placed["id"], "BTC/USDT")
        assert fetched["status"] == "open" and fetched["triggerPrice"] in (55500.0, 69000.0)

    maker = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"postOnly": True})
    assert ann.fetch_order(maker["id"], "BTC/USDT")["postOnly"] is True
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        ann.create_order("BTC/USDT", "limit", "buy", 0.01, 60000, {"postOnly": True})

    ioc = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 59000, {"timeInForce": "IOC"})
    assert (ioc["status"], ioc["filled"]) == ("expired", 0.0)  # nothing at 59000
    fok = ann.create_order("BTC/USDT", "limit", "buy", 5, 60000, {"timeInForce": "FOK"})
    assert (fok["status"], fok["filled"]) == ("expired", 0.0)  # not all of 5 at once
    ioc_fill = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 60000, {"timeInForce": "IOC"})
    assert (ioc_fill["status"], ioc_fill["filled"]) == ("closed", 0.01)


def test_reads_and_cancels(exchange: Exchange) -> None:
    ann, bob = trader(exchange), trader(exchange, "bob")
    bob.create_order("BTC/USDT", "limit", "sell", 0.2, 60000)
    bought = ann.create_order("BTC/USDT", "limit", "buy", 0.05, 60000)
    first = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 50000)
    second = ann.create_order("BTC/USDT", "limit", "buy", 0.01, 51000)

    fetched = ann.fetch_order(first["id"], "BTC/USDT")
    assert (fetched["id"], fetched["status"], fetched["price"]) == (first["id"], "open", 50000.0)
    assert [o["id"] for o in ann.fetch_open_orders("BTC/USDT")] == [first["id"], second["id"]]
    assert [o["id"] for o in ann.fetch_orders("BTC/USDT")] == [
        bought["id"],
        first["id"],
        second["id"],
    ]

    trades = ann.fetch_my_trades("BTC/USDT")
    seen = [(t["order"], t["side"], t["amount"], t["price"], t["takerOrMaker"]) for t in trades]
    assert seen == [(bought["id"], "buy", 0.05, 60000.0, "taker")]
    assert trades[0]["fee"] == {"cost": 0.00005, "currency": "BTC"}

    cancelled = ann.cancel_order(first["id"], "BTC/USDT")
    assert (cancelled["id"], cancelled["status"]) == (first["id"], "canceled")
    with pytest.raises(ccxt.OrderNotFound):
        ann.cancel_order(first["id"], "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        ann.fetch_order("999999", "BTC/USDT")
    all_cancelled = ann.cancel_all_orders("BTC/USDT")
    assert [o["id"] for o in all_cancelled] == [second["id"]]
    assert ann.fetch_open_orders("BTC/USDT") == []


def test_error_classes(exchange: Exchange) -> None:
    ann = trader(exchange)
    with pytest.raises(ccxt.InsufficientFunds):
        ann.create_order("BTC/USDT", "limit", "sell", 11, 60000)
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):  # off the tick
        ann.create_order("BTC/USDT", "limit", "buy", 0.01, 50000.001, {"price": "50000.001"})
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):  # off the step
        ann.create_order("BTC/USDT", "limit", "buy", 0.01, 50000, {"quantity": "0.000001"})
    # CCXT reads -1013 as BadRequest unless the text names LOT_SIZE or PRICE_FILTER
    with pytest.raises(ccxt.BadRequest, match="Filter failure: MIN_NOTIONAL"):
        ann.create_order("BTC/USDT", "limit", "buy", 0.00001, 100)
    with pytest.raises(ccxt.OrderNotFound):
        ann.fetch_order("424242", "BTC/USDT")

    stranger = ccxt_binance(exchange)
    stranger.apiKey, stranger.secret = "a" * 64, "b" * 64
    stranger.markets, stranger.markets_by_id = ann.markets, ann.markets_by_id
    stranger.symbols, stranger.currencies = ann.symbols, ann.currencies
    with pytest.raises(ccxt.AuthenticationError):
        stranger.fetch_balance()
    forger = ccxt_binance(exchange, exchange.ann)
    forger.secret = "0" * 64
    forger.markets, forger.markets_by_id = ann.markets, ann.markets_by_id
    forger.symbols, forger.currencies = ann.symbols, ann.currencies
    with pytest.raises(ccxt.AuthenticationError):
        forger.fetch_balance()

    # Binance answers an exceeded limit with HTTP 429, which CCXT raises as DDoSProtection
    # (RateLimitExceeded's parent) before reading the body; Mercato's account budget
    # (60 at once) is reached first here.
    ann.enableRateLimit = False  # CCXT's own pacing would keep under the budget
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):
        for _ in range(200):
            ann.fetch_open_orders("BTC/USDT")
