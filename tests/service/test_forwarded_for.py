"""The client's address from X-Forwarded-For, over real HTTP against `mercato serve`.

The test client connects from 127.0.0.1, a trusted proxy by default, so what it writes
into X-Forwarded-For is believed as far as the rules go (docs/configuration.md, "The
client's address"): the right-most hop that is not a trusted proxy, ports and brackets
dropped; an unreadable hop the walk reaches is a 400, never a 500. The API-key IP
allowlist is what tells which address the server took.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from service.conftest import Server
from service.test_sessions import PASSWORD, bearer, create_user

ALLOWED = "203.0.113.7"  # in the key's allowlist (203.0.113.0/24 and 2001:db8::/32)
OTHER = "198.51.100.1"  # in no allowlist


def signed_me(url: str, key: dict[str, str], forwarded: list[str]) -> httpx.Response:
    query = f"timestamp={int(time.time() * 1000)}"
    signature = hmac.new(key["secret"].encode(), query.encode(), hashlib.sha256).hexdigest()
    headers = [("X-MBX-APIKEY", key["key_id"])]
    headers += [("X-Forwarded-For", value) for value in forwarded]
    return httpx.get(f"{url}/api/v1/account/me?{query}&signature={signature}", headers=headers)


def fenced_key(server: Server) -> dict[str, str]:
    token = httpx.post(f"{server.url}/api/v1/auth/login",
                       json={"email": "ann@example.com", "password": PASSWORD})  # fmt: skip
    created = httpx.post(
        f"{server.url}/api/v1/account/api-keys", headers=bearer(token.json()["access_token"]),
        json={"label": "fenced", "permissions": ["read"],
              "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    return dict(created.json())


def started(data: Path, env: dict[str, str], servers: list[Server], *args: str) -> Server:
    create_user(data, "ann@example.com")
    server = Server(data, env, *args)
    servers.append(server)
    server.wait_ready()
    return server


# X-Forwarded-For lines as a trusted proxy (127.0.0.1) sends them -> the address taken.
TAKEN = [
    ([ALLOWED], ALLOWED),
    ([f"{ALLOWED}:4711"], ALLOWED),  # IPv4 with a port
    ([f"{OTHER} ,\t {ALLOWED}"], ALLOWED),  # spaces and tabs around hops
    (["2001:db8::1"], "2001:db8::1"),  # bare IPv6
    (["[2001:DB8::1]"], "2001:db8::1"),  # bracketed, any case
    (["[2001:db8::1]:443"], "2001:db8::1"),  # bracketed with a port
    ([f"::ffff:{ALLOWED}"], ALLOWED),  # IPv4-mapped IPv6 is the IPv4 address
    ([f"{OTHER}, {ALLOWED}"], ALLOWED),  # the right-most hop; the client's claims are left
    ([f"junk, <script>, {ALLOWED}"], ALLOWED),  # hops left of the client are never read
    ([f"{ALLOWED}, 127.0.0.1"], ALLOWED),  # trusted hops are skipped (real_ip_recursive)
    ([OTHER, ALLOWED], ALLOWED),  # several header lines are one list, in order
    ([f",, {ALLOWED} ,"], ALLOWED),  # empty list elements are ignored
    ([f"{ALLOWED}, {OTHER}"], OTHER),  # the client cannot prepend its way in
    ([""], "127.0.0.1"),  # an empty header: the peer itself
    (["127.0.0.1, ::1"], "127.0.0.1"),  # every hop trusted: the left-most
]

REFUSED = ["not-an-ip", f"{ALLOWED}, not-an-ip", "[2001:db8::1", "[2001:db8::1]x",
           f"{ALLOWED}:http", "fe80::1%eth0", "999.1.1.1", "1.2.3.4:5:6", "unknown",
           "x" * 5000]  # fmt: skip


def test_the_client_address_is_the_right_most_untrusted_hop_and_garbage_is_a_400(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    server = started(tmp_path / "data", env, servers)
    key = fenced_key(server)
    for forwarded, address in TAKEN:
        answer = signed_me(server.url, key, forwarded)
        allowed = address == ALLOWED or address.startswith("2001:db8:")
        if allowed:
            assert answer.status_code == 200, (forwarded, answer.text)
        else:  # the message names the address the server took
            assert answer.status_code == 403, (forwarded, answer.text)
            assert answer.json() == {"code": "IP_NOT_ALLOWED",
                                     "message": f"this key does not accept requests from "
                                                f"{address}"}, forwarded  # fmt: skip
    for value in REFUSED:
        answer = signed_me(server.url, key, [value])
        assert answer.status_code == 400, (value, answer.text)
        assert answer.json()["code"] == "INVALID_FORWARDED_FOR", value
        assert "X-Forwarded-For" in answer.json()["message"]
    # The order-entry fast lane and the WebSocket handshake are behind the same rule.
    order = httpx.post(f"{server.url}/api/v1/orders", json={},
                       headers={"X-Forwarded-For": "not-an-ip"})  # fmt: skip
    assert (order.status_code, order.json()["code"]) == (400, "INVALID_FORWARDED_FOR")
    ws_url = server.url.replace("http", "ws") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(ws_url, additional_headers={"X-Forwarded-For": "not-an-ip"})
    assert refused.value.response.status_code == 400
    with ws_client.connect(ws_url, additional_headers={"X-Forwarded-For": ALLOWED}) as socket:
        socket.send('{"op": "ping", "id": 1}')
        assert '"pong"' in str(socket.recv(timeout=10))
    assert "Traceback" not in server.output()


def test_without_trusted_proxies_the_header_is_ignored(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    config = tmp_path / "mercato.toml"
    config.write_text("[http]\ntrusted_proxies = []\n")
    server = started(tmp_path / "data", env, servers, "--config", str(config))
    key = fenced_key(server)
    for forwarded in ([ALLOWED], ["not-an-ip"], [f"{ALLOWED}, 127.0.0.1"]):
        answer = signed_me(server.url, key, forwarded)
        assert (answer.status_code, answer.json()["code"]) == (403, "IP_NOT_ALLOWED"), forwarded
        assert answer.json()["message"].endswith("from 127.0.0.1")
