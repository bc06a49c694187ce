"""Public market data over REST, end to end (real uvicorn, real HTTP, in-process service
so orders go straight to the engine), and its history across a restart: recent trades,
candles and the 24 h ticker come back from the SQL projection's tables."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from marketdata.live import live_exchange
from mercato.core.candles import open_time
from mercato.core.commands import PlaceOrder
from mercato.store import create_engine, sqlite_url
from mercato.store.tables import candles, trades

FUNDS = {"BTC": 10**12, "USDT": 10**16}
MID = 5_000_000


def test_rest_market_data_answers_from_the_engine_events(
    tmp_path: Path, env: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with live_exchange(tmp_path / "data", env) as live:
            ann, _ = await live.user("ann@example.com", FUNDS)
            bob, _ = await live.user("bob@example.com", FUNDS)
            for offset in range(5):
                await live.submit(PlaceOrder(ann, "BTC-USDT", "SELL", "LIMIT", 100, MID + offset))
                await live.submit(
                    PlaceOrder(bob, "BTC-USDT", "BUY", "LIMIT", 100, MID - 1 - offset)
                )
            await live.submit(PlaceOrder(bob, "BTC-USDT", "BUY", "LIMIT", 150, MID + 1))
            async with httpx.AsyncClient(base_url=live.url) as http:
                now = (await http.get("/api/v1/time")).json()["server_time"]
                assert abs(now - time.time() * 1000) < 5000
                markets = {m["symbol"]: m for m in (await http.get("/api/v1/markets")).json()}
                btc = markets["BTC-USDT"]
                assert (
                    btc["tick_size"],
                    btc["step_size"],
                    btc["min_notional"],
                    btc["status"],
                    btc["maker_fee"],
                ) == ("0.01", "0.00001", "5", "TRADING", "0.001")
                assert "DECREMENT" in btc["allowed_stp"] and "LIMIT_MAKER" in btc["order_types"]
                assets = (await http.get("/api/v1/assets")).json()
                assert {"symbol": "BTC", "decimals": 8} in assets

                book = (await http.get("/api/v1/markets/BTC-USDT/orderbook?depth=2")).json()
                assert book["bids"] == [["49999.99", "0.001"], ["49999.98", "0.001"]]
                assert book["asks"] == [["50000.01", "0.0005"], ["50000.02", "0.001"]]
                assert book["seq"] == live.service.market_data.depth.books["BTC-USDT"].seq  # type: ignore[union-attr]
                recent = (await http.get("/api/v1/markets/BTC-USDT/trades?limit=1")).json()
                assert [(t["trade_id"], t["price"], t["quantity"]) for t in recent] == [
                    (2, "50000.01", "0.0005")
                ]
                ticker = (await http.get("/api/v1/markets/BTC-USDT/ticker")).json()
                assert (ticker["trades"], ticker["open"], ticker["last"], ticker["volume"]) == (
                    2,
                    "50000",
                    "50000.01",
                    "0.0015",
                )
                assert (ticker["best_bid"], ticker["best_ask"]) == ("49999.99", "50000.01")
                every = (await http.get("/api/v1/tickers")).json()
                assert [t["market"] for t in every] == sorted(markets)
                idle = next(t for t in every if t["market"] == "SOL-USDT")
                assert (idle["open"], idle["last"], idle["volume"]) == (None, None, "0")
                for interval in ("1m", "1d"):
                    rows = (
                        await http.get(f"/api/v1/markets/BTC-USDT/candles?interval={interval}")
                    ).json()
                    assert [
                        (c["open"], c["high"], c["close"], c["volume"], c["trades"]) for c in rows
                    ] == [("50000", "50000.01", "50000.01", "0.0015", 2)]
                future = (
                    await http.get(
                        "/api/v1/markets/BTC-USDT/candles", params={"start": now + 3_600_000}
                    )
                ).json()
                assert future == []

                for path, status, code, words in [
                    ("/api/v1/markets/DOGE-USDT/orderbook", 404, "UNKNOWN_MARKET", "DOGE-USDT"),
                    ("/api/v1/markets/DOGE-USDT/candles", 404, "UNKNOWN_MARKET", "DOGE-USDT"),
                    ("/api/v1/markets/BTC-USDT/orderbook?depth=0", 400, "INVALID_REQUEST", "depth"),
                    (
                        "/api/v1/markets/BTC-USDT/orderbook?depth=5001",
                        400,
                        "INVALID_REQUEST",
                        "depth",
                    ),
                    ("/api/v1/markets/BTC-USDT/trades?limit=1001", 400, "INVALID_REQUEST", "limit"),
                    (
                        "/api/v1/markets/BTC-USDT/candles?interval=2m",
                        400,
                        "INVALID_REQUEST",
                        "1m, 5m",
                    ),
                    ("/api/v1/markets/BTC-USDT/candles?limit=0", 400, "INVALID_REQUEST", "limit"),
                    (
                        "/api/v1/markets/BTC-USDT/candles?start=5&end=4",
                        400,
                        "INVALID_REQUEST",
                        "start",
                    ),
                ]:
                    answer = await http.get(path)
                    assert answer.status_code == status, path
                    body = answer.json()
                    assert set(body) == {"code", "message"} and body["code"] == code, path
                    assert words in body["message"], (path, body)

    asyncio.run(scenario())


def test_history_comes_back_from_the_projection_after_a_restart(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Rows as the projector writes them are what memory starts from: the trades ring,
    the candles (REST merges older stored candles with memory) and the 24 h ticker."""
    data = tmp_path / "data"
    now = int(time.time() * 1000)
    minute = open_time(now, "1m")

    async def first_boot() -> None:
        async with live_exchange(data, env):
            pass

    async def project() -> None:
        db = create_engine(sqlite_url(data / "mercato.db"))
        try:
            async with db.begin() as connection:
                rows = [
                    dict(
                        trade_id=i,
                        market="BTC-USDT",
                        price=MID + i,
                        quantity=10,
                        base_amount=10_000,
                        quote_amount=(MID + i) * 10 * 10,
                        taker_side="BUY",
                        maker_order_id=0,
                        taker_order_id=0,
                        ts=minute - 60_000 + i,
                        seq=i,
                    )
                    for i in (1, 2)
                ]
                await connection.execute(sa.insert(trades), rows)
                old = dict(
                    market="BTC-USDT",
                    interval="1h",
                    open_time=open_time(now, "1h") - 7_200_000,
                    open=4_000_000,
                    high=4_100_000,
                    low=3_900_000,
                    close=4_050_000,
                    volume="500000",
                    quote_volume="20000000000",
                    trades=7,
                    first_trade_id=0,
                    last_trade_id=0,
                )
                last_minute = dict(
                    market="BTC-USDT",
                    interval="1m",
                    open_time=minute - 60_000,
                    open=MID + 1,
                    high=MID + 2,
                    low=MID + 1,
                    close=MID + 2,
                    volume="20000",
                    quote_volume=str((2 * MID + 3) * 100),
                    trades=2,
                    first_trade_id=1,
                    last_trade_id=2,
                )
                await connection.execute(sa.insert(candles), [old, last_minute])
        finally:
            await db.dispose()

    async def second_boot() -> None:
        async with live_exchange(data, env) as live, httpx.AsyncClient(base_url=live.url) as http:
            recent = (await http.get("/api/v1/markets/BTC-USDT/trades")).json()
            assert [(t["trade_id"], t["price"]) for t in recent] == [
                (1, "50000.01"),
                (2, "50000.02"),
            ]
            ticker = (await http.get("/api/v1/markets/BTC-USDT/ticker")).json()
            assert (ticker["trades"], ticker["open"], ticker["high"], ticker["volume"]) == (
                2,
                "50000.01",
                "50000.02",
                "0.0002",
            )
            hours = (await http.get("/api/v1/markets/BTC-USDT/candles?interval=1h")).json()
            assert [(c["open"], c["trades"]) for c in hours] == [("40000", 7)]
            minutes = (await http.get("/api/v1/markets/BTC-USDT/candles?interval=1m")).json()
            assert [(c["open_time"], c["close"]) for c in minutes] == [
                (minute - 60_000, "50000.02")
            ]

    asyncio.run(first_boot())
    asyncio.run(project())
    asyncio.run(second_boot())
