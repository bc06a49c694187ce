"""A change of a user's standing (freeze, unfreeze, deletion) made by another process, the
operator's CLI or a write straight to the store, reaches every credential of the user
within the 2 s trust window: bearer sessions, refresh, login, API keys and WebSocket
private channels. Over real HTTP and WebSocket, on both stores."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import websockets

from mercato.auth.sessions import LiveSessions
from service.conftest import Backend, Server
from service.test_api_keys import signed_get
from service.test_lockout import without_rate_limits
from service.test_sessions import PASSWORD, bearer, create_user

TRUST_SECONDS = LiveSessions().seconds
EMAIL = "ann@example.com"


def admin(backend: Backend, *args: str) -> None:
    """``mercato admin ARGS`` in a process of its own, on the server's store."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MERCATO_DATA_DIR")}
    env.update({k: v for k, v in backend.env.items() if k == "DATABASE_URL"})
    done = subprocess.run(
        [sys.executable, "-m", "mercato.cli", "admin", *args, "--data-dir", str(backend.data)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def within_trust_window(
    answer: Callable[[], httpx.Response], status: int, code: str | None = None
) -> None:
    """``answer()`` turns into ``status`` (with error ``code``) within the trust window
    (+1 s for a busy machine) of the change just made, and stays so."""

    def arrived() -> bool:
        got = answer()
        return got.status_code == status and (code is None or got.json()["code"] == code)

    changed_at = time.monotonic()
    while not arrived():
        assert time.monotonic() - changed_at <= TRUST_SECONDS + 1, f"no {status} {code} yet"
        time.sleep(0.1)
    assert arrived()


class Ann:
    """A verified, funded user with a session, a trading API key and a refresh token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=f"{url}/api/v1", timeout=30)
        tokens = self.login().json()
        self.access, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        self.http.headers.update(bearer(self.access))
        assert self.http.post("/dev/faucet", json={"asset": "USDT", "amount": "1000"}).is_success
        key = self.http.post("/account/api-keys",
                             json={"label": "bot", "permissions": ["read", "trade"]})  # fmt: skip
        self.key = key.json()

    def login(self) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/auth/login",
                          json={"email": EMAIL, "password": PASSWORD})  # fmt: skip

    def refresh(self) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/auth/refresh",
                          json={"refresh_token": self.refresh_token})  # fmt: skip

    def order(self) -> httpx.Response:
        return self.http.post("/orders", json={"market": "BTC-USDT", "side": "BUY",
                                               "price": "1000", "quantity": "0.01"})  # fmt: skip

    def by_key(self) -> httpx.Response:
        return signed_get(f"{self.url}/api/v1/account/me", self.key)


def _started(backend: Backend, servers: list[Server]) -> Ann:
    create_user(backend.data, EMAIL, backend.env.get("DATABASE_URL"))
    server = Server(backend.data, backend.env, "--dev", *without_rate_limits(backend.data.parent))
    servers.append(server)
    server.wait_ready()
    return Ann(server.url)


def test_a_freeze_by_the_cli_reaches_every_credential_and_unfreeze_restores_them(
    backend: Backend, servers: list[Server]
) -> None:
    ann = _started(backend, servers)
    assert ann.order().status_code == 201
    assert ann.by_key().status_code == 200

    admin(backend, "freeze", EMAIL)
    # Each credential is trusted on its own clock (session, key): each gets the window.
    for refused in (
        ann.order,
        ann.by_key,
        ann.login,
        ann.refresh,
        lambda: ann.http.get("/balances"),
    ):
        within_trust_window(refused, 403, "USER_FROZEN")
    # The refused refresh spent nothing: after unfreezing the same token works.
    admin(backend, "unfreeze", EMAIL)
    within_trust_window(ann.order, 201)
    within_trust_window(ann.by_key, 200)
    assert ann.refresh().status_code == 200
    assert ann.login().status_code == 200


def test_a_freeze_written_straight_to_the_store_ends_websocket_private_channels(
    backend: Backend, servers: list[Server]
) -> None:
    ann = _started(backend, servers)
    ws_url = ann.url.replace("http://", "ws://") + "/ws"

    async def scenario() -> None:
        async with websockets.connect(ws_url) as by_token, websockets.connect(ws_url) as by_key:
            timestamp = int(time.time() * 1000)
            payload = f"apiKey={ann.key['key_id']}&timestamp={timestamp}".encode()
            signature = hmac.new(ann.key["secret"].encode(), payload, hashlib.sha256).hexdigest()
            for ws, auth in ((by_token, {"token": ann.access}),
                             (by_key, {"api_key": ann.key["key_id"], "timestamp": timestamp,
                                       "signature": signature})):  # fmt: skip
                assert (await _request(ws, {"op": "auth", "id": 1, **auth}))["type"] == (
                    "authenticated"
                )
                subscribed = await _request(
                    ws, {"op": "subscribe", "id": 2, "channels": ["orders"]}
                )
                assert subscribed["type"] == "subscribed"
            freeze = "update users set status = 'frozen' where email = :email"
            await asyncio.to_thread(backend.execute, freeze, email=EMAIL)
            for ws in (by_token, by_key):
                ended = await _next(ws, lambda m: m.get("id") is None and m["type"] == "error",
                                    TRUST_SECONDS + 1)  # fmt: skip
                assert ended["code"] == "USER_FROZEN" and "orders" in ended["message"]
            again = await _request(by_token, {"op": "auth", "id": 3, "token": ann.access})
            assert again["code"] == "USER_FROZEN"

    asyncio.run(scenario())


def test_a_deleted_user_keeps_no_credential_and_no_address(
    backend: Backend, servers: list[Server]
) -> None:
    ann = _started(backend, servers)
    admin(backend, "delete-user", EMAIL, "--yes")
    within_trust_window(ann.order, 401, "SESSION_REVOKED")
    within_trust_window(ann.by_key, 401, "UNKNOWN_API_KEY")
    assert (ann.login().status_code, ann.login().json()["code"]) == (403, "USER_DELETED")
    assert (ann.refresh().status_code, ann.refresh().json()["code"]) == (403, "USER_DELETED")
    again = httpx.post(f"{ann.url}/api/v1/auth/register",
                       json={"email": EMAIL, "password": PASSWORD})  # fmt: skip
    assert (again.status_code, again.json()["code"]) == (409, "EMAIL_TAKEN")
    assert backend.rows("select status from users") == [("deleted",)]  # the row stays


async def _next(ws: Any, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        decoded = json.loads(frame)
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if match(message):
                return dict(message)


async def _request(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await _next(ws, lambda m: m.get("id") == message["id"], 5)
