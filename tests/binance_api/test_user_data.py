"""Binance's user data stream on the WebSocket API (``userDataStream.subscribe.signature``)
on a real `mercato serve --dev`: ann and bob trade over the native API and every order
change and balance change reaches its owner, as Binance's events (user-data-stream.md)
in Binance's field order, wrapped as ``{"subscriptionId", "event"}``; a deleted key ends
the subscription."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx

from service.conftest import Backend
from service.test_standing import admin

from .conftest import Account, Exchange, ccxt_binance, python_binance
from .wsapi import WAIT, WsApi, sign

REPORT_KEYS = ["e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X", "r",
               "i", "l", "z", "L", "n", "N", "T", "t", "I", "w", "m", "M", "O", "Z", "Y", "Q",
               "W", "V"]  # fmt: skip
SUBSCRIBE = "userDataStream.subscribe.signature"


def native(exchange: Exchange, account: Account, method: str, path: str,
           body: dict[str, Any] | None = None) -> Any:  # fmt: skip
    response = httpx.request(method, f"{exchange.url}/api/v1{path}", json=body,
                             headers=account.session, timeout=30)  # fmt: skip
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def place(exchange: Exchange, account: Account, **order: str) -> int:
    body = {"market": "BTC-USDT", **order}
    return int(native(exchange, account, "POST", "/orders", body)["order"]["order_id"])


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in events if e["event"]["e"] == kind]


def reports(events: list[dict[str, Any]], order_id: int) -> list[tuple[str, str]]:
    return [(r["x"], r["X"]) for r in of_kind(events, "executionReport") if r["i"] == order_id]


async def subscribed(exchange: Exchange, account: Account) -> WsApi:
    api = await WsApi.open(exchange)
    answer = await api.call(SUBSCRIBE, sign(account, {}))
    assert answer["result"] == {"subscriptionId": 0}, answer
    return api


def test_orders_fills_and_balances_reach_their_owner(exchange: Exchange) -> None:
    ann, bob = exchange.ann, exchange.bob

    async def scenario() -> None:
        ann_ws, bob_ws = await subscribed(exchange, ann), await subscribed(exchange, bob)
        ask = await asyncio.to_thread(place, exchange, bob, side="SELL", price="50000",
                                      quantity="0.5", client_order_id="bob-ask-1")  # fmt: skip
        await bob_ws.events_until(lambda e: of_kind(e, "outboundAccountPosition"))
        bid = await asyncio.to_thread(place, exchange, ann, side="BUY", price="50000",
                                      quantity="0.2")  # fmt: skip
        await ann_ws.events_until(lambda e: ("TRADE", "FILLED") in reports(e, bid)
                                  and of_kind(e, "outboundAccountPosition"))  # fmt: skip
        await bob_ws.events_until(lambda e: ("TRADE", "PARTIALLY_FILLED") in reports(e, ask)
                                  and len(of_kind(e, "outboundAccountPosition")) == 2)  # fmt: skip
        await asyncio.to_thread(native, exchange, bob, "DELETE", f"/orders/{ask}")
        await bob_ws.events_until(lambda e: ("CANCELED", "CANCELED") in reports(e, ask)
                                  and len(of_kind(e, "outboundAccountPosition")) == 3)  # fmt: skip
        await asyncio.to_thread(native, exchange, ann, "POST", "/dev/faucet",
                                {"asset": "USDT", "amount": "25"})  # fmt: skip
        await ann_ws.events_until(lambda e: of_kind(e, "balanceUpdate"))
        await ann_ws.events_until(lambda e: len(of_kind(e, "outboundAccountPosition")) == 2)
        check_bob(bob_ws.events, ask)
        check_ann(ann_ws.events, bid, ask)
        for api in (ann_ws, bob_ws):
            await api.close()

    asyncio.run(scenario())


def check_bob(events: list[dict[str, Any]], ask: int) -> None:
    assert {e["subscriptionId"] for e in events} == {0}
    assert all(list(e) == ["subscriptionId", "event"] for e in events)
    assert reports(events, ask) == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED"),
                                    ("CANCELED", "CANCELED")]  # fmt: skip
    new, trade, canceled = of_kind(events, "executionReport")
    assert list(new) == REPORT_KEYS
    assert (new["s"], new["c"], new["S"], new["o"], new["f"]) == (
        "BTCUSDT",
        "bob-ask-1",
        "SELL",
        "LIMIT",
        "GTC",
    )
    assert (new["q"], new["p"], new["P"], new["F"]) == (
        "0.50000000",
        "50000.00000000",
        "0.00000000",
        "0.00000000",
    )
    assert (new["g"], new["C"], new["r"], new["t"], new["N"]) == (-1, "", "NONE", -1, None)
    assert (new["l"], new["z"], new["L"], new["n"]) == (
        "0.00000000",
        "0.00000000",
        "0.00000000",
        "0",
    )
    assert new["w"] is True and new["m"] is False and new["V"] == "EXPIRE_MAKER"
    # The fill, as the maker: 0.2 BTC at 50000 = 10000 USDT, the fee 0.1 % of the USDT.
    assert list(trade) == REPORT_KEYS and trade["m"] is True
    assert (trade["l"], trade["z"], trade["L"]) == ("0.20000000", "0.20000000", "50000.00000000")
    assert (trade["Y"], trade["Z"], trade["n"], trade["N"]) == (
        "10000.00000000",
        "10000.00000000",
        "10.00000000",
        "USDT",
    )
    assert trade["t"] > 0 and trade["I"] != new["I"] and trade["w"] is True
    assert canceled["x"] == "CANCELED" and canceled["C"] == "bob-ask-1"
    assert canceled["w"] is False and canceled["z"] == "0.20000000"
    placed, filled, released = of_kind(events, "outboundAccountPosition")
    assert list(placed) == ["e", "E", "u", "B"] and list(placed["B"][0]) == ["a", "f", "l"]
    assert placed["B"] == [{"a": "BTC", "f": "9.50000000", "l": "0.50000000"}]
    assert filled["B"] == [{"a": "BTC", "f": "9.50000000", "l": "0.30000000"},
                           {"a": "USDT", "f": "1009990.00000000", "l": "0.00000000"}]  # fmt: skip
    assert released["B"] == [{"a": "BTC", "f": "9.80000000", "l": "0.00000000"}]
    # Each batch's events, then the balances it changed: the report comes first.
    kinds = [e["event"]["e"] for e in events]
    assert kinds == ["executionReport", "outboundAccountPosition"] * 3


def check_ann(events: list[dict[str, Any]], bid: int, ask: int) -> None:
    assert reports(events, bid) == [("NEW", "NEW"), ("TRADE", "FILLED")]
    assert reports(events, ask) == []  # nothing of bob's order reaches ann
    trade = of_kind(events, "executionReport")[1]
    assert trade["m"] is False and trade["w"] is False
    assert (trade["n"], trade["N"]) == ("0.00020000", "BTC")  # the taker pays in BTC
    (deposit,) = of_kind(events, "balanceUpdate")
    assert list(deposit) == ["e", "E", "a", "d", "T"]
    assert (deposit["a"], deposit["d"]) == ("USDT", "25.00000000")
    positions = of_kind(events, "outboundAccountPosition")
    assert positions[-1]["B"] == [{"a": "USDT", "f": "990025.00000000", "l": "0.00000000"}]
    btc = next(b for b in positions[0]["B"] if b["a"] == "BTC")
    assert Decimal(btc["f"]) == Decimal("10.1998")


def test_every_fill_of_one_order_arrives(exchange: Exchange) -> None:
    """One market order sweeping three asks: one batch, and every fill is reported to
    both sides, then one balance update with every asset it changed."""
    ann, bob = exchange.ann, exchange.bob

    async def scenario() -> None:
        ann_ws, bob_ws = await subscribed(exchange, ann), await subscribed(exchange, bob)
        asks = []
        for price in ("50000", "50001", "50002"):
            asks.append(await asyncio.to_thread(place, exchange, bob, side="SELL",
                                                price=price, quantity="0.1"))  # fmt: skip
        sweep = await asyncio.to_thread(place, exchange, ann, side="BUY", type="MARKET",
                                        quantity="0.3")  # fmt: skip
        await ann_ws.events_until(lambda e: ("TRADE", "FILLED") in reports(e, sweep)
                                  and of_kind(e, "outboundAccountPosition"))  # fmt: skip
        await bob_ws.events_until(lambda e: all(("TRADE", "FILLED") in reports(e, a)
                                                for a in asks))  # fmt: skip
        assert reports(ann_ws.events, sweep) == [("NEW", "NEW")] + [
            ("TRADE", "PARTIALLY_FILLED")
        ] * 2 + [("TRADE", "FILLED")]
        fills = [r for r in of_kind(ann_ws.events, "executionReport") if r["x"] == "TRADE"]
        assert [f["L"] for f in fills] == ["50000.00000000", "50001.00000000", "50002.00000000"]
        assert [f["z"] for f in fills] == ["0.10000000", "0.20000000", "0.30000000"]
        assert len({f["t"] for f in fills}) == 3 and len({f["I"] for f in fills}) == 3
        (position,) = of_kind(ann_ws.events, "outboundAccountPosition")
        assert [b["a"] for b in position["B"]] == ["BTC", "USDT"]
        for ask in asks:
            assert reports(bob_ws.events, ask) == [("NEW", "NEW"), ("TRADE", "FILLED")]
        # A market buy by quote amount: FILLED only on its last fill, its q what it filled.
        for price in ("50000", "50001"):
            await asyncio.to_thread(place, exchange, bob, side="SELL", price=price,
                                    quantity="0.1")  # fmt: skip
        by_quote = await asyncio.to_thread(place, exchange, ann, side="BUY", type="MARKET",
                                           quote_quantity="10000.1")  # fmt: skip
        await ann_ws.events_until(lambda e: ("TRADE", "FILLED") in reports(e, by_quote))
        assert reports(ann_ws.events, by_quote) == [
            ("NEW", "NEW"),
            ("TRADE", "PARTIALLY_FILLED"),
            ("TRADE", "FILLED"),
        ]
        last = [r for r in of_kind(ann_ws.events, "executionReport") if r["i"] == by_quote][-1]
        assert (last["q"], last["z"], last["Q"], last["Z"]) == (
            "0.20000000",
            "0.20000000",
            "10000.10000000",
            "10000.10000000",
        )
        for api in (ann_ws, bob_ws):
            await api.close()

    asyncio.run(scenario())


def test_a_deleted_key_ends_the_subscription(exchange: Exchange) -> None:
    ann = exchange.ann

    async def scenario() -> None:
        api = await subscribed(exchange, ann)
        await asyncio.to_thread(native, exchange, ann, "DELETE", f"/account/api-keys/{ann.key}")
        (ended,) = await api.events_until(lambda e: e)
        assert ended == {"subscriptionId": 0, "event": {"e": "eventStreamTerminated",
                                                        "E": ended["event"]["E"]}}  # fmt: skip
        listed = await api.call("session.subscriptions")
        assert listed["result"] == []
        # Nothing more arrives for that subscription: a faucet credit is not sent.
        await asyncio.to_thread(native, exchange, ann, "POST", "/dev/faucet",
                                {"asset": "USDT", "amount": "1"})  # fmt: skip
        assert (await api.call("ping"))["status"] == 200
        assert len(api.events) == 1
        await api.close()

    asyncio.run(scenario())


async def until(watch: Any, read: Any, done: Any) -> Any:
    """Call ccxt's ``watch`` until ``done(read())``: ``read`` looks at the client's cache
    first, so an update that arrived between two watches is not waited for again."""
    while not done(read()):
        await asyncio.wait_for(watch(), WAIT)
    return read()


def test_ccxt_pro_watches_and_trades_over_the_websocket_api(exchange: Exchange) -> None:
    """ccxt.pro.binance unmodified: watch_orders, watch_my_trades and watch_balance on the
    user data stream while ann trades with create_order_ws (bob's ask placed natively),
    and fetch_order_ws, fetch_open_orders_ws, cancel_order_ws, fetch_balance_ws."""
    ann, bob = exchange.ann, exchange.bob

    async def scenario() -> None:
        client = ccxt_binance(exchange, ann, pro=True)
        client.newUpdates = False  # whole caches: what arrived, not what is new
        try:
            await client.load_markets()
            # The first watch subscribes (userDataStream.subscribe.signature) and sets up
            # the balance cache that every user data event updates.
            first = asyncio.create_task(client.watch_orders("BTC/USDT"))
            await client.authenticate()  # the same subscription, once answered
            while "spot" not in client.balance:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(place, exchange, bob, side="SELL", price="50000",
                                    quantity="0.5")  # fmt: skip
            taken = await client.create_order_ws("BTC/USDT", "limit", "buy", 0.2, 50000)
            assert (taken["status"], taken["filled"]) == ("closed", 0.2)
            resting = await client.create_order_ws("BTC/USDT", "limit", "buy", 0.1, 40000)
            assert resting["status"] == "open"
            fetched = await client.fetch_order_ws(resting["id"], "BTC/USDT")
            assert (fetched["id"], fetched["price"], fetched["amount"]) == (
                resting["id"],
                40000.0,
                0.1,
            )
            opened = await client.fetch_open_orders_ws("BTC/USDT")
            assert [o["id"] for o in opened] == [resting["id"]]
            canceled = await client.cancel_order_ws(resting["id"], "BTC/USDT")
            assert canceled["status"] == "canceled"
            # ccxt 4.5.90 parses account.status' balances with no account type, so they
            # stay in "info" only (as against Binance): check the answer there.
            balance = await client.fetch_balance_ws()
            rows = {b["asset"]: (b["free"], b["locked"]) for b in balance["info"]["balances"]}
            assert rows["BTC"] == ("10.19980000", "0.00000000")
            assert rows["USDT"] == ("990000.00000000", "0.00000000")

            def order_states() -> dict[str, str]:
                return {o["id"]: o["status"] for o in (client.orders or [])}

            states = await until(lambda: client.watch_orders("BTC/USDT"), order_states,
                                 lambda s: s.get(resting["id"]) == "canceled"
                                 and s.get(taken["id"]) == "closed")  # fmt: skip
            assert states == {taken["id"]: "closed", resting["id"]: "canceled"}
            trades = await until(lambda: client.watch_my_trades("BTC/USDT"),
                                 lambda: list(client.myTrades or []), lambda t: t)  # fmt: skip
            (trade,) = trades
            assert (trade["order"], trade["side"], trade["takerOrMaker"]) == (
                taken["id"],
                "buy",
                "taker",
            )
            assert (trade["price"], trade["amount"], trade["cost"]) == (50000.0, 0.2, 10000.0)
            assert trade["fee"] == {"cost": 0.0002, "currency": "BTC"}
            settled = await until(client.watch_balance, lambda: client.balance.get("spot") or {},
                                  lambda b: b.get("USDT", {}).get("used") == 0.0
                                  and b.get("BTC", {}).get("free") == 10.1998)  # fmt: skip
            assert settled["USDT"]["free"] == 990000.0
            assert (await first)[0]["id"] == taken["id"]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_python_binance_user_socket(exchange: Exchange) -> None:
    """python-binance's BinanceSocketManager.user_socket (userDataStream.subscribe.signature
    on its WebSocket API connection), only its URLs pointed at Mercato."""
    ann, bob = exchange.ann, exchange.bob
    async_client, streams = python_binance()[2:]

    class MercatoClient(async_client.AsyncClient):  # type: ignore[misc, name-defined]
        API_URL = f"{exchange.url}/api"
        WS_API_URL = f"{exchange.ws_url}/ws-api/v3"

    async def scenario() -> list[dict[str, Any]]:
        client = await MercatoClient.create(ann.key, ann.secret)
        received: list[dict[str, Any]] = []
        try:
            manager = streams.BinanceSocketManager(client)
            async with manager.user_socket() as socket:
                await asyncio.to_thread(place, exchange, bob, side="SELL", price="50000",
                                        quantity="0.5")  # fmt: skip
                await asyncio.to_thread(place, exchange, ann, side="BUY", price="50000",
                                        quantity="0.2")  # fmt: skip
                while len([m for m in received if m.get("e") == "outboundAccountPosition"]) < 1:
                    received.append(await asyncio.wait_for(socket.recv(), WAIT))
        finally:
            await client.close_connection()
        return received

    received = asyncio.run(scenario())
    kinds = [(m["e"], m.get("x"), m.get("X")) for m in received]
    assert kinds == [("executionReport", "NEW", "NEW"), ("executionReport", "TRADE", "FILLED"),
                     ("outboundAccountPosition", None, None)]  # fmt: skip
    assert received[1]["l"] == "0.20000000" and received[1]["L"] == "50000.00000000"


def test_a_frozen_user_loses_the_stream(exchange: Exchange, sqlite_backend: Backend) -> None:
    """A freeze by the admin CLI (another process) ends the subscription, as it ends the
    native private channels; subscribing again is refused."""
    ann = exchange.ann

    async def scenario() -> None:
        api = await subscribed(exchange, ann)
        await asyncio.to_thread(admin, sqlite_backend, "freeze", ann.email)
        (ended,) = await api.events_until(lambda e: e)
        assert ended["event"]["e"] == "eventStreamTerminated"
        again = await api.call(SUBSCRIBE, sign(ann, {}))
        assert again["status"] == 400
        assert again["error"] == {"code": -2010, "msg": "This action is disabled on this account."}
        await api.close()

    asyncio.run(scenario())


def test_expiry_self_trade_prevention_amend_and_stop_reports(exchange: Exchange) -> None:
    """The other execution types: an IOC's unfilled rest (EXPIRED with its eR), self-trade
    prevention (TRADE_PREVENTION, EXPIRED_IN_MATCH), an amendment (REPLACED) and a stop
    that triggers (NEW, then working)."""
    ann, bob = exchange.ann, exchange.bob

    async def scenario() -> None:
        api = await subscribed(exchange, ann)

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.to_thread(*args, **kwargs)

        await call(place, exchange, bob, side="SELL", price="50000", quantity="0.1")
        ioc = await call(place, exchange, ann, side="BUY", price="50000", quantity="0.3",
                         time_in_force="IOC")  # fmt: skip
        own_ask = await call(place, exchange, ann, side="SELL", price="51000", quantity="0.1")
        crossing = await call(place, exchange, ann, side="BUY", price="51000", quantity="0.1",
                              time_in_force="IOC")  # fmt: skip
        resting = await call(place, exchange, ann, side="BUY", price="40000", quantity="0.1")
        await call(native, exchange, ann, "PATCH", f"/orders/{resting}", {"price": "41000"})
        stop = await call(place, exchange, ann, side="SELL", type="STOP_LOSS_LIMIT",
                          price="44000", stop_price="45000", quantity="0.1")  # fmt: skip
        await call(place, exchange, bob, side="SELL", price="45000", quantity="0.01")
        await call(place, exchange, ann, side="BUY", price="45000", quantity="0.01")  # 45000 trades
        await api.events_until(lambda e: len(reports(e, stop)) >= 2)
        events = api.events
        assert reports(events, ioc) == [("NEW", "NEW"), ("TRADE", "PARTIALLY_FILLED"),
                                        ("EXPIRED", "EXPIRED")]  # fmt: skip
        expired = of_kind(events, "executionReport")[2]
        assert (expired["eR"], expired["z"], expired["w"]) == (
            "UNFILLED_IOC_QUANTITY_EXPIRED",
            "0.10000000",
            False,
        )
        # EXPIRE_MAKER, Mercato's default: the resting order of ann's own is taken out.
        assert reports(events, own_ask) == [("NEW", "NEW"),
                                            ("TRADE_PREVENTION", "EXPIRED_IN_MATCH")]  # fmt: skip
        assert reports(events, crossing) == [("NEW", "NEW"), ("EXPIRED", "EXPIRED")]
        assert reports(events, resting) == [("NEW", "NEW"), ("REPLACED", "NEW")]
        executions = of_kind(events, "executionReport")
        replaced = next(r for r in executions if r["i"] == resting and r["x"] == "REPLACED")
        assert replaced["p"] == "41000.00000000"
        stop_reports = [r for r in of_kind(events, "executionReport") if r["i"] == stop]
        untriggered, triggered = stop_reports[:2]
        assert (untriggered["o"], untriggered["P"], untriggered["w"]) == (
            "STOP_LOSS_LIMIT",
            "45000.00000000",
            False,
        )
        assert "W" not in untriggered and list(untriggered) == [k for k in REPORT_KEYS if k != "W"]
        assert (triggered["x"], triggered["X"], triggered["w"]) == ("NEW", "NEW", True)
        assert triggered["W"] >= untriggered["O"]
        await api.close()

    asyncio.run(scenario())
