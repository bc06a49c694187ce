"""Binance's public market data REST (``/api/v3``) on a real ``mercato serve``: each
answer against Binance's documented example (rest-api.md): keys and their order, value
types, decimals as fixed-point strings, and Binance's error triples for bad input."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

from binance_api.conftest import Account, Exchange
from mercato.api.app import create_app
from mercato.config import load_config
from mercato.core.commands import CreditDeposit, PlaceOrder, SetMarketStatus
from mercato.service import ExchangeService

DECIMAL = re.compile(r"^-?[0-9]+\.[0-9]{8}$")  # Binance's "4.00000200" (8 decimals here)

SYMBOL_KEYS = [
    "symbol", "status", "baseAsset", "baseAssetPrecision", "quoteAsset", "quotePrecision",
    "quoteAssetPrecision", "baseCommissionPrecision", "quoteCommissionPrecision",
    "orderTypes", "icebergAllowed", "ocoAllowed", "otoAllowed", "opoAllowed",
    "quoteOrderQtyMarketAllowed", "allowTrailingStop", "cancelReplaceAllowed",
    "amendAllowed", "pegInstructionsAllowed", "isSpotTradingAllowed",
    "isMarginTradingAllowed", "filters", "permissions", "permissionSets",
    "defaultSelfTradePreventionMode", "allowedSelfTradePreventionModes",
]  # fmt: skip
TICKER_FULL_KEYS = [
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice",
    "lastPrice", "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice",
    "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime", "firstId",
    "lastId", "count",
]  # fmt: skip
TICKER_MINI_KEYS = [
    "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
    "openTime", "closeTime", "firstId", "lastId", "count",
]  # fmt: skip
ROLLING_FULL_KEYS = [
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "openPrice",
    "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime", "closeTime",
    "firstId", "lastId", "count",
]  # fmt: skip


def get(exchange: Exchange, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{exchange.url}{path}", params=params, timeout=30)


def ok(exchange: Exchange, path: str, **params: Any) -> Any:
    answer = get(exchange, path, **params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def refused(exchange: Exchange, path: str, status: int, code: int, msg: str,
            **params: Any) -> None:  # fmt: skip
    answer = get(exchange, path, **params)
    assert (answer.status_code, answer.json()) == (status, {"code": code, "msg": msg})


def place(account: Account, exchange: Exchange, **order: str) -> dict[str, Any]:
    """An order through the native API with the account's session."""
    answer = httpx.post(f"{exchange.url}/api/v1/orders", headers=account.session,
                        json={"market": "BTC-USDT", **order}, timeout=30)  # fmt: skip
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def trade_some(exchange: Exchange) -> None:
    """Bob's asks at 50000, 50010, two at 50020 and one at 50030; ann takes 0.2 at 50000,
    then 0.3 at 50000 + 0.1 at 50010, then 0.2 at 50010 + both 50020 asks (six trades, five
    aggregates: the last two trades are one taker's at one price); a bid of ann's rests at
    49990 and 0.2 at 50030 stays."""
    bob, ann = exchange.bob, exchange.ann
    asks = (("50000", "0.5"), ("50010", "0.3"), ("50020", "0.1"), ("50020", "0.1"),
            ("50030", "0.2"))  # fmt: skip
    for price, qty in asks:
        place(bob, exchange, side="SELL", price=price, quantity=qty)
    place(ann, exchange, side="BUY", price="50000", quantity="0.2")
    place(ann, exchange, side="BUY", price="50010", quantity="0.4")
    place(ann, exchange, side="BUY", price="50020", quantity="0.4")
    place(ann, exchange, side="BUY", price="49990", quantity="0.1")


def test_ping_time_and_exchange_info(exchange: Exchange) -> None:
    assert ok(exchange, "/api/v3/ping") == {}
    assert isinstance(ok(exchange, "/api/v3/time")["serverTime"], int)

    info = ok(exchange, "/api/v3/exchangeInfo")
    assert list(info) == ["timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"]
    assert info["timezone"] == "UTC" and info["exchangeFilters"] == []
    # The default budgets: 50 requests/s per IP, 10 orders/s per account.
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
         "limit": 3000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 864000},
    ]  # fmt: skip
    by_symbol = {s["symbol"]: s for s in info["symbols"]}
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "ETHBTC"}
    btc = by_symbol["BTCUSDT"]
    assert list(btc) == SYMBOL_KEYS
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    assert [btc[k] for k in SYMBOL_KEYS[3:9] if k.endswith("Precision")] == [8] * 5
    assert btc["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS",
                                 "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]  # fmt: skip
    assert (btc["icebergAllowed"], btc["ocoAllowed"], btc["isMarginTradingAllowed"]) == (
        True, False, False)  # fmt: skip
    # Both are served (tests/binance_api/test_trade_rest.py).
    assert (btc["cancelReplaceAllowed"], btc["amendAllowed"]) == (True, True)
    assert btc["permissionSets"] == [["SPOT"]]
    assert btc["defaultSelfTradePreventionMode"] == "EXPIRE_MAKER"
    assert btc["allowedSelfTradePreventionModes"] == [
        "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]  # fmt: skip
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"] == {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                                       "maxPrice": "10000000000000.00000000",
                                       "tickSize": "0.01000000"}  # fmt: skip
    assert filters["LOT_SIZE"] == {"filterType": "LOT_SIZE", "minQty": "0.00001000",
                                   "maxQty": "9000.00000000", "stepSize": "0.00001000"}  # fmt: skip
    assert filters["MARKET_LOT_SIZE"] == {**filters["LOT_SIZE"], "filterType": "MARKET_LOT_SIZE"}
    assert filters["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "minNotional": "5.00000000",
                                       "applyToMarket": False, "avgPriceMins": 5}  # fmt: skip
    assert filters["ICEBERG_PARTS"] == {"filterType": "ICEBERG_PARTS", "limit": 100}

    one = ok(exchange, "/api/v3/exchangeInfo", symbol="ethbtc")["symbols"]
    assert [s["symbol"] for s in one] == ["ETHBTC"]
    two = ok(exchange, "/api/v3/exchangeInfo", symbols='["BTCUSDT","ETHUSDT"]')["symbols"]
    assert [s["symbol"] for s in two] == ["BTCUSDT", "ETHUSDT"]
    assert ok(exchange, "/api/v3/exchangeInfo", permissions='["MARGIN"]')["symbols"] == []
    assert len(ok(exchange, "/api/v3/exchangeInfo", permissions="SPOT")["symbols"]) == 4
    assert ok(exchange, "/api/v3/exchangeInfo", symbolStatus="HALT")["symbols"] == []

    refused(exchange, "/api/v3/exchangeInfo", 400, -1121, "Invalid symbol.", symbol="NOPE")
    refused(exchange, "/api/v3/exchangeInfo", 400, -1121, "Invalid symbol.",
            symbols='["BTCUSDT","NOPE"]')  # fmt: skip
    refused(exchange, "/api/v3/exchangeInfo", 400, -1100,
            "Illegal characters found in parameter 'symbols'; legal range is "
            '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
            symbols="BTCUSDT")  # fmt: skip
    refused(
        exchange,
        "/api/v3/exchangeInfo",
        400,
        -1151,
        "Symbol is present multiple times in the list.",
        symbols='["BTCUSDT","BTCUSDT"]',
    )
    refused(exchange, "/api/v3/exchangeInfo", 400, -1122, "Invalid symbolStatus.",
            symbolStatus="OPEN")  # fmt: skip


def test_depth_trades_and_aggregate_trades(exchange: Exchange) -> None:
    empty = ok(exchange, "/api/v3/depth", symbol="BTCUSDT")
    assert (list(empty), empty["bids"], empty["asks"]) == (["lastUpdateId", "bids", "asks"],
                                                           [], [])  # fmt: skip
    trade_some(exchange)

    book = ok(exchange, "/api/v3/depth", symbol="BTCUSDT", limit=5)
    native = ok(exchange, "/api/v1/markets/BTC-USDT/orderbook")
    # The same sequence the diff depth stream continues from.
    assert book["lastUpdateId"] == native["seq"] > empty["lastUpdateId"]
    assert book["bids"] == [["49990.00000000", "0.10000000"]]
    assert book["asks"] == [["50030.00000000", "0.20000000"]]
    assert ok(exchange, "/api/v3/depth", symbol="BTCUSDT", limit=9999)["bids"] == book["bids"]

    trades = ok(exchange, "/api/v3/trades", symbol="BTCUSDT")
    assert [list(t) for t in trades] == [
        ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]
    ] * 6
    assert [(t["price"], t["qty"], t["quoteQty"]) for t in trades] == [
        ("50000.00000000", "0.20000000", "10000.00000000"),
        ("50000.00000000", "0.30000000", "15000.00000000"),
        ("50010.00000000", "0.10000000", "5001.00000000"),
        ("50010.00000000", "0.20000000", "10002.00000000"),
        ("50020.00000000", "0.10000000", "5002.00000000"),
        ("50020.00000000", "0.10000000", "5002.00000000"),
    ]  # fmt: skip
    # Ann's buys took: the buyer was the taker, never the maker.
    assert {(t["isBuyerMaker"], t["isBestMatch"]) for t in trades} == {(False, True)}
    ids = [t["id"] for t in trades]
    assert ids == sorted(ids) and all(isinstance(t["time"], int) for t in trades)
    assert ok(exchange, "/api/v3/trades", symbol="BTCUSDT", limit=2) == trades[-2:]
    assert ok(exchange, "/api/v3/historicalTrades", symbol="BTCUSDT", fromId=ids[1],
              limit=2) == trades[1:3]  # fmt: skip

    aggregates = ok(exchange, "/api/v3/aggTrades", symbol="BTCUSDT")
    assert [list(a) for a in aggregates] == [["a", "p", "q", "f", "l", "T", "m", "M"]] * 5
    assert [(a["a"], a["p"], a["q"], a["f"], a["l"]) for a in aggregates] == [
        (ids[0], "50000.00000000", "0.20000000", ids[0], ids[0]),
        (ids[1], "50000.00000000", "0.30000000", ids[1], ids[1]),
        (ids[2], "50010.00000000", "0.10000000", ids[2], ids[2]),
        (ids[3], "50010.00000000", "0.20000000", ids[3], ids[3]),
        (ids[4], "50020.00000000", "0.20000000", ids[4], ids[5]),
    ]  # fmt: skip
    assert ok(exchange, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=ids[2]) == aggregates[2:]
    since = aggregates[4]["T"]
    assert ok(exchange, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=since,
              endTime=since + 1000)[-1] == aggregates[4]  # fmt: skip
    assert ok(exchange, "/api/v3/aggTrades", symbol="BTCUSDT", limit=2) == aggregates[3:]

    missing = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
    for path in ("/api/v3/depth", "/api/v3/trades", "/api/v3/aggTrades", "/api/v3/avgPrice"):
        refused(exchange, path, 400, -1102, missing)
        refused(exchange, path, 400, -1121, "Invalid symbol.", symbol="DOGEUSDT")
    refused(exchange, "/api/v3/depth", 400, -1100, "Illegal characters found in parameter "
            "'limit'; legal range is '^[0-9]{1,20}$'.", symbol="BTCUSDT", limit="ten")  # fmt: skip
    refused(exchange, "/api/v3/historicalTrades", 400, -1100, "Illegal characters found in "
            "parameter 'fromId'; legal range is '^[0-9]{1,20}$'.", symbol="BTCUSDT",
            fromId="-1")  # fmt: skip
    refused(exchange, "/api/v3/aggTrades", 400, -1108, "Parameter 'fromId' overflowed.",
            symbol="BTCUSDT", fromId=str(2**63))  # fmt: skip
    refused(exchange, "/api/v3/aggTrades", 400, -1127,
            "More than 1 hours between startTime and endTime.", symbol="BTCUSDT",
            startTime=0, endTime=3_600_001)  # fmt: skip


def test_klines_tickers_and_average_price(exchange: Exchange) -> None:
    quiet = ok(exchange, "/api/v3/ticker/24hr", symbol="SOLUSDT")
    assert (quiet["count"], quiet["firstId"], quiet["lastId"]) == (0, -1, -1)
    trade_some(exchange)
    trades = ok(exchange, "/api/v3/trades", symbol="BTCUSDT")

    klines = ok(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
    minute = trades[0]["time"] // 60_000 * 60_000
    assert len(trades) == 6
    if trades[-1]["time"] // 60_000 * 60_000 == minute:  # the trades fell in one minute
        assert klines == [[minute, "50000.00000000", "50020.00000000", "50000.00000000",
                           "50020.00000000", "1.00000000", minute + 59_999, "50007.00000000",
                           6, "0.00000000", "0.00000000", "0"]]  # fmt: skip
    row = klines[-1]
    assert len(row) == 12 and [type(v) for v in row] == [int, str, str, str, str, str, int,
                                                         str, int, str, str, str]  # fmt: skip
    assert all(DECIMAL.match(v) for v in row[1:6] + row[7:8] + row[9:11])
    # Derived intervals roll Mercato's candles up; uiKlines answers as klines.
    three = ok(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="3m")
    assert sum(k[8] for k in three) == 6 and all(k[0] % 180_000 == 0 for k in three)
    assert three[-1][6] == three[-1][0] + 179_999
    assert ok(exchange, "/api/v3/uiKlines", symbol="BTCUSDT", interval="1m") == klines
    day = ok(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1d", timeZone="8")
    assert day[-1][0] % 86_400_000 == 16 * 3_600_000  # midnight at UTC+8
    assert sum(k[8] for k in day) == 6
    assert ok(exchange, "/api/v3/klines", symbol="BTCUSDT", interval="1m",
              startTime=minute + 3_600_000) == []  # fmt: skip
    refused(exchange, "/api/v3/klines", 400, -1120, "Invalid interval.", symbol="BTCUSDT",
            interval="7m")  # fmt: skip
    refused(exchange, "/api/v3/klines", 400, -1102, "Mandatory parameter 'interval' was not "
            "sent, was empty/null, or malformed.", symbol="BTCUSDT")  # fmt: skip
    refused(exchange, "/api/v3/klines", 400, -1130,
            "Data sent for parameter 'timeZone' is not valid.", symbol="BTCUSDT", interval="1m",
            timeZone="15:00")  # fmt: skip

    full = ok(exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT")
    assert list(full) == TICKER_FULL_KEYS
    assert (full["openPrice"], full["highPrice"], full["lowPrice"], full["lastPrice"]) == (
        "50000.00000000", "50020.00000000", "50000.00000000", "50020.00000000")  # fmt: skip
    assert (full["priceChange"], full["priceChangePercent"]) == ("20.00000000", "0.040")
    assert (full["volume"], full["quoteVolume"], full["count"]) == (
        "1.00000000", "50007.00000000", 6)  # fmt: skip
    assert full["weightedAvgPrice"] == "50007.00000000"
    assert (full["firstId"], full["lastId"]) == (trades[0]["id"], trades[-1]["id"])
    assert (full["bidPrice"], full["bidQty"], full["askPrice"], full["askQty"]) == (
        "49990.00000000", "0.10000000", "50030.00000000", "0.20000000")  # fmt: skip
    assert (full["lastQty"], full["prevClosePrice"]) == ("0.10000000", "0.00000000")
    mini = ok(exchange, "/api/v3/ticker/24hr", symbol="BTCUSDT", type="MINI")
    assert list(mini) == TICKER_MINI_KEYS and mini["count"] == 6
    every = ok(exchange, "/api/v3/ticker/24hr")
    assert [t["symbol"] for t in every] == ["BTCUSDT", "ETHBTC", "ETHUSDT", "SOLUSDT"]
    listed = ok(exchange, "/api/v3/ticker/24hr", symbols='["ETHBTC","BTCUSDT"]')
    assert [t["symbol"] for t in listed] == ["ETHBTC", "BTCUSDT"]

    rolling = ok(exchange, "/api/v3/ticker", symbol="BTCUSDT", windowSize="1h")
    assert list(rolling) == ROLLING_FULL_KEYS and rolling["count"] == 6
    assert rolling["openTime"] % 60_000 == 0
    assert ok(exchange, "/api/v3/ticker", symbols='["BTCUSDT"]', type="MINI")[0]["count"] == 6
    refused(exchange, "/api/v3/ticker", 400, -1130,
            "Data sent for parameter 'windowSize' is not valid.", symbol="BTCUSDT",
            windowSize="8d")  # fmt: skip
    refused(
        exchange,
        "/api/v3/ticker",
        400,
        -1102,
        "Param 'symbol' or 'symbols' must be sent, but both were empty/null!",
    )

    assert ok(exchange, "/api/v3/ticker/price", symbol="BTCUSDT") == {
        "symbol": "BTCUSDT", "price": "50020.00000000"}  # fmt: skip
    prices = ok(exchange, "/api/v3/ticker/price")
    assert {p["symbol"]: p["price"] for p in prices}["SOLUSDT"] == "0.00000000"
    assert ok(exchange, "/api/v3/ticker/bookTicker", symbol="BTCUSDT") == {
        "symbol": "BTCUSDT", "bidPrice": "49990.00000000", "bidQty": "0.10000000",
        "askPrice": "50030.00000000", "askQty": "0.20000000"}  # fmt: skip
    book_tickers = ok(exchange, "/api/v3/ticker/bookTicker", symbols='["SOLUSDT"]')
    assert book_tickers == [{"symbol": "SOLUSDT", "bidPrice": "0.00000000", "bidQty": "0.00000000",
                             "askPrice": "0.00000000", "askQty": "0.00000000"}]  # fmt: skip
    refused(exchange, "/api/v3/ticker/price", 400, -1128,
            "Combination of optional parameters invalid.", symbol="BTCUSDT",
            symbols='["BTCUSDT"]')  # fmt: skip

    average = ok(exchange, "/api/v3/avgPrice", symbol="BTCUSDT")
    assert list(average) == ["mins", "price", "closeTime"]
    assert (average["mins"], average["price"], average["closeTime"]) == (
        5, "50007.00000000", trades[-1]["time"])  # fmt: skip


def test_derivative_exchange_info_is_empty_and_wallet_needs_a_key(
    exchange: Exchange,
) -> None:
    for path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
        info = ok(exchange, path)
        assert info["symbols"] == [] and info["timezone"] == "UTC"
    refused(exchange, "/sapi/v1/capital/config/getall", 401, -2014, "API-key format invalid.")
    unsigned = httpx.get(f"{exchange.url}/sapi/v1/capital/config/getall",
                         headers={"X-MBX-APIKEY": exchange.ann.key}, timeout=30)  # fmt: skip
    assert unsigned.status_code in (400, 401) and unsigned.json()["code"] < 0


def test_market_status_in_binance_terms(tmp_path: Path) -> None:
    """CANCEL_ONLY stays CANCEL_ONLY (Binance's enums have it), HALTED is HALT; symbolStatus
    filters lists and refuses one symbol that does not match (-1220). In process: a
    market's status is set by an engine command no HTTP route sends."""

    async def main() -> None:
        service = ExchangeService(load_config(env={}, data_dir=str(tmp_path / "data")), env={})
        app = create_app(service)
        await service.start()
        try:
            assert service.port is not None
            await service.port.submit(SetMarketStatus("SOL-USDT", "CANCEL_ONLY"))
            await service.port.submit(SetMarketStatus("ETH-BTC", "HALTED"))
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await _statuses(client)
        finally:
            await service.stop()

    asyncio.run(main())


async def _statuses(client: httpx.AsyncClient) -> None:
    async def ok(path: str, **params: str) -> Any:
        answer = await client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    info = await ok("/api/v3/exchangeInfo")
    assert {s["symbol"]: s["status"] for s in info["symbols"]} == {
        "BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "SOLUSDT": "CANCEL_ONLY",
        "ETHBTC": "HALT"}  # fmt: skip
    halted = (await ok("/api/v3/exchangeInfo", symbolStatus="HALT"))["symbols"]
    assert [s["symbol"] for s in halted] == ["ETHBTC"]
    prices = await ok("/api/v3/ticker/price", symbolStatus="TRADING")
    assert [p["symbol"] for p in prices] == ["BTCUSDT", "ETHUSDT"]
    mismatch = await client.get("/api/v3/depth", params={"symbol": "ETHBTC",
                                                         "symbolStatus": "TRADING"})  # fmt: skip
    assert (mismatch.status_code, mismatch.json()) == (400, {"code": -1220, "msg": (
        "The symbol's status does not match the requested symbolStatus.")})  # fmt: skip
    assert (await ok("/api/v3/depth", symbol="ETHBTC", symbolStatus="HALT"))["bids"] == []


def test_older_trades_come_from_the_projection(tmp_path: Path) -> None:
    """Past the 1000 trades memory keeps, historicalTrades and aggTrades read the SQL
    projection: 1100 one-trade taker orders, then the first trades by ``fromId``."""

    async def main() -> None:
        service = ExchangeService(load_config(env={}, data_dir=str(tmp_path / "data")), env={})
        app = create_app(service)
        await service.start()
        try:
            assert service.port is not None and service.projection is not None
            port = service.port
            await port.submit(CreditDeposit(1, "BTC", 10 * 10**8, "btc"))
            await port.submit(CreditDeposit(2, "USDT", 10**6 * 10**8, "usdt"))
            # 1100 x 0.0002 BTC resting at 50000.00 (10 USDT each), taken one by one.
            await port.submit(PlaceOrder(1, "BTC-USDT", "SELL", quantity=22_000, price=5_000_000))
            taker = PlaceOrder(2, "BTC-USDT", "BUY", quantity=20, price=5_000_000)
            taken = await port.submit_many([taker] * 1100)
            assert {r.status for r in taken} == {"ACCEPTED"}
            await service.projection.caught_up()
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await _older_trades(client)
        finally:
            await service.stop()

    asyncio.run(main())


async def _older_trades(client: httpx.AsyncClient) -> None:
    async def ok(path: str, **params: object) -> Any:
        answer = await client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    recent = await ok("/api/v3/trades", symbol="BTCUSDT", limit=1000)
    assert len(recent) == 1000
    oldest_held = recent[0]["id"]  # the oldest trade memory holds
    first = oldest_held - 100  # trade ids run on: the 100 before it are in SQL only
    older = await ok("/api/v3/historicalTrades", symbol="BTCUSDT", fromId=first, limit=150)
    assert [t["id"] for t in older] == list(range(first, first + 150))
    assert {t["qty"] for t in older} == {"0.00020000"}
    aggregates = await ok("/api/v3/aggTrades", symbol="BTCUSDT", fromId=first, limit=120)
    assert [(a["a"], a["f"], a["l"]) for a in aggregates] == [
        (i, i, i) for i in range(first, first + 120)]  # fmt: skip
    assert (await ok("/api/v3/depth", symbol="BTCUSDT"))["asks"] == []
