"""Access tokens signed with the server's real key but not as the server signs them: every
malformed claim is a 401 with a stable code (never a 500), and a session only speaks for
its own user. Over real HTTP and the WebSocket sign-in, on both stores."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
import websockets

from service.conftest import Backend, Server
from service.test_sessions import PASSWORD, bearer, create_user


def _claims(user_id: int, session: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": str(user_id), "role": "user", "sid": session, "iat": now,
              "exp": now + 600, "typ": "access", **changes}  # fmt: skip
    return {k: v for k, v in claims.items() if v is not None}  # None: the claim left out


MALFORMED: list[dict[str, Any]] = [
    {"sub": "not-a-number"},
    {"sub": "0"},
    {"sub": "-3"},
    {"sub": " 1"},
    {"sub": "1" * 30},
    {"sub": 1},
    {"role": None},
    {"role": 7},
    {"sid": None},
    {"sid": 12},
    {"typ": None},
    {"typ": "refresh"},
    {"exp": "tomorrow"},
]


def test_a_malformed_claim_is_a_401(backend: Backend, servers: list[Server]) -> None:
    ann_id, ann_session, key, server = _signed_in(backend, servers)
    for forge in MALFORMED:  # one server for all: each token is independent of the others
        token = jwt.encode(_claims(ann_id, ann_session, **forge), key, algorithm="HS256")
        _refused_everywhere(server, token, "UNAUTHORIZED")


def test_a_session_speaks_only_for_its_own_user(backend: Backend, servers: list[Server]) -> None:
    ann_id, ann_session, key, server = _signed_in(backend, servers)
    [(bob_id,)] = backend.rows("select id from users where email = 'bob@example.com'")
    own = jwt.encode(_claims(ann_id, ann_session), key, algorithm="HS256")
    me = httpx.get(f"{server.url}/api/v1/account/me", headers=bearer(own))
    assert me.json()["email"] == "ann@example.com"  # the forging itself is faithful
    as_bob = jwt.encode(_claims(bob_id, ann_session), key, algorithm="HS256")
    _refused_everywhere(server, as_bob, "UNAUTHORIZED")


def _signed_in(backend: Backend, servers: list[Server]) -> tuple[int, str, bytes, Server]:
    """ann's id and live session, the server's JWT key (from its data directory)."""
    for email in ("ann@example.com", "bob@example.com"):
        create_user(backend.data, email, backend.env.get("DATABASE_URL"))
    server = Server(backend.data, backend.env)
    servers.append(server)
    server.wait_ready()
    tokens = httpx.post(f"{server.url}/api/v1/auth/login",
                        json={"email": "ann@example.com", "password": PASSWORD}).json()  # fmt: skip
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    key = bytes.fromhex((backend.data / "secrets" / "jwt_key.hex").read_text().strip())
    return int(claims["sub"]), claims["sid"], key, server


def _refused_everywhere(server: Server, token: str, code: str) -> None:
    for answer in (
        httpx.get(f"{server.url}/api/v1/account/me", headers=bearer(token)),
        httpx.post(f"{server.url}/api/v1/orders", headers=bearer(token),
                   json={"market": "BTC-USDT", "side": "BUY", "price": "1", "quantity": "1"}),
    ):  # fmt: skip
        assert (answer.status_code, answer.json()["code"]) == (401, code), (token, answer.text)
    assert asyncio.run(_ws_sign_in(server, token)) == code, token


async def _ws_sign_in(server: Server, token: str) -> str:
    """The code a WebSocket sign-in with ``token`` gets; the connection stays usable."""
    async with websockets.connect(server.url.replace("http://", "ws://") + "/ws") as ws:
        await ws.send(json.dumps({"op": "auth", "id": 1, "token": token}))
        answer = await _reply(ws, 1)
        await ws.send(json.dumps({"op": "ping", "id": 2}))
        assert (await _reply(ws, 2))["type"] == "pong"
        return str(answer.get("code"))


async def _reply(ws: Any, request_id: int) -> dict[str, Any]:
    while True:
        decoded = json.loads(await asyncio.wait_for(ws.recv(), 10))
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message.get("id") == request_id:
                return dict(message)
