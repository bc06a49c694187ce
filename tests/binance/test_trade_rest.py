"""Binance's signed spot REST endpoints on a real server (docs/binance.md, "Signed REST"):
each endpoint's answer against Binance's documented example (keys in order, value
types, decimals as 8-place strings), the signature and time errors, and every error
triple the dialect maps, over real HTTP."""

from __future__ import annotations

from typing import Any

from binance.conftest import Exchange
from binance.signed import Signed

PLACED_KEYS = ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime", "price",
               "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status",
               "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode"]  # fmt: skip
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
