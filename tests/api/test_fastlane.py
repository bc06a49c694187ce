"""The order-entry fast lane answers exactly as the FastAPI stack would: same guards
(per-IP budget, body limit), same exception handlers, and everything it does not
recognise goes to FastAPI. Driven through a real ASGI client, with handlers standing in
for the order functions (which the service tests exercise over real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from mercato.api.errors import ApiError, install_error_handlers
from mercato.api.fastlane import OrderEntryApp
from mercato.api.limits import MAX_BODY_BYTES
from mercato.api.ratelimit import RateLimiter
from mercato.config import RateBudget

JSON = "application/json"


def lane(ip_burst: int = 1000) -> tuple[OrderEntryApp, list[Any]]:
    seen: list[Any] = []
    app = OrderEntryApp()
    install_error_handlers(app)
    app.state.limiter = RateLimiter({"ip": RateBudget(per_second=0.001, burst=ip_burst)})

    async def place(request: Request) -> Response:
        body = await request.body()
        seen.append(("place", body))
        if body == b"bad":
            raise ApiError(400, "INVALID_REQUEST", "not an order")
        if body == b"boom":
            raise RuntimeError("a bug")
        return JSONResponse({"placed": True}, status_code=201)

    async def cancel(request: Request) -> Response:
        seen.append(("cancel", request.path_params["order_id"]))
        return JSONResponse({"cancelled": request.path_params["order_id"]})

    app.place_handler = place
    app.cancel_handler = cancel

    @app.delete("/api/v1/orders/{order_id}")
    async def documented_cancel(order_id: str) -> dict[str, str]:
        return {"served_by": "fastapi", "order_id": order_id}

    @app.get("/api/v1/orders")
    async def open_orders() -> dict[str, str]:
        return {"served_by": "fastapi"}

    return app, seen


async def call(
    app: OrderEntryApp, method: str, path: str, content_type: str | None = JSON, **kwargs: Any
) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, headers=headers, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_order_entry_reaches_the_handlers_with_body_and_order_id() -> None:
    app, seen = lane()
    placed = run(call(app, "POST", "/api/v1/orders", content=b'{"market":"BTC-USDT"}'))
    cancelled = run(call(app, "DELETE", "/api/v1/orders/42"))
    assert (placed.status_code, placed.json()) == (201, {"placed": True})
    assert (cancelled.status_code, cancelled.json()) == (200, {"cancelled": 42})
    assert seen == [("place", b'{"market":"BTC-USDT"}'), ("cancel", 42)]


def test_everything_else_goes_to_fastapi() -> None:
    app, seen = lane()
    too_long = "9" * 20  # past 2^63 - 1: the documented route validates it
    assert run(call(app, "DELETE", f"/api/v1/orders/{too_long}")).json()["served_by"] == "fastapi"
    assert run(call(app, "DELETE", "/api/v1/orders/x1")).json()["served_by"] == "fastapi"
    assert run(call(app, "GET", "/api/v1/orders")).json() == {"served_by": "fastapi"}
    assert seen == []


def test_errors_use_the_applications_handlers() -> None:
    app, _ = lane()
    refused = run(call(app, "POST", "/api/v1/orders", content=b"bad"))
    assert (refused.status_code, refused.json()) == (
        400, {"code": "INVALID_REQUEST", "message": "not an order"}
    )  # fmt: skip
    crashed = run(call(app, "POST", "/api/v1/orders", content=b"boom"))
    assert crashed.status_code == 500
    assert crashed.json()["code"] == "INTERNAL"


def test_bodies_over_the_limit_are_refused_before_the_handler() -> None:
    app, seen = lane()
    declared = run(call(app, "POST", "/api/v1/orders", content=b"x" * (MAX_BODY_BYTES + 1)))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b"y" * 1000

    streamed = run(call(app, "POST", "/api/v1/orders", content=chunks()))
    for answer in (declared, streamed):
        assert (answer.status_code, answer.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert seen == []


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/orders"),
                                              ("DELETE", "/api/v1/orders/7")])  # fmt: skip
def test_the_per_ip_budget_applies(method: str, path: str) -> None:
    app, seen = lane(ip_burst=2)
    answers = [run(call(app, method, path, content=b"{}")) for _ in range(3)]
    assert [a.status_code for a in answers] == [201 if method == "POST" else 200] * 2 + [429]
    assert answers[2].json()["code"] == "RATE_LIMITED"
    assert int(answers[2].headers["retry-after"]) >= 1
    assert len(seen) == 2


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/json; charset=latin-1", None]
)
def test_an_order_body_that_is_not_json_is_refused_before_the_handler(
    content_type: str | None,
) -> None:
    app, seen = lane()
    body = b'{"market":"BTC-USDT"}'
    refused = run(call(app, "POST", "/api/v1/orders", content_type, content=body))
    assert (refused.status_code, refused.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in refused.json()["message"] or "UTF-8" in refused.json()["message"]
    # JSON with the UTF-8 charset, in any case, is JSON; a cancel has no body to check.
    placed = run(
        call(app, "POST", "/api/v1/orders", "Application/JSON; Charset=UTF-8", content=body)
    )
    cancelled = run(call(app, "DELETE", "/api/v1/orders/7", "application/x-www-form-urlencoded",
                         content=b"timestamp=1&signature=00"))  # fmt: skip
    assert (placed.status_code, cancelled.status_code) == (201, 200)
    assert seen == [("place", body), ("cancel", 7)]


def test_a_declared_size_over_the_limit_is_refused_before_the_media_type() -> None:
    """The middleware's order (BodyLimit outside JsonBodies), so both paths answer alike."""
    app, seen = lane()
    huge = b"x" * (MAX_BODY_BYTES + 1)
    refused = run(call(app, "POST", "/api/v1/orders", "text/plain", content=huge))
    assert (refused.status_code, refused.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    assert seen == []
