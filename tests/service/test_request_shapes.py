"""What a request must look like, over real HTTP on both stores: JSON bodies are sent as
``application/json`` (415 otherwise, on every endpoint that takes one, the order-entry
fast lane included), signed API-key requests keep their Binance forms, and client order
ids use Binance's alphabet, in a path too (a ``%2F`` once answered an empty 307)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx
import pytest

from service.conftest import Backend, Server
from service.test_sessions import create_user
from service.test_trading import Trader

NOT_JSON: list[tuple[str | None, bytes]] = [
    ("text/plain", b"{}"),
    ("application/xml", b"<order><market>BTC-USDT</market></order>"),
    ("application/x-www-form-urlencoded", b"market=BTC-USDT&side=BUY"),
    ("application/merge-patch+json", b"{}"),
    ("application/json; charset=iso-8859-1", b"{}"),
    (None, b"{}"),
]


@pytest.fixture
def traders(backend: Backend, servers: list[Server]) -> tuple[Trader, Trader, Server]:
    """Two verified users on a ``--dev`` server with rate limits off: a test sends some
    hundred requests to the sign-in endpoints, past their per-IP budget."""
    for email in ("ann@example.com", "bob@example.com"):
        create_user(backend.data, email, backend.url if backend.name == "postgres" else None)
    config = backend.data.parent / "no-limits.toml"
    config.write_text("[rate_limits]\nenabled = false\n")
    server = Server(backend.data, backend.env, "--dev", "--config", str(config))
    servers.append(server)
    server.wait_ready()
    ann, bob = Trader(server.url, "ann@example.com"), Trader(server.url, "bob@example.com")
    ann.fund("USDT", "100000")
    return ann, bob, server


def _json_operations(server: Server) -> list[tuple[str, str]]:
    """(method, path) of every operation /openapi.json documents with a JSON body, its
    path parameters filled in."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    return [
        (method.upper(), path.replace("{order_id}", "1"))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        # Binance's dialect documents form bodies (docs/binance.md): not JSON ones
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


def test_bodies_that_are_not_json_are_refused_with_415_everywhere(
    backend: Backend, traders: tuple[Trader, Trader, Server]
) -> None:
    ann, _, server = traders
    operations = _json_operations(server)
    assert ("POST", "/api/v1/orders") in operations  # the fast lane
    assert ("POST", "/api/v1/auth/register") in operations and len(operations) >= 12
    for method, path in operations:
        for content_type, body in NOT_JSON:
            headers = {**ann.http.headers}
            headers.pop("content-type", None)
            if content_type is not None:
                headers["content-type"] = content_type
            answer = httpx.request(method, server.url + path, headers=headers, content=body)
            where = (method, path, content_type, answer.text)
            assert answer.status_code == 415, where
            assert answer.headers["content-type"] == "application/json", where
            assert answer.json()["code"] == "UNSUPPORTED_MEDIA_TYPE", where
            assert "application/json" in answer.json()["message"] or (
                "UTF-8" in answer.json()["message"]
            ), where
    # Valid JSON is refused too when it is not declared as JSON (it used to be applied).
    valid = {
        "/orders": b'{"market": "BTC-USDT", "side": "BUY", "price": "100", "quantity": "1"}',
        "/dev/faucet": b'{"asset": "USDT", "amount": "5"}',
    }
    for path, body in valid.items():
        for content_type in ("text/plain", "application/xml"):
            answer = ann.http.post(path, headers={"content-type": content_type}, content=body)
            assert (answer.status_code, answer.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    # Too large and not JSON: the size is refused first, on the fast lane as elsewhere.
    for path in ("/orders", "/dev/faucet"):
        answer = ann.http.post(path, headers={"content-type": "text/plain"}, content=b"x" * 70_000)
        assert (answer.status_code, answer.json()["code"]) == (413, "PAYLOAD_TOO_LARGE"), path
    # Nothing was applied: no order, the faucet's balance as it was, no new user.
    assert ann.http.get("/orders").json() == []
    assert ann.balances() == {"USDT": ("100000", "0")}
    assert backend.rows("select count(*) from users") == [(2,)]
    # JSON with its UTF-8 charset, in any letter case, is JSON.
    charset = ann.http.post("/orders", headers={"content-type": "Application/JSON; charset=UTF-8"},
                            content=b'{"market": "BTC-USDT", "side": "BUY", "price": "100", '
                            b'"quantity": "1"}')  # fmt: skip
    assert charset.status_code == 201, charset.text


def _signed(key: dict[str, str], payload: str) -> str:
    return hmac.new(key["secret"].encode(), payload.encode(), hashlib.sha256).hexdigest()


def test_signed_requests_put_parameters_in_the_query_or_a_form_body_without_json(
    traders: tuple[Trader, Trader, Server],
) -> None:
    """A JSON body is signed with the query string (its parameters there); an endpoint
    without a body also takes them as a form body, as Binance clients send a DELETE."""
    ann, _, server = traders
    created = ann.http.post("/account/api-keys", json={"label": "bot", "permissions": ["trade"]})
    assert created.status_code == 201, created.text
    key = created.json()
    orders = f"{server.url}/api/v1/orders"
    body = '{"market": "BTC-USDT", "side": "BUY", "price": "100", "quantity": "1"}'
    query = f"timestamp={int(time.time() * 1000)}"
    placed = httpx.post(f"{orders}?{query}&signature={_signed(key, query + body)}", content=body,
                        headers={"X-MBX-APIKEY": key["key_id"],
                                 "content-type": "application/json"})  # fmt: skip
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["order"]["order_id"]

    form = f"timestamp={int(time.time() * 1000)}"
    cancelled = httpx.request(
        "DELETE", f"{orders}/{order_id}", content=f"{form}&signature={_signed(key, form)}",
        headers={"X-MBX-APIKEY": key["key_id"],
                 "content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELED"

    # An order as a form body is not an order: refused before the signature is checked.
    order_form = f"market=BTC-USDT&side=BUY&price=100&quantity=1&{form}"
    as_form = httpx.post(orders, content=f"{order_form}&signature={_signed(key, order_form)}",
                         headers={"X-MBX-APIKEY": key["key_id"],
                                  "content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (as_form.status_code, as_form.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert ann.http.get("/orders").json() == []


def _by_client_id(trader: Trader, method: str, raw_id: str) -> httpx.Response:
    # The id goes into the path exactly as written here (%2F stays %2F on the wire).
    return trader.http.request(method, f"/orders/by-client-id/{raw_id}")


def test_client_order_ids_use_binances_alphabet_in_bodies_and_paths(
    traders: tuple[Trader, Trader, Server],
) -> None:
    ann, _, _ = traders
    order: dict[str, Any] = {"side": "BUY", "price": "100", "quantity": "1"}
    slashed = ann.place(**order, client_order_id="grid/7:a.b_c-D")
    assert slashed.status_code == 201, slashed.text
    found = _by_client_id(ann, "GET", "grid%2F7:a.b_c-D")
    assert found.status_code == 200, found.text
    assert found.json()["client_order_id"] == "grid/7:a.b_c-D"
    assert _by_client_id(ann, "GET", "grid/7:a.b_c-D").json() == found.json()  # '/' unescaped
    cancelled = _by_client_id(ann, "DELETE", "grid%2F7:a.b_c-D")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "CANCELED")

    for method in ("GET", "DELETE"):
        for raw_id in ("%2F", "a%2F", "%2Fb"):  # valid ids nobody used: 404, never a 307
            answer = _by_client_id(ann, method, raw_id)
            assert answer.status_code == 404, (raw_id, answer.status_code, answer.headers)
            assert answer.json()["code"] == "UNKNOWN_ORDER", raw_id
        for raw_id in ("a%20b", "%C3%A9", "x" * 65, "a%00", ""):  # off the alphabet, or length
            answer = _by_client_id(ann, method, raw_id)
            assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_REQUEST"), raw_id
            assert "client_order_id" in answer.json()["message"], raw_id
    for bad in ("a b", "é", "x" * 65, "tab\t", "a\x00"):
        refused = ann.place(**order, client_order_id=bad)
        assert (refused.status_code, refused.json()["code"]) == (400, "INVALID_REQUEST"), bad
    assert ann.http.get("/orders").json() == []
    # No path redirects: a trailing slash is a path that does not exist.
    for path in ("/orders/", "/balances/"):
        answer = ann.http.get(path)
        assert answer.status_code == 404, (path, answer.status_code, answer.headers)
        assert answer.json()["code"] == "NOT_FOUND", path


def test_a_method_a_path_does_not_take_is_405_with_allow(
    traders: tuple[Trader, Trader, Server],
) -> None:
    """RFC 9110 15.5.6: a 405 lists the methods the path takes (schemathesis checks it),
    in the common error body."""
    _, _, server = traders
    for method, path, allowed in (
        ("PUT", "/api/v1/time", {"GET"}),
        ("HEAD", "/api/v1/time", {"GET"}),
        ("PATCH", "/api/v1/orders", {"GET", "POST", "DELETE"}),
        ("QUERY", "/api/v1/markets", {"GET"}),
    ):
        answer = httpx.request(method, f"{server.url}{path}")
        assert answer.status_code == 405, (method, path)
        assert method == "HEAD" or answer.json()["code"] == "METHOD_NOT_ALLOWED"
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed, path
