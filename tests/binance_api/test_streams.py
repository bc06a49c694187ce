"""Binance's market streams on a real `mercato serve` (docs/binance.md, "Market streams"),
with a plain `websockets` client: the request protocol and its errors, every stream's
payload against Binance's documented examples (web-socket-streams.md), raw and combined
connections, the native `/ws` beside them, the diff depth stitched onto `/api/v3/depth`
by Binance's documented procedure, and python-binance's socket manager."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import websockets

from binance_api.conftest import Account, Exchange

MARKET = "BTC-USDT"
SYMBOL = "BTCUSDT"
LOWER = "btcusdt"
PACE = 0.25  # seconds between requests: Binance allows 5 messages per second

# Binance's documented payloads (web-socket-streams.md): keys in order, with a sample of
# each value's type.
TRADE = {"e": "trade", "E": 0, "s": "", "t": 0, "p": "", "q": "", "T": 0, "m": True, "M": True}
AGG_TRADE = {"e": "aggTrade", "E": 0, "s": "", "a": 0, "p": "", "q": "", "f": 0, "l": 0, "T": 0,
             "m": True, "M": True}  # fmt: skip
KLINE = {"e": "kline", "E": 0, "s": "", "k": {}}
KLINE_K = {"t": 0, "T": 0, "s": "", "i": "", "f": 0, "L": 0, "o": "", "c": "", "h": "", "l": "",
           "v": "", "n": 0, "x": False, "q": "", "V": "", "Q": "", "B": ""}  # fmt: skip
MINI_TICKER = {"e": "24hrMiniTicker", "E": 0, "s": "", "c": "", "o": "", "h": "", "l": "",
               "v": "", "q": ""}  # fmt: skip
TICKER = {"e": "24hrTicker", "E": 0, "s": "", "p": "", "P": "", "w": "", "x": "", "c": "",
          "Q": "", "b": "", "B": "", "a": "", "A": "", "o": "", "h": "", "l": "", "v": "",
          "q": "", "O": 0, "C": 0, "F": 0, "L": 0, "n": 0}  # fmt: skip
BOOK_TICKER = {"u": 0, "s": "", "b": "", "B": "", "a": "", "A": ""}
PARTIAL = {"lastUpdateId": 0, "bids": [], "asks": []}
DEPTH_UPDATE = {"e": "depthUpdate", "E": 0, "s": "", "U": 0, "u": 0, "b": [], "a": []}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_shape(payload: Any, documented: dict[str, Any],
                 texts: tuple[str, ...] = ("e", "s")) -> None:  # fmt: skip
    """Binance's keys in Binance's order, each value of the documented type; the strings
    but ``texts`` are fixed-point decimals."""
    assert isinstance(payload, dict), payload
    assert list(payload) == list(documented), payload
    for key, sample in documented.items():
        assert type(payload[key]) is type(sample), (key, payload)
        if isinstance(sample, str) and key not in texts:
            Decimal(payload[key])  # a decimal string
            assert "." in payload[key], (key, payload)


def place(exchange: Exchange, account: Account, side: str, price: str, qty: str,
          market: str = MARKET) -> int:  # fmt: skip
    answer = httpx.post(f"{exchange.url}/api/v1/orders", headers=account.session, timeout=30,
                        json={"market": market, "side": side, "type": "LIMIT",
                              "price": price, "quantity": qty})  # fmt: skip
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["order"]["order_id"])


def cancel(exchange: Exchange, account: Account, order_id: int) -> None:
    answer = httpx.delete(f"{exchange.url}/api/v1/orders/{order_id}", headers=account.session,
                          timeout=30)  # fmt: skip
    # 409: it was filled or expired by self-trade prevention meanwhile.
    assert answer.status_code in (200, 409), answer.text


def native_book(exchange: Exchange) -> dict[str, Any]:
    answer = httpx.get(f"{exchange.url}/api/v1/markets/{MARKET}/orderbook?depth=5000", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def binance_depth(exchange: Exchange) -> dict[str, Any]:
    answer = httpx.get(f"{exchange.url}/api/v3/depth?symbol={SYMBOL}&limit=5000", timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def as_book(levels: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in levels}


async def request(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    """Send a request and read until its answer (events of other kinds are skipped)."""
    await ws.send(json.dumps(message))
    await asyncio.sleep(PACE)
    while True:
        answer = json.loads(await ws.recv())
        if isinstance(answer, dict) and ("result" in answer or "error" in answer):
            return answer


async def until(ws: Any, check: Any) -> Any:
    """The first message ``check`` accepts."""
    while True:
        message = json.loads(await ws.recv())
        if check(message):
            return message


# -- the request protocol --------------------------------------------------------------------


def test_subscribe_list_unsubscribe_and_properties_as_binance_answers(
    exchange: Exchange,
) -> None:
    async def scenario() -> None:
        # CCXT's way: a path that is not a stream, then SUBSCRIBE.
        async with websockets.connect(f"{exchange.ws_url}/ws/0") as ws:
            both = [f"{LOWER}@trade", f"{LOWER}@depth@100ms"]
            ack = await request(ws, {"method": "SUBSCRIBE", "id": 1, "params": both})
            assert ack == {"result": None, "id": 1}
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert listed == {"result": [f"{LOWER}@trade", f"{LOWER}@depth@100ms"], "id": 2}
            gone = await request(ws, {"method": "UNSUBSCRIBE", "params": [f"{LOWER}@trade"],
                                      "id": "a3"})  # fmt: skip
            assert gone == {"result": None, "id": "a3"}
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4}) == {
                "result": [f"{LOWER}@depth@100ms"], "id": 4}  # fmt: skip
        async with websockets.connect(f"{exchange.ws_url}/ws/{LOWER}@trade") as ws:
            assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"],
                                      "id": 5}) == {"result": False, "id": 5}  # fmt: skip
            assert await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True],
                                      "id": 6}) == {"result": None, "id": 6}  # fmt: skip
            assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"],
                                      "id": 7}) == {"result": True, "id": 7}  # fmt: skip
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8}) == {
                "result": [f"{LOWER}@trade"], "id": 8}  # fmt: skip
            # Now combined: the trade arrives in its envelope.
            await asyncio.to_thread(place, exchange, exchange.ann, "SELL", "50000", "0.001")
            await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50000", "0.001")
            wrapped = await until(ws, lambda m: "stream" in m)
            assert list(wrapped) == ["stream", "data"] and wrapped["stream"] == f"{LOWER}@trade"
            assert_shape(wrapped["data"], TRADE)

    run(scenario())


def test_bad_requests_get_binance_error_codes_and_change_nothing(exchange: Exchange) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{exchange.ws_url}/ws/{LOWER}@trade") as ws:
            cases = [
                ({"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 1},
                 {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}),
                ({"method": "SUBSCRIBE", "params": [f"{LOWER}@kline_3m"], "id": 2},
                 {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}),
                ({"method": "FETCH", "id": 3},
                 {"error": {"code": 2, "msg": "Invalid request: unknown variant `FETCH`, "
                            "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
                            "`SET_PROPERTY`, `GET_PROPERTY`"}, "id": 3}),
                ({"params": [], "id": 4},
                 {"error": {"code": 2, "msg": "Invalid request: missing field `method`"},
                  "id": 4}),
            ]  # fmt: skip
            for sent, expected in cases:
                assert await request(ws, sent) == expected
            more = [
                ({"method": "LIST_SUBSCRIPTIONS", "id": {"x": 1}},
                 {"error": {"code": 2, "msg": "Invalid request: request ID must be an "
                            "unsigned integer"}, "id": None}),
                ({"method": "SET_PROPERTY", "params": ["speed", True], "id": 6},
                 {"error": {"code": 0, "msg": "Unknown property"}, "id": 6}),
                ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 7},
                 {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 7}),
                ({"method": "GET_PROPERTY", "params": [5], "id": 8},
                 {"error": {"code": 2, "msg": "Invalid request: property name must be a string"},
                  "id": 8}),
            ]  # fmt: skip
            await asyncio.sleep(1)  # a fresh second of Binance's 5 messages
            for sent, expected in more:
                assert await request(ws, sent) == expected
            await ws.send("{not json")
            broken = json.loads(await ws.recv())
            assert broken["error"]["code"] == 3 and broken["error"]["msg"].startswith(
                "Invalid JSON")  # fmt: skip
            await asyncio.sleep(1)
            # Nothing changed: still the one stream, raw.
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 9}) == {
                "result": [f"{LOWER}@trade"], "id": 9}  # fmt: skip
            assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"],
                                      "id": 10}) == {"result": False, "id": 10}  # fmt: skip

    run(scenario())


def test_more_than_five_messages_a_second_close_the_connection(exchange: Exchange) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{exchange.ws_url}/ws/{LOWER}@trade") as ws:
            for n in range(8):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
            answers = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    answers.append(json.loads(await ws.recv()))
            # The answers queued when the sixth arrived may go with the connection.
            ids = [a["id"] for a in answers]
            assert ids == list(range(len(ids))) and len(ids) <= 5
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    run(scenario())


def test_subscribing_past_1024_streams_is_refused(exchange: Exchange) -> None:
    async def scenario() -> None:
        streams = [f"{LOWER}@trade", f"{LOWER}@aggTrade"] + [
            f"sym{n:04d}usdt@trade" for n in range(1023)
        ]
        async with websockets.connect(f"{exchange.ws_url}/ws/0", max_size=None) as ws:
            refused = await request(ws, {"method": "SUBSCRIBE", "params": streams, "id": 1})
            assert refused == {"error": {"code": 2, "msg": "Invalid request: a connection "
                                         "listens to at most 1024 streams"}, "id": 1}  # fmt: skip
            assert await request(ws, {"method": "SUBSCRIBE", "params": streams[:1024],
                                      "id": 2}) == {"result": None, "id": 2}  # fmt: skip
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
            assert listed["result"] == streams[:1024]

    run(scenario())


# -- payloads ------------------------------------------------------------------------------

ALL_STREAMS = [f"{LOWER}@trade", f"{LOWER}@aggTrade", f"{LOWER}@kline_1m",
               f"{LOWER}@miniTicker", f"{LOWER}@ticker", f"{LOWER}@bookTicker",
               f"{LOWER}@depth", f"{LOWER}@depth@100ms", f"{LOWER}@depth5",
               f"{LOWER}@depth10@100ms", "!miniTicker@arr", "!ticker@arr"]  # fmt: skip
SHAPES = {"trade": TRADE, "aggTrade": AGG_TRADE, "kline_1m": KLINE, "miniTicker": MINI_TICKER,
          "ticker": TICKER, "bookTicker": BOOK_TICKER, "depth": DEPTH_UPDATE,
          "depth@100ms": DEPTH_UPDATE, "depth5": PARTIAL, "depth10@100ms": PARTIAL}  # fmt: skip


def test_every_stream_payload_has_binances_shape_in_its_combined_envelope(
    exchange: Exchange,
) -> None:
    async def scenario() -> dict[str, Any]:
        url = f"{exchange.ws_url}/stream?streams={'/'.join(ALL_STREAMS)}"
        seen: dict[str, Any] = {}
        async with websockets.connect(url) as ws:
            # A resting bid, then a taker sell across two asks at two prices.
            for side, price, qty in (("BUY", "49000", "0.002"), ("SELL", "50000", "0.001"),
                                     ("SELL", "50001", "0.002")):  # fmt: skip
                await asyncio.to_thread(place, exchange, exchange.ann, side, price, qty)
            await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50001", "0.0025")
            while len(seen) < len(ALL_STREAMS):
                envelope = json.loads(await ws.recv())
                assert list(envelope) == ["stream", "data"], envelope
                seen.setdefault(envelope["stream"], envelope["data"])
        return seen

    seen = run(scenario())
    for kind, shape in SHAPES.items():
        assert_shape(seen[f"{LOWER}@{kind}"], shape)
    assert_shape(seen[f"{LOWER}@kline_1m"]["k"], KLINE_K, texts=("s", "i", "B"))
    for name, shape in (("!miniTicker@arr", MINI_TICKER), ("!ticker@arr", TICKER)):
        assert isinstance(seen[name], list) and seen[name], seen[name]
        assert_shape(seen[name][0], shape)
        assert seen[name][0]["s"] == SYMBOL
    trade = seen[f"{LOWER}@trade"]
    assert (trade["s"], trade["p"], trade["q"], trade["m"]) == (SYMBOL, "50000.00000000",
                                                                "0.00100000", False)  # fmt: skip
    agg = seen[f"{LOWER}@aggTrade"]
    assert (agg["a"], agg["f"], agg["l"], agg["q"]) == (trade["t"], trade["t"], trade["t"],
                                                        "0.00100000")  # fmt: skip
    kline = seen[f"{LOWER}@kline_1m"]["k"]
    assert (kline["i"], kline["s"], kline["x"]) == ("1m", SYMBOL, False)
    assert kline["v"] == "0.00250000" and kline["V"] == "0.00250000"  # all bought by a taker
    assert kline["t"] % 60_000 == 0 and kline["T"] == kline["t"] + 59_999
    ticker = seen[f"{LOWER}@ticker"]
    assert (ticker["o"], ticker["c"], ticker["n"]) == ("50000.00000000", "50001.00000000", 2)
    assert (ticker["b"], ticker["a"]) == ("49000.00000000", "50001.00000000")
    book = seen[f"{LOWER}@bookTicker"]
    assert book["s"] == SYMBOL and book["u"] > 0
    partial = seen[f"{LOWER}@depth5"]
    assert partial["bids"] and all(len(level) == 2 for level in partial["bids"])


def test_a_raw_stream_sends_bare_payloads_one_per_frame(exchange: Exchange) -> None:
    async def scenario() -> list[Any]:
        async with websockets.connect(f"{exchange.ws_url}/ws/{LOWER}@trade") as ws:
            for price in ("50000", "50001", "50002"):
                await asyncio.to_thread(place, exchange, exchange.ann, "SELL", price, "0.001")
            # One taker order, three trades at once: still three frames.
            await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50002", "0.003")
            return [json.loads(await ws.recv()) for _ in range(3)]

    frames = run(scenario())
    for frame in frames:
        assert_shape(frame, TRADE)
    assert [f["p"] for f in frames] == ["50000.00000000", "50001.00000000", "50002.00000000"]
    assert [f["t"] for f in frames] == sorted(f["t"] for f in frames)


def test_native_ws_stays_native_and_a_binance_first_message_switches_dialect(
    exchange: Exchange,
) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{exchange.ws_url}/ws") as native:
            await native.send(json.dumps({"op": "subscribe", "id": 1,
                                          "channels": [f"trades.{MARKET}"]}))  # fmt: skip
            assert json.loads(await native.recv())["type"] == "subscribed"
            async with websockets.connect(f"{exchange.ws_url}/ws") as binance:
                ack = await request(binance, {"method": "SUBSCRIBE", "id": 1,
                                              "params": [f"{LOWER}@trade"]})  # fmt: skip
                assert ack == {"result": None, "id": 1}
                await asyncio.to_thread(place, exchange, exchange.ann, "SELL", "50000", "0.001")
                await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50000", "0.001")
                assert_shape(json.loads(await binance.recv()), TRADE)
            message = json.loads(await native.recv())
            assert message["channel"] == f"trades.{MARKET}" and message["type"] == "trade"

    run(scenario())


# -- depth: Binance's procedure for a local order book ---------------------------------------


class LocalBook:
    """web-socket-streams.md, "How to manage a local order book correctly"."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.update_id = snapshot["lastUpdateId"]
        self.bids = as_book(snapshot["bids"])
        self.asks = as_book(snapshot["asks"])
        self.started = False

    def apply(self, event: dict[str, Any]) -> None:
        if event["u"] <= self.update_id:
            return  # older than the snapshot
        if not self.started:
            assert event["U"] <= self.update_id + 1 <= event["u"], (self.update_id, event)
            self.started = True
        else:
            assert event["U"] == self.update_id + 1, (self.update_id, event)
        for side, levels in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(qty)
        self.update_id = event["u"]


async def churn(exchange: Exchange, count: int, seed: int) -> None:
    """Orders placed and cancelled (some crossing) around 50000 by ann and bob."""
    import random

    rng = random.Random(seed)
    resting: list[tuple[Account, int]] = []
    for n in range(count):
        if resting and rng.random() < 0.3:
            account, order_id = resting.pop(rng.randrange(len(resting)))
            await asyncio.to_thread(cancel, exchange, account, order_id)
            continue
        account = exchange.ann if n % 2 else exchange.bob
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(-5, 20)
        price = 50000 - offset if side == "BUY" else 50000 + offset
        qty = f"0.00{rng.randint(1, 9)}"
        order_id = await asyncio.to_thread(place, exchange, account, side, str(price), qty)
        resting.append((account, order_id))


def test_diff_depth_stitches_onto_api_v3_depth_by_binances_procedure(exchange: Exchange) -> None:
    streams = [f"{LOWER}@depth@100ms", f"{LOWER}@depth"]

    async def scenario() -> tuple[list[LocalBook], dict[str, Any]]:
        url = f"{exchange.ws_url}/stream?streams={'/'.join(streams)}"
        async with websockets.connect(url) as ws:
            events: dict[str, list[dict[str, Any]]] = {s: [] for s in streams}

            async def read() -> None:
                while True:
                    envelope = json.loads(await ws.recv())
                    events[envelope["stream"]].append(envelope["data"])

            reader = asyncio.create_task(read())
            await churn(exchange, 40, seed=1)
            snapshot = await asyncio.to_thread(binance_depth, exchange)
            await churn(exchange, 60, seed=2)
            final = await asyncio.to_thread(native_book, exchange)
            while not all(e and e[-1]["u"] >= final["seq"] for e in events.values()):
                await asyncio.sleep(0.05)
            reader.cancel()
        books = []
        for stream in streams:
            book = LocalBook(snapshot)
            for event in events[stream]:
                assert_shape(event, DEPTH_UPDATE)
                book.apply(event)
            assert book.started and book.update_id == final["seq"]
            books.append(book)
        return books, final

    books, final = run(scenario())
    for book in books:
        assert book.bids == as_book(final["bids"]) and book.asks == as_book(final["asks"])
        assert book.bids and book.asks


# -- python-binance ------------------------------------------------------------------------------


def python_binance() -> Any:
    """python-binance's ``binance`` package."""
    import binance

    return binance


def test_python_binance_socket_manager_trade_depth_and_kline_sockets(exchange: Exchange) -> None:
    library = python_binance()
    AsyncClient, BinanceSocketManager = library.AsyncClient, library.BinanceSocketManager

    class MercatoSockets(BinanceSocketManager):
        STREAM_URL = f"{exchange.ws_url}/"

    async def scenario() -> dict[str, Any]:
        client = AsyncClient()  # no REST call is needed for the public streams
        sockets = MercatoSockets(client)
        got: dict[str, Any] = {}
        try:
            async with sockets.trade_socket(SYMBOL) as trades, \
                    sockets.depth_socket(SYMBOL, interval=100) as depth, \
                    sockets.depth_socket(SYMBOL, depth="5") as partial, \
                    sockets.kline_socket(SYMBOL, "1m") as klines:  # fmt: skip
                await asyncio.to_thread(place, exchange, exchange.ann, "SELL", "50000", "0.001")
                await asyncio.to_thread(place, exchange, exchange.bob, "BUY", "50000", "0.001")
                got["trade"] = await trades.recv()
                got["depth"] = await depth.recv()
                got["partial"] = await partial.recv()
                got["kline"] = await klines.recv()
        finally:
            await client.close_connection()
        return got

    got = run(scenario())
    assert_shape(got["trade"], TRADE)
    assert (got["trade"]["s"], got["trade"]["p"]) == (SYMBOL, "50000.00000000")
    assert_shape(got["depth"], DEPTH_UPDATE)
    assert_shape(got["partial"], PARTIAL)
    assert_shape(got["kline"], KLINE)
    assert got["kline"]["k"]["i"] == "1m" and got["kline"]["k"]["n"] >= 1
