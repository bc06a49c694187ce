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

from .conftest import Account, Exchange
from .wsapi import WsApi, sign

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
