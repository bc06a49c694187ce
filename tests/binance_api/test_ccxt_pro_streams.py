"""The real ``ccxt.pro.binance``, only its URLs changed, on Mercato's market streams:
watch_order_book kept equal to the engine's book across many orders and cancels and
across a lost message (it resynchronises from ``/api/v3/depth`` when ``U`` does not follow
the previous ``u``) and across a server restart, watch_trades, watch_ticker,
watch_tickers, watch_ohlcv."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import websockets
from websockets.asyncio.server import ServerConnection, serve

from binance_api.conftest import Exchange, ccxt_binance
from binance_api.test_streams import churn, native_book, place
from service.conftest import Backend, Server

SYMBOL = "BTC/USDT"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def as_floats(levels: list[list[str]]) -> dict[float, float]:
    return {float(p): float(q) for p, q in levels}


def ccxt_levels(levels: list[list[float]]) -> dict[float, float]:
    return {float(p): float(q) for p, q, *_ in levels}


class BookWatcher:
    """CCXT Pro used as meant: a task that keeps calling watch_order_book (after a
    ChecksumError too, which makes CCXT subscribe and fetch ``/api/v3/depth`` again);
    CCXT folds every update into ``client.orderbooks`` as it arrives."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.gaps = 0
        self.reconnects = 0
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BookWatcher:
        self.task = asyncio.create_task(self.watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def watch(self) -> None:
        import ccxt

        while True:
            try:
                await self.client.watch_order_book(SYMBOL)
            except ccxt.ChecksumError:  # U != previous u + 1: CCXT starts again
                self.gaps += 1
            except ccxt.NetworkError:  # the server went away: CCXT reconnects on the next
                self.reconnects += 1
                await asyncio.sleep(0.2)

    async def in_sync(self, exchange: Exchange) -> tuple[Any, dict[str, Any]]:
        """CCXT's book once it caught up with the engine's depth sequence, and the engine's."""
        final = await asyncio.to_thread(native_book, exchange)
        while True:
            assert self.task is not None
            if self.task.done():
                self.task.result()  # what stopped the watching
            book = self.client.orderbooks.get(SYMBOL)
            if book is not None and book["nonce"] is not None and book["nonce"] >= final["seq"]:
                return book, final
            await asyncio.sleep(0.05)


def assert_same_book(book: Any, final: dict[str, Any]) -> None:
    assert book["nonce"] == final["seq"]
    assert ccxt_levels(book["bids"]) == as_floats(final["bids"])
    assert ccxt_levels(book["asks"]) == as_floats(final["asks"])
    assert book["bids"] and book["asks"]


def test_watch_order_book_follows_the_engine_across_many_orders(exchange: Exchange) -> None:
    async def scenario() -> None:
        client = ccxt_binance(exchange, pro=True)
        try:
            async with BookWatcher(client) as watcher:
                for seed in range(3):
                    await churn(exchange, 40, seed=seed)
                    assert_same_book(*await watcher.in_sync(exchange))
                assert watcher.gaps == 0
        finally:
            await client.close()

    run(scenario())


class DroppingProxy:
    """A WebSocket relay between CCXT and the server that loses one ``depthUpdate`` when
    asked: what a client sees when a message goes missing."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.drop_next = False
        self.dropped = 0

    async def relay(self, downstream: ServerConnection) -> None:
        path = downstream.request.path if downstream.request else "/ws"
        async with websockets.connect(self.upstream + path) as upstream:

            async def to_server() -> None:
                async for message in downstream:
                    await upstream.send(message)

            async def to_client() -> None:
                async for message in upstream:
                    if self.drop_next and '"depthUpdate"' in str(message):
                        self.drop_next = False
                        self.dropped += 1
                        continue
                    await downstream.send(message)

            tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()


@contextlib.asynccontextmanager
async def dropping_proxy(exchange: Exchange) -> AsyncIterator[tuple[DroppingProxy, str]]:
    proxy = DroppingProxy(exchange.ws_url)
    async with serve(proxy.relay, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield proxy, f"ws://127.0.0.1:{port}"


def test_watch_order_book_resynchronises_after_a_lost_message(exchange: Exchange) -> None:
    async def scenario() -> None:
        async with dropping_proxy(exchange) as (proxy, proxy_url):
            client = ccxt_binance(exchange, pro=True)
            client.urls["api"]["ws"]["spot"] = f"{proxy_url}/ws"
            try:
                async with BookWatcher(client) as watcher:
                    await churn(exchange, 20, seed=7)
                    assert_same_book(*await watcher.in_sync(exchange))
                    assert watcher.gaps == 0
                    proxy.drop_next = True
                    await churn(exchange, 20, seed=8)
                    assert_same_book(*await watcher.in_sync(exchange))
                    assert proxy.dropped == 1 and watcher.gaps >= 1
                    await churn(exchange, 20, seed=9)
                    assert_same_book(*await watcher.in_sync(exchange))
            finally:
                await client.close()

    run(scenario())


def test_watch_order_book_starts_again_after_a_server_restart(
    exchange: Exchange, sqlite_backend: Backend, servers: list[Server]
) -> None:
    """A restart closes the connection and the depth sequence jumps ahead (docs/marketdata.md):
    CCXT reconnects, subscribes, takes a new snapshot and follows the book again."""

    def restart() -> None:
        exchange.server.stop()
        port = exchange.server.port
        with mock.patch("service.conftest.free_port", lambda: port):
            again = Server(sqlite_backend.data, sqlite_backend.env, "--dev")
        servers.append(again)
        again.wait_ready()

    async def scenario() -> None:
        client = ccxt_binance(exchange, pro=True)
        try:
            async with BookWatcher(client) as watcher:
                await churn(exchange, 20, seed=3)
                before, _ = await watcher.in_sync(exchange)
                nonce = before["nonce"]
                await asyncio.to_thread(restart)
                await churn(exchange, 20, seed=4)
                book, final = await watcher.in_sync(exchange)
                assert_same_book(book, final)
                assert watcher.reconnects >= 1 and final["seq"] > nonce
        finally:
            await client.close()

    run(scenario())


@contextlib.asynccontextmanager
async def trading(exchange: Exchange) -> AsyncIterator[None]:
    """A trade at 50000 every half second (ann sells, bob takes) while the block runs."""

    async def trade_forever() -> None:
        while True:
            await asyncio.to_thread(place, exchange, exchange.ann, "SELL", "50000", "0.001")
            await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50000", "0.001")
            await asyncio.sleep(0.5)

    task = asyncio.create_task(trade_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_watch_trades_ticker_tickers_and_ohlcv(exchange: Exchange) -> None:
    async def scenario() -> dict[str, Any]:
        client = ccxt_binance(exchange, pro=True)
        got: dict[str, Any] = {}
        try:
            await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "49000", "0.01")
            async with trading(exchange):
                got["trades"] = await client.watch_trades(SYMBOL)
                got["mini"] = await client.watch_ticker(SYMBOL)  # @miniTicker, CCXT's default
                got["ticker"] = await client.watch_ticker(SYMBOL, {"name": "ticker"})
                got["tickers"] = await client.watch_tickers()
                got["ohlcv"] = await client.watch_ohlcv(SYMBOL, "1m")
        finally:
            await client.close()
        return got

    got = run(scenario())
    trade = got["trades"][-1]
    assert (trade["symbol"], trade["price"], trade["amount"], trade["side"]) == (
        SYMBOL, 50000.0, 0.001, "buy")  # fmt: skip
    assert trade["id"] and trade["timestamp"] > 0
    ticker = got["ticker"]
    assert ticker["symbol"] == SYMBOL and ticker["last"] == 50000.0
    assert ticker["baseVolume"] > 0 and ticker["info"]["e"] == "24hrTicker"
    assert ticker["vwap"] == 50000.0 and ticker["bid"] == 49000.0
    mini = got["mini"]
    assert (mini["symbol"], mini["last"], mini["info"]["e"]) == (SYMBOL, 50000.0, "24hrMiniTicker")
    assert SYMBOL in got["tickers"]
    assert got["tickers"][SYMBOL]["close"] == 50000.0
    assert got["tickers"][SYMBOL]["info"]["e"] == "24hrMiniTicker"
    candle = got["ohlcv"][-1]
    assert candle[0] % 60_000 == 0 and candle[4] == 50000.0 and candle[5] > 0
