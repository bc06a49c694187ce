"""Binance's signed spot REST endpoints on a real server (docs/binance.md, "Signed REST"):
each endpoint's answer against Binance's documented example (keys in order, value
types, decimals as 8-place strings), the signature and time errors, and every error
triple the dialect maps, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from binance_api.conftest import Account, Exchange
from binance_api.signed import Signed, now_ms
from service.conftest import Backend
from service.test_standing import admin

PLACED_KEYS = ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime", "price",
               "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
               "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode"]  # fmt: skip
TOO_MANY = "Too many requests queued."  # errors.md, -1003
INSUFFICIENT = "Account has insufficient balance for requested action."
FILL_KEYS = ["price", "qty", "commission", "commissionAsset", "tradeId"]
QUERIED_KEYS = ["symbol", "orderId", "orderListId", "clientOrderId", "price", "origQty",
                "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                "stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime",
                "origQuoteOrderQty", "selfTradePreventionMode"]  # fmt: skip
CANCELED_KEYS = ["symbol", "origClientOrderId", "orderId", "orderListId", "clientOrderId",
                 "transactTime", "price", "origQty", "executedQty", "origQuoteOrderQty",
                 "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                 "selfTradePreventionMode"]  # fmt: skip


def limit(side: str, price: str, qty: str = "0.01000", **extra: Any) -> dict[str, Any]:
    return {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
            "quantity": qty, "price": price, **extra}  # fmt: skip


def test_place_query_cancel_answer_as_binance_documents(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    placed = ann.ok("POST", "/api/v3/order", limit("BUY", "50000", newClientOrderId="myOrder1"))
    assert list(placed) == [*PLACED_KEYS, "fills"]
    assert placed["symbol"] == "BTCUSDT" and placed["orderListId"] == -1
    assert placed["clientOrderId"] == "myOrder1"
    assert (placed["price"], placed["origQty"], placed["executedQty"]) == (
        "50000.00000000",
        "0.01000000",
        "0.00000000",
    )
    assert (placed["status"], placed["fills"]) == ("NEW", [])
    assert placed["workingTime"] == placed["transactTime"]
    order_id = placed["orderId"]

    queried = ann.ok("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": order_id})
    assert list(queried) == QUERIED_KEYS
    assert queried["isWorking"] is True and queried["stopPrice"] == "0.00000000"
    assert (
        ann.ok("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "myOrder1"})
        == queried
    )

    opened = ann.ok("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert [o["orderId"] for o in opened] == [order_id]

    cancelled = ann.ok(
        "DELETE",
        "/api/v3/order",
        {"symbol": "BTCUSDT", "orderId": order_id, "newClientOrderId": "cancelMyOrder1"},
    )
    assert list(cancelled) == CANCELED_KEYS
    assert (cancelled["origClientOrderId"], cancelled["clientOrderId"]) == (
        "myOrder1",
        "cancelMyOrder1",
    )
    assert cancelled["status"] == "CANCELED"
    assert ann.ok("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}) == []


ACCOUNT_KEYS = ["makerCommission", "takerCommission", "buyerCommission", "sellerCommission",
                "commissionRates", "canTrade", "canWithdraw", "canDeposit", "brokered",
                "requireSelfTradePrevention", "preventSor", "updateTime", "accountType",
                "balances", "permissions", "uid"]  # fmt: skip
TRADE_KEYS = ["symbol", "id", "orderId", "orderListId", "price", "qty", "quoteQty",
              "commission", "commissionAsset", "time", "isBuyer", "isMaker",
              "isBestMatch"]  # fmt: skip


def test_account_trades_and_all_orders(exchange: Exchange) -> None:
    ann, bob = Signed(exchange, exchange.ann), Signed(exchange, exchange.bob)
    account = ann.ok("GET", "/api/v3/account")
    assert list(account) == ACCOUNT_KEYS
    assert (account["makerCommission"], account["commissionRates"]) == (
        10, {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
             "seller": "0.00000000"})  # fmt: skip
    assert (account["accountType"], account["permissions"]) == ("SPOT", ["SPOT"])
    assert (account["canTrade"], account["canWithdraw"]) == (True, False)
    btc = next(b for b in account["balances"] if b["asset"] == "BTC")
    assert btc == {"asset": "BTC", "free": "10.00000000", "locked": "0.00000000"}
    assert any(b["free"] == "0.00000000" for b in account["balances"])
    nonzero = ann.ok("GET", "/api/v3/account", {"omitZeroBalances": "true"})["balances"]
    assert [b["asset"] for b in nonzero] == ["BTC", "USDT"]

    rested = bob.ok("POST", "/api/v3/order", limit("SELL", "60000", "0.10000"))
    market = ann.ok(
        "POST",
        "/api/v3/order",
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.02"},
    )
    assert market["status"] == "FILLED" and market["timeInForce"] == "GTC"
    assert market["fills"] == [{"price": "60000.00000000", "qty": "0.02000000",
                                "commission": "0.00002000", "commissionAsset": "BTC",
                                "tradeId": market["fills"][0]["tradeId"]}]  # fmt: skip
    assert list(market["fills"][0]) == FILL_KEYS
    assert market["cummulativeQuoteQty"] == "1200.00000000"
    by_quote = ann.ok(
        "POST",
        "/api/v3/order",
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "600"},
    )
    assert (by_quote["origQuoteOrderQty"], by_quote["executedQty"]) == (
        "600.00000000",
        "0.01000000",
    )
    ack = ann.ok("POST", "/api/v3/order", {**limit("BUY", "1000"), "newOrderRespType": "ACK"})
    assert list(ack) == ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime"]
    assert len(ack["clientOrderId"]) == 22  # generated like Binance's
    result = ann.ok("POST", "/api/v3/order",
                    {**limit("BUY", "1000"), "newOrderRespType": "RESULT"})  # fmt: skip
    assert list(result) == PLACED_KEYS

    trades = ann.ok("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"})
    assert [list(t) for t in trades] == [TRADE_KEYS, TRADE_KEYS]
    assert [(t["orderId"], t["qty"], t["isBuyer"], t["isMaker"]) for t in trades] == [
        (market["orderId"], "0.02000000", True, False),
        (by_quote["orderId"], "0.01000000", True, False)]  # fmt: skip
    assert trades[0]["quoteQty"] == "1200.00000000"
    later = ann.ok("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "fromId": trades[1]["id"]})
    assert [t["id"] for t in later] == [trades[1]["id"]]
    makers = bob.ok("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "orderId": rested["orderId"]})
    assert [(t["isBuyer"], t["isMaker"], t["commissionAsset"]) for t in makers] == [
        (False, True, "USDT"),
        (False, True, "USDT"),
    ]

    everything = ann.ok("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"})
    ids = [market["orderId"], by_quote["orderId"], ack["orderId"], result["orderId"]]
    assert [o["orderId"] for o in everything] == ids and list(everything[0]) == QUERIED_KEYS
    assert [o["status"] for o in everything] == ["FILLED", "FILLED", "NEW", "NEW"]
    since = ann.ok("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT", "orderId": ack["orderId"]})
    assert [o["orderId"] for o in since] == ids[2:]
    assert [
        o["orderId"] for o in ann.ok("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT", "limit": 1})
    ] == ids[3:]


def test_test_order_stop_orders_cancel_all_and_order_count(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    assert ann.ok("POST", "/api/v3/order/test", limit("BUY", "50000")) == {}
    rates = ann.ok("POST", "/api/v3/order/test",
                   {**limit("BUY", "50000"), "computeCommissionRates": "true"})  # fmt: skip
    assert rates["standardCommissionForOrder"] == {"maker": "0.00100000", "taker": "0.00100000"}
    ann.refused("POST", "/api/v3/order/test", limit("BUY", "50000.001"), 400, -1013,
                "Filter failure: PRICE_FILTER")  # fmt: skip
    assert ann.ok("GET", "/api/v3/openOrders") == []  # the test placed nothing

    stop = ann.ok(
        "POST",
        "/api/v3/order",
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_LOSS_LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "40000",
            "stopPrice": "41000",
            "icebergQty": "0.005",
        },
    )
    assert list(stop) == ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime"]
    queried = ann.ok("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": stop["orderId"]})
    assert (queried["status"], queried["isWorking"], queried["workingTime"]) == ("NEW", False, -1)
    assert (queried["stopPrice"], queried["icebergQty"]) == ("41000.00000000", "0.00500000")
    ann.ok("POST", "/api/v3/order", limit("BUY", "30000"))

    answer = ann.call("POST", "/api/v3/order", limit("BUY", "30000"))
    assert answer.headers["X-MBX-ORDER-COUNT-10S"] == "3"
    assert answer.headers["X-MBX-ORDER-COUNT-1D"] == "3"
    assert int(answer.headers["X-MBX-USED-WEIGHT-1M"]) > 0
    counts = ann.ok("GET", "/api/v3/rateLimit/order")
    assert [(c["interval"], c["intervalNum"], c["count"]) for c in counts] == [
        ("SECOND", 10, 3),
        ("DAY", 1, 3),
    ]

    cancelled = ann.ok("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert len(cancelled) == 3 and {o["status"] for o in cancelled} == {"CANCELED"}
    assert list(cancelled[0])[:2] == ["symbol", "origClientOrderId"]
    ann.refused("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, 400, -2011,
                "Unknown order sent.")  # fmt: skip


def test_cancel_replace_and_amend(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    first = ann.ok("POST", "/api/v3/order", limit("BUY", "50000", "0.05"))
    replaced = ann.ok("POST", "/api/v3/order/cancelReplace", {
        **limit("BUY", "51000"), "cancelReplaceMode": "STOP_ON_FAILURE",
        "cancelOrderId": first["orderId"]})  # fmt: skip
    assert (replaced["cancelResult"], replaced["newOrderResult"]) == ("SUCCESS", "SUCCESS")
    assert replaced["cancelResponse"]["status"] == "CANCELED"
    assert replaced["newOrderResponse"]["price"] == "51000.00000000"
    new_id = replaced["newOrderResponse"]["orderId"]

    failed = ann.call("POST", "/api/v3/order/cancelReplace", {
        **limit("BUY", "52000"), "cancelReplaceMode": "STOP_ON_FAILURE",
        "cancelOrderId": first["orderId"]})  # fmt: skip
    assert failed.status_code == 400 and failed.json() == {
        "code": -2022, "msg": "Order cancel-replace failed.",
        "data": {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                 "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
                 "newOrderResponse": None}}  # fmt: skip
    allowed = ann.call("POST", "/api/v3/order/cancelReplace", {
        **limit("BUY", "52000"), "cancelReplaceMode": "ALLOW_FAILURE",
        "cancelOrderId": first["orderId"]})  # fmt: skip
    assert allowed.status_code == 409 and allowed.json()["code"] == -2021
    assert allowed.json()["data"]["newOrderResult"] == "SUCCESS"
    broke = ann.call("POST", "/api/v3/order/cancelReplace", {
        **limit("BUY", "52000", "100"), "cancelReplaceMode": "ALLOW_FAILURE",
        "cancelOrderId": new_id})  # fmt: skip
    assert broke.status_code == 409 and broke.json()["data"] == {
        "cancelResult": "SUCCESS", "newOrderResult": "FAILURE",
        "cancelResponse": broke.json()["data"]["cancelResponse"],
        "newOrderResponse": {"code": -2010, "msg": INSUFFICIENT}}  # fmt: skip

    resting = ann.ok("POST", "/api/v3/order", limit("BUY", "40000", "0.05"))
    amended = ann.ok(
        "PUT",
        "/api/v3/order/amend/keepPriority",
        {"symbol": "BTCUSDT", "orderId": resting["orderId"], "newQty": "0.03"},
    )
    assert list(amended) == ["transactTime", "executionId", "amendedOrder"]
    assert (amended["amendedOrder"]["qty"], amended["amendedOrder"]["status"]) == (
        "0.03000000",
        "NEW",
    )
    ann.refused("PUT", "/api/v3/order/amend/keepPriority",
                {"symbol": "BTCUSDT", "orderId": resting["orderId"], "newQty": "0.04"},
                400, -2038, "Order amend (quantity increase) is not supported.")  # fmt: skip
    ann.refused("PUT", "/api/v3/order/amend/keepPriority",
                {"symbol": "BTCUSDT", "orderId": resting["orderId"], "newQty": "0.03"},
                400, -2038, "The requested action would change no state; rejecting")  # fmt: skip
    queried = ann.ok("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": resting["orderId"]})
    assert queried["origQty"] == "0.03000000"


def test_signature_key_and_time_errors(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    path, params = "/api/v3/account", {}
    bad_format = (401, -2014, "API-key format invalid.")
    rejected = (401, -2015, "Invalid API-key, IP, or permissions for action.")
    ann.refused("GET", path, params, *bad_format, key="")
    ann.refused("GET", path, params, *bad_format, key="not a key!")
    ann.refused("GET", path, params, *rejected, key="a" * 64)
    ann.refused("GET", path, params, 400, -1102,
                "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
                timestamp=-1)  # fmt: skip
    ann.refused("GET", path, params, 400, -1102,
                "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
                signed=False)  # fmt: skip
    ann.refused("GET", path, params, 400, -1022, "Signature for this request is not valid.",
                secret="0" * 64)  # fmt: skip
    ann.refused("GET", path, params, 400, -1021,
                "Timestamp for this request is outside of the recvWindow.",
                timestamp=now_ms() - 10_000)  # fmt: skip
    ann.refused("GET", path, params, 400, -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
                timestamp=now_ms() + 5_000)  # fmt: skip
    ann.refused(
        "GET",
        path,
        {"recvWindow": 70000},
        400,
        -1102,
        "'recvWindow' contains unexpected value. Cannot be greater than 60000.",
    )
    # recvWindow takes up to three decimal places (rest-api.md: "e.g., 6000.346")
    assert "balances" in ann.ok("GET", path, {"recvWindow": "6000.346"})
    too_large = "'recvWindow' contains unexpected value. Cannot be greater than 60000."
    ann.refused("GET", path, {"recvWindow": "60000.5"}, 400, -1102, too_large)
    malformed = "Mandatory parameter 'recvWindow' was not sent, was empty/null, or malformed."
    ann.refused("GET", path, {"recvWindow": "5000.1234"}, 400, -1102, malformed)
    # the signature covers the query string and the form body as sent, mixed
    query_part = "symbol=BTCUSDT&side=BUY&type=LIMIT"
    body_part = f"timeInForce=GTC&quantity=0.01&price=50000&timestamp={now_ms()}"
    signature = ann.sign(query_part + body_part)
    form = {"X-MBX-APIKEY": exchange.ann.key, "Content-Type": "application/x-www-form-urlencoded"}
    mixed = ann.http.post(f"/api/v3/order?{query_part}", headers=form,
                          content=f"{body_part}&signature={signature}")  # fmt: skip
    assert mixed.status_code == 200 and mixed.json()["status"] == "NEW"

    created = httpx.post(f"{exchange.url}/api/v1/account/api-keys", headers=exchange.ann.session,
                         json={"label": "reader", "permissions": ["read"]})  # fmt: skip
    assert created.status_code == 201, created.text
    reader = Signed(exchange, Account(exchange.ann.email, created.json()["key_id"],
                                      created.json()["secret"], exchange.ann.session))  # fmt: skip
    assert reader.ok("GET", path)["canTrade"] is False
    reader.refused("POST", "/api/v3/order", limit("BUY", "50000"), *rejected)
    reader.refused("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, *rejected)


def test_every_order_refusal_is_binances_triple_and_changes_nothing(exchange: Exchange) -> None:
    ann, bob = Signed(exchange, exchange.ann), Signed(exchange, exchange.bob)
    bob.ok("POST", "/api/v3/order", limit("SELL", "60000", "0.01"))
    ann.ok("POST", "/api/v3/order", limit("BUY", "60000", "0.005"))  # last price 60000
    bob.ok("POST", "/api/v3/order", limit("SELL", "61000", "0.01"))
    ann.ok("POST", "/api/v3/order", limit("BUY", "50000", newClientOrderId="taken"))
    before = ann.ok("GET", "/api/v3/account")["balances"]
    mandatory = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
    market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"side": "BUY", "type": "LIMIT"}, -1102, mandatory.format("symbol")),
        ({**limit("BUY", "50000"), "symbol": "NOPE"}, -1121, "Invalid symbol."),
        (limit("HOLD", "50000"), -1117, "Invalid side."),
        ({**limit("BUY", "50000"), "type": "OCO"}, -1116, "Invalid orderType."),
        ({**limit("BUY", "50000"), "timeInForce": "GTX"}, -1115, "Invalid timeInForce."),
        ({**limit("BUY", "50000"), "price": ""}, -1102, mandatory.format("price")),
        ({**limit("BUY", "50000"), "quantity": "1e3"}, -1100,
         "Illegal characters found in parameter 'quantity'; legal range is "
         "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
        ({**market, "quantity": "0.01", "price": "50000"}, -1106,
         "Parameter 'price' sent when not required."),
        (market, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were "
         "empty/null!"),
        (limit("BUY", "50000.001"), -1013, "Filter failure: PRICE_FILTER"),
        (limit("BUY", "50000", "0.000001"), -1013, "Filter failure: LOT_SIZE"),
        (limit("BUY", "50000", "9001"), -1013, "Filter failure: LOT_SIZE"),
        ({**market, "quantity": "9001"}, -1013, "Filter failure: MARKET_LOT_SIZE"),
        (limit("BUY", "100", "0.001"), -1013, "Filter failure: MIN_NOTIONAL"),
        (limit("BUY", "50000", "1", icebergQty="0.00001"), -1013,
         "Filter failure: ICEBERG_PARTS"),
        (limit("BUY", "50000", "0.01", icebergQty="0.01"), -2010, "IcebergQty exceeds QTY."),
        (limit("BUY", "50000", "100"), -2010, INSUFFICIENT),
        ({**limit("BUY", "61000"), "type": "LIMIT_MAKER", "timeInForce": ""}, -2010,
         "Order would immediately match and take."),
        ({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC",
          "quantity": "0.01", "price": "61000", "stopPrice": "61000"}, -2010,
         "Order would trigger immediately."),
        (limit("BUY", "50000", newClientOrderId="taken"), -2010, "Duplicate order sent."),
        (limit("BUY", "50000", selfTradePreventionMode="TRANSFER"), -1130,
         "Data sent for parameter 'selfTradePreventionMode' is not valid."),
        (limit("BUY", "50000", "0.01", icebergQty="0.005", timeInForce="IOC"), -1014,
         "Unsupported order combination."),
    ]  # fmt: skip
    for params, code, msg in cases:
        answer = ann.call("POST", "/api/v3/order", params)
        assert (answer.status_code, answer.json()) == (400, {"code": code, "msg": msg}), params
        assert "X-MBX-USED-WEIGHT-1M" in answer.headers
    assert ann.ok("GET", "/api/v3/account")["balances"] == before

    unknown = {"symbol": "BTCUSDT", "orderId": 999_999}
    ann.refused("DELETE", "/api/v3/order", unknown, 400, -2011, "Unknown order sent.")
    ann.refused("GET", "/api/v3/order", unknown, 400, -2013, "Order does not exist.")
    ann.refused("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "nobody"},
                400, -2013, "Order does not exist.")  # fmt: skip
    resting = ann.ok("POST", "/api/v3/order", limit("BUY", "40000", newClientOrderId="mine1"))
    mismatched = {"symbol": "BTCUSDT", "orderId": resting["orderId"], "origClientOrderId": "x"}
    ann.refused("GET", "/api/v3/order", mismatched,
                400, -2039, "Client order ID is not correct for this order ID.")  # fmt: skip
    ann.refused(
        "DELETE",
        "/api/v3/order",
        {"symbol": "BTCUSDT"},
        400,
        -1102,
        "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
    )
    ann.refused("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "taken",
                                            "cancelRestrictions": "ONLY_SOME"},
                400, -1145, "Invalid cancelRestrictions")  # fmt: skip
    ann.refused("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "taken",
                                            "cancelRestrictions": "ONLY_PARTIALLY_FILLED"},
                400, -2011, "Order was not canceled due to cancel restrictions.")  # fmt: skip
    ann.refused("GET", "/api/v3/order", {"symbol": "ETHUSDT", "origClientOrderId": "taken"},
                400, -2013, "Order does not exist.")  # fmt: skip
    # another user's order is no order at all
    theirs = bob.ok("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})[0]["orderId"]
    ann.refused("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": theirs}, 400,
                -2011, "Unknown order sent.")  # fmt: skip


def test_rate_limit_answers_429_with_retry_after(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    # public endpoints are weighed too, from the same per-IP minute (Binance's weights)
    signed = int(ann.call("GET", "/api/v3/account").headers["X-MBX-USED-WEIGHT-1M"])
    depth = ann.http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 500})
    assert int(depth.headers["X-MBX-USED-WEIGHT-1M"]) in (signed + 25, 25)  # a new minute
    refused = ann.http.get("/api/v3/depth", params={"symbol": "NOPE"})
    assert refused.status_code == 400 and "X-MBX-USED-WEIGHT-1M" in refused.headers
    for _ in range(200):
        answer = ann.call("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
        if answer.status_code != 200:
            break
    assert answer.status_code == 429
    assert answer.json()["code"] == -1003 and int(answer.headers["Retry-After"]) >= 1
    assert int(answer.headers["X-MBX-USED-WEIGHT-1M"]) >= 6


def test_prevented_matches_from_self_trade_prevention(exchange: Exchange) -> None:
    ann = Signed(exchange, exchange.ann)
    maker = ann.ok("POST", "/api/v3/order", limit("SELL", "60000"))
    taker = ann.ok("POST", "/api/v3/order", limit("BUY", "60000"))  # the market's EXPIRE_MAKER
    assert ann.ok("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": maker["orderId"]})[
        "status"] == "EXPIRED_IN_MATCH"  # fmt: skip
    matches = ann.ok("GET", "/api/v3/myPreventedMatches",
                     {"symbol": "BTCUSDT", "orderId": maker["orderId"]})  # fmt: skip
    assert matches == [{
        "symbol": "BTCUSDT", "preventedMatchId": maker["orderId"], "takerOrderId": 0,
        "makerSymbol": "BTCUSDT", "makerOrderId": maker["orderId"], "tradeGroupId": -1,
        "selfTradePreventionMode": "EXPIRE_MAKER", "price": "60000.00000000",
        "makerPreventedQuantity": "0.01000000",
        "transactTime": matches[0]["transactTime"]}]  # fmt: skip
    assert ann.ok("GET", "/api/v3/myPreventedMatches",
                  {"symbol": "BTCUSDT", "orderId": taker["orderId"]}) == []  # fmt: skip
    ann.refused(
        "GET",
        "/api/v3/myPreventedMatches",
        {"symbol": "BTCUSDT"},
        400,
        -1102,
        "Param 'preventedMatchId' or 'orderId' must be sent, but both were empty/null!",
    )


def test_a_spent_ip_budget_answers_in_binances_words(exchange: Exchange) -> None:
    http = httpx.Client(base_url=exchange.url, timeout=30)
    for _ in range(400):  # the per-IP budget: 100 at once, 50 a second
        answer = http.get("/api/v3/ping")
        if answer.status_code != 200:
            break
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    assert answer.json() == {"code": -1003, "msg": TOO_MANY}


def test_a_spent_order_budget_answers_too_many_new_orders(exchange: Exchange) -> None:
    """Mercato's own order-entry budget (50 at once, 10 a second) answers as Binance's
    order count does: 429, -1015 with the declared 10 s limit, and Retry-After."""
    ann = Signed(exchange, exchange.ann)
    for _ in range(200):
        answer = ann.call("POST", "/api/v3/order/test", limit("BUY", "50000"))
        if answer.status_code != 200:
            break
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    assert answer.json() == {
        "code": -1015,
        "msg": "Too many new orders; current limit is 100 orders per 10 SECOND.",
    }
    assert ann.ok("GET", "/api/v3/openOrders") == []  # nothing was placed


def test_a_frozen_account_is_disabled_in_binances_words(
    exchange: Exchange, sqlite_backend: Backend
) -> None:
    created = httpx.post(f"{exchange.url}/api/v1/account/api-keys", headers=exchange.bob.session,
                         json={"label": "later", "permissions": ["read", "trade"]})  # fmt: skip
    assert created.status_code == 201, created.text
    key = Account(exchange.bob.email, created.json()["key_id"], created.json()["secret"], {})
    admin(sqlite_backend, "freeze", exchange.bob.email)
    # a key never used before is read from the store at its first request: frozen at once
    bob = Signed(exchange, key)
    disabled = (400, -2010, "This action is disabled on this account.")
    bob.refused("GET", "/api/v3/account", {}, *disabled)
    bob.refused("POST", "/api/v3/order", limit("SELL", "60000"), *disabled)
