"""Binance's WebSocket API (``/ws-api/v3``) on a real `mercato serve --dev`: each method's
answer against Binance's documented examples (web-socket-api.md), signature and request
errors as Binance's triples, and the user data stream subscription methods."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets

from .conftest import Exchange
from .wsapi import WAIT, WsApi, sign

RATE_LIMIT_KEYS = ["rateLimitType", "interval", "intervalNum", "limit", "count"]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def assert_ok(answer: dict[str, Any], request_id: Any) -> Any:
    assert list(answer) == ["id", "status", "result", "rateLimits"], answer
    assert answer["id"] == request_id and answer["status"] == 200
    (limit,) = answer["rateLimits"]
    assert list(limit) == RATE_LIMIT_KEYS
    assert limit["rateLimitType"] == "REQUEST_WEIGHT" and limit["interval"] == "MINUTE"
    assert isinstance(limit["count"], int) and limit["count"] >= 1
    return answer["result"]


def mandatory(name: str) -> str:
    return f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."


def assert_error(answer: dict[str, Any], status: int, code: int, msg: str) -> None:
    assert list(answer)[:3] == ["id", "status", "error"], answer
    assert answer["status"] == status
    assert answer["error"] == {"code": code, "msg": msg}


def test_ping_time_and_request_ids(exchange: Exchange) -> None:
    async def scenario() -> None:
        api = await WsApi.open(exchange)
        assert assert_ok(await api.call("ping", request_id="922bcc6e"), "922bcc6e") == {}
        answer = await api.call("time", request_id=7)
        result = assert_ok(answer, 7)
        assert list(result) == ["serverTime"] and isinstance(result["serverTime"], int)
        # An explicit version prefix names the same method; a null id is echoed.
        assert assert_ok(await api.call("v3/ping", request_id="v"), "v") == {}
        assert assert_ok(await api.send_raw('{"id": null, "method": "ping"}'), None) == {}
        # returnRateLimits=false leaves the field out, per request or per connection.
        quiet = await api.call("time", {"returnRateLimits": False}, request_id=8)
        assert list(quiet) == ["id", "status", "result"]
        await api.close()
        quiet_connection = await WsApi.open(exchange, "?returnRateLimits=false")
        assert list(await quiet_connection.call("ping")) == ["id", "status", "result"]
        await quiet_connection.close()

    run(scenario())


def test_bad_requests_answer_binance_errors(exchange: Exchange) -> None:
    async def scenario() -> None:
        api = await WsApi.open(exchange)
        answer = await api.call("order.explode", request_id=3)
        assert answer["id"] == 3
        assert_error(answer, 400, -1020, "This operation is not supported.")
        assert_error(await api.send_raw("{not json"), 400, -1135, "Invalid JSON Request")
        missing = await api.send_raw('{"id": 4, "params": {}}')
        assert missing["id"] == 4
        assert_error(missing, 400, -1102, mandatory("method"))
        # The connection is still usable after every refusal.
        assert assert_ok(await api.call("ping", request_id=5), 5) == {}
        await api.close()

    run(scenario())


def test_exchange_info_lists_the_markets(exchange: Exchange) -> None:
    async def scenario() -> None:
        api = await WsApi.open(exchange)
        info = assert_ok(await api.call("exchangeInfo", {"symbols": ["BTCUSDT"]}, 1), 1)
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
        symbol = info["symbols"][0]
        assert (symbol["baseAsset"], symbol["quoteAsset"]) == ("BTC", "USDT")
        everything = assert_ok(await api.call("exchangeInfo", request_id=2), 2)
        assert "ETHUSDT" in [s["symbol"] for s in everything["symbols"]]
        unknown = await api.call("exchangeInfo", {"symbol": "NOPEUSDT"}, 3)
        assert_error(unknown, 400, -1121, "Invalid symbol.")
        await api.close()

    run(scenario())


def test_signature_errors(exchange: Exchange) -> None:
    ann = exchange.ann
    method = "userDataStream.subscribe.signature"

    async def scenario() -> None:
        api = await WsApi.open(exchange)
        wrong = sign(ann, {})
        wrong["signature"] = "0" * 64
        assert_error(await api.call(method, wrong), 400, -1022,
                     "Signature for this request is not valid.")  # fmt: skip
        tampered = sign(ann, {})
        tampered["timestamp"] += 1  # signed one value, sent another
        assert_error(await api.call(method, tampered), 400, -1022,
                     "Signature for this request is not valid.")  # fmt: skip
        stale = sign(ann, {"timestamp": 1_600_000_000_000})
        assert_error(await api.call(method, stale), 400, -1021,
                     "Timestamp for this request is outside of the recvWindow.")  # fmt: skip
        unknown = sign(ann, {"apiKey": "f" * 64})
        assert_error(await api.call(method, unknown), 401, -2015,
                     "Invalid API-key, IP, or permissions for action.")  # fmt: skip
        unsigned = {"apiKey": ann.key, "timestamp": 1}
        assert_error(await api.call(method, unsigned), 400, -1102, mandatory("signature"))
        # The same signature, made as Binance's docs make it, is accepted.
        assert assert_ok(await api.call(method, sign(ann, {}), 9), 9) == {"subscriptionId": 0}
        await api.close()

    run(scenario())


def test_sessions_with_hmac_keys_answer_as_binance(exchange: Exchange) -> None:
    async def scenario() -> None:
        api = await WsApi.open(exchange)
        status = assert_ok(await api.call("session.status", request_id=1), 1)
        assert list(status) == ["apiKey", "authorizedSince", "connectedSince",
                                "returnRateLimits", "serverTime", "userDataStream"]  # fmt: skip
        assert status["apiKey"] is None and status["authorizedSince"] is None
        assert status["userDataStream"] is False
        logon = await api.call("session.logon", sign(exchange.ann, {}), 2)
        assert_error(logon, 400, -4056, "HMAC_SHA256 API key is not supported.")
        subscribe = await api.call("userDataStream.subscribe", request_id=3)
        assert_error(subscribe, 401, -2015, "Invalid API-key, IP, or permissions for action.")
        logout = assert_ok(await api.call("session.logout", request_id=4), 4)
        assert logout["apiKey"] is None
        await api.close()

    run(scenario())


def test_subscriptions_are_numbered_listed_and_ended(exchange: Exchange) -> None:
    method = "userDataStream.subscribe.signature"

    async def scenario() -> None:
        api = await WsApi.open(exchange)
        ann = assert_ok(await api.call(method, sign(exchange.ann, {}), 1), 1)
        bob = assert_ok(await api.call(method, sign(exchange.bob, {}), 2), 2)
        assert (ann, bob) == ({"subscriptionId": 0}, {"subscriptionId": 1})
        again = await api.call(method, sign(exchange.ann, {}), 3)
        # One subscription per account per connection.
        assert_error(again, 400, -2035, "User Data Stream subscription already active.")
        listed = assert_ok(await api.call("session.subscriptions", request_id=4), 4)
        assert listed == [{"subscriptionId": 0}, {"subscriptionId": 1}]
        status = assert_ok(await api.call("session.status", request_id=5), 5)
        assert status["userDataStream"] is True
        ended = await api.call("userDataStream.unsubscribe", {"subscriptionId": 0}, 6)
        assert assert_ok(ended, 6) == {}
        (terminated,) = api.events
        assert terminated["subscriptionId"] == 0
        assert list(terminated["event"]) == ["e", "E"]
        assert terminated["event"]["e"] == "eventStreamTerminated"
        listed = assert_ok(await api.call("session.subscriptions", request_id=7), 7)
        assert listed == [{"subscriptionId": 1}]
        assert assert_ok(await api.call("userDataStream.unsubscribe", request_id=8), 8) == {}
        assert assert_ok(await api.call("session.subscriptions", request_id=9), 9) == []
        # Numbers are not reused within a connection.
        next_one = assert_ok(await api.call(method, sign(exchange.ann, {}), 10), 10)
        assert next_one == {"subscriptionId": 2}
        await api.close()

    run(scenario())


def test_orders_over_the_websocket_api(exchange: Exchange) -> None:
    """order.place / order.status / openOrders.status / order.cancel / account.status
    answer what the REST API answers (the same operations), signed per request."""
    ann = exchange.ann

    async def scenario() -> None:
        api = await WsApi.open(exchange)
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                 "price": "20000", "quantity": "0.02", "newClientOrderId": "ws-1"}  # fmt: skip
        placed = await api.call("order.place", sign(ann, order), 1)
        assert placed["status"] == 200, placed
        limits = placed["rateLimits"]
        assert [(r["rateLimitType"], r["interval"]) for r in limits] == [
            ("ORDERS", "SECOND"),
            ("ORDERS", "DAY"),
            ("REQUEST_WEIGHT", "MINUTE"),
        ]
        assert [r["count"] for r in limits[:2]] == [1, 1]
        result = placed["result"]
        assert list(result)[:6] == ["symbol", "orderId", "orderListId", "clientOrderId",
                                    "transactTime", "price"]  # fmt: skip
        assert (result["symbol"], result["clientOrderId"], result["status"]) == (
            "BTCUSDT",
            "ws-1",
            "NEW",
        )
        assert (result["price"], result["origQty"]) == ("20000.00000000", "0.02000000")
        order_id = result["orderId"]
        status = assert_ok(
            await api.call(
                "order.status", sign(ann, {"symbol": "BTCUSDT", "orderId": order_id}), 2
            ),
            2,
        )
        assert (status["orderId"], status["status"], status["isWorking"]) == (order_id, "NEW", True)
        opened = assert_ok(await api.call("openOrders.status", sign(ann, {}), 3), 3)
        assert [o["orderId"] for o in opened] == [order_id]
        # Lowered in place (keepPriority): the order now locks 200 USDT.
        amended = assert_ok(await api.call("order.amend.keepPriority", sign(ann, {
            "symbol": "BTCUSDT", "orderId": order_id, "newQty": "0.01"}), 40), 40)  # fmt: skip
        assert amended["amendedOrder"]["qty"] == "0.01000000"
        account = assert_ok(await api.call("account.status", sign(ann, {}), 4), 4)
        usdt = next(b for b in account["balances"] if b["asset"] == "USDT")
        assert usdt == {"asset": "USDT", "free": "999800.00000000", "locked": "200.00000000"}
        canceled = assert_ok(
            await api.call(
                "order.cancel", sign(ann, {"symbol": "BTCUSDT", "origClientOrderId": "ws-1"}), 5
            ),
            5,
        )
        assert (canceled["orderId"], canceled["status"]) == (order_id, "CANCELED")
        assert assert_ok(await api.call("openOrders.status", sign(ann, {}), 6), 6) == []
        counts = assert_ok(await api.call("account.rateLimits.orders", sign(ann, {}), 7), 7)
        assert [c["count"] for c in counts] == [1, 1]
        # Refusals are the REST API's triples.
        too_big = {**order, "quantity": "60", "newClientOrderId": "ws-2"}  # 1.2 M USDT
        poor = await api.call("order.place", sign(ann, too_big), 8)
        assert_error(poor, 400, -2010, "Account has insufficient balance for requested action.")
        missing = await api.call("order.status", sign(ann, {"symbol": "BTCUSDT",
                                                            "orderId": 999999}), 9)  # fmt: skip
        assert_error(missing, 400, -2013, "Order does not exist.")
        await api.close()

    run(scenario())


def test_a_stopping_server_closes_websocket_api_connections(exchange: Exchange) -> None:
    """SIGTERM with a subscribed connection open: the server exits cleanly (0) and the
    connection is closed, not left to hang the shutdown."""

    async def scenario() -> None:
        api = await WsApi.open(exchange)
        subscribe = await api.call("userDataStream.subscribe.signature", sign(exchange.ann, {}))
        assert subscribe["result"] == {"subscriptionId": 0}
        code = await asyncio.to_thread(exchange.server.stop)
        assert code == 0, exchange.server.output()[-2000:]
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:  # whatever is still buffered, then the close
                await asyncio.wait_for(api.socket.recv(), WAIT)

    run(scenario())
