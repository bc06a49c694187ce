"""The real clients read Mercato's market data as Binance's: an unmodified ``ccxt.binance``
and python-binance's ``Client``, with only their URLs pointed at a ``mercato serve``."""

from __future__ import annotations

from typing import Any

import httpx

from binance_api.conftest import Account, Exchange, ccxt_binance, python_binance_client


def place(account: Account, exchange: Exchange, **order: str) -> None:
    answer = httpx.post(f"{exchange.url}/api/v1/orders", headers=account.session,
                        json={"market": "BTC-USDT", **order}, timeout=30)  # fmt: skip
    assert answer.status_code == 201, answer.text


def book_and_two_trades(exchange: Exchange) -> None:
    """Bob's asks at 50000 (0.5) and 50100 (1); ann buys 0.3 then 0.1 at 50000 and bids
    49000 (0.25) and 48900 (0.5)."""
    place(exchange.bob, exchange, side="SELL", price="50000", quantity="0.5")
    place(exchange.bob, exchange, side="SELL", price="50100", quantity="1")
    place(exchange.ann, exchange, side="BUY", price="50000", quantity="0.3")
    place(exchange.ann, exchange, side="BUY", price="50000", quantity="0.1")
    place(exchange.ann, exchange, side="BUY", price="49000", quantity="0.25")
    place(exchange.ann, exchange, side="BUY", price="48900", quantity="0.5")


def test_ccxt_loads_markets_and_currencies(exchange: Exchange) -> None:
    client: Any = ccxt_binance(exchange, exchange.ann)  # with keys: currencies too (sapi)
    markets = client.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC"}
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["active"]) == (
        "BTCUSDT", "BTC", "USDT", True, True)  # fmt: skip
    assert (btc["margin"], btc["swap"], btc["future"]) == (False, False, False)
    assert btc["precision"]["amount"] == 0.00001 and btc["precision"]["price"] == 0.01
    assert btc["limits"]["amount"] == {"min": 0.00001, "max": 9000.0}
    assert btc["limits"]["cost"]["min"] == 5.0
    assert btc["limits"]["price"]["min"] == 0.01
    assert markets["ETH/BTC"]["precision"]["price"] == 0.00001
    currencies = client.currencies
    assert {"BTC", "USDT", "ETH", "SOL", "USDC"} <= set(currencies)
    # Ann's balances come along in Binance's wallet shape.
    assert currencies["BTC"]["info"]["free"] == "10.00000000"
    assert currencies["BTC"]["info"]["locked"] == "0.00000000"
    assert abs(client.fetch_time() - client.milliseconds()) < 60_000


def test_ccxt_book_tickers_trades_and_candles(exchange: Exchange) -> None:
    book_and_two_trades(exchange)
    client: Any = ccxt_binance(exchange)
    book = client.fetch_order_book("BTC/USDT", 10)
    assert book["bids"] == [[49000.0, 0.25], [48900.0, 0.5]]
    assert book["asks"] == [[50000.0, 0.1], [50100.0, 1.0]]
    assert (
        book["nonce"]
        == httpx.get(f"{exchange.url}/api/v1/markets/BTC-USDT/orderbook").json()["seq"]
    )

    ticker = client.fetch_ticker("BTC/USDT")
    assert (ticker["last"], ticker["baseVolume"], ticker["quoteVolume"]) == (50000.0, 0.4,
                                                                             20000.0)  # fmt: skip
    assert (ticker["bid"], ticker["ask"], ticker["high"], ticker["low"]) == (
        49000.0, 50000.0, 50000.0, 50000.0)  # fmt: skip
    tickers = client.fetch_tickers()
    assert set(tickers) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC"}
    assert tickers["BTC/USDT"]["last"] == 50000.0

    trades = client.fetch_trades("BTC/USDT")
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [
        (50000.0, 0.3, "buy"), (50000.0, 0.1, "buy")]  # fmt: skip

    candles = client.fetch_ohlcv("BTC/USDT", "1m")
    assert sum(c[5] for c in candles) == 0.4
    assert candles[-1][4] == 50000.0 and candles[-1][0] % 60_000 == 0


def test_python_binance_market_data(exchange: Exchange) -> None:
    book_and_two_trades(exchange)
    client = python_binance_client(exchange)  # its constructor pings
    info = client.get_exchange_info()
    assert {s["symbol"] for s in info["symbols"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "ETHBTC"}
    assert client.get_symbol_info("BTCUSDT")["baseAsset"] == "BTC"
    book = client.get_order_book(symbol="BTCUSDT", limit=5)
    assert book["bids"][0] == ["49000.00000000", "0.25000000"]
    assert book["asks"][0] == ["50000.00000000", "0.10000000"]
    trades = client.get_recent_trades(symbol="BTCUSDT")
    assert [t["qty"] for t in trades] == ["0.30000000", "0.10000000"]
    klines = client.get_klines(symbol="BTCUSDT", interval=client.KLINE_INTERVAL_1MINUTE)
    assert sum(k[8] for k in klines) == 2 and klines[-1][4] == "50000.00000000"
    ticker = client.get_ticker(symbol="BTCUSDT")
    assert (ticker["lastPrice"], ticker["count"]) == ("50000.00000000", 2)
    assert client.get_symbol_ticker(symbol="BTCUSDT") == {"symbol": "BTCUSDT",
                                                          "price": "50000.00000000"}  # fmt: skip
    assert client.get_avg_price(symbol="BTCUSDT")["price"] == "50000.00000000"
    assert client.get_server_time()["serverTime"] > 0
