"""API keys and Binance-style signed requests over real HTTP.

Signatures are computed here, independently of the server's code: hex HMAC-SHA256 of
the exact query string followed by the exact body, keyed with the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from mercato.auth.api_keys import KEY_TRUST_SECONDS
from service.conftest import Backend, Server
from service.test_sessions import PASSWORD, bearer, create_user


def signed_get(url: str, key: dict[str, str], params: str = "", *, offset_ms: int = 0,
               secret: str | None = None) -> httpx.Response:  # fmt: skip
    query = f"{params}&" if params else ""
    query += f"timestamp={int(time.time() * 1000) + offset_ms}&recvWindow=5000"
    signature = hmac.new((secret or key["secret"]).encode(), query.encode(), hashlib.sha256)
    return httpx.get(f"{url}?{query}&signature={signature.hexdigest()}",
                     headers={"X-MBX-APIKEY": key["key_id"]})  # fmt: skip


def test_api_keys_sign_requests_like_binance(backend: Backend, servers: list[Server]) -> None:
    data, env = backend.data, backend.env
    for email in ("ann@example.com", "bob@example.com"):
        create_user(data, email, env.get("DATABASE_URL"))
    server = Server(data, env)
    servers.append(server)
    server.wait_ready()
    auth, account = f"{server.url}/api/v1/auth", f"{server.url}/api/v1/account"

    def session(email: str) -> dict[str, str]:
        token = httpx.post(f"{auth}/login", json={"email": email, "password": PASSWORD})
        return bearer(token.json()["access_token"])

    ann, bob = session("ann@example.com"), session("bob@example.com")

    def new_key(headers: dict[str, str], **body: object) -> httpx.Response:
        return httpx.post(f"{account}/api-keys", headers=headers,
                          json={"label": "bot", "permissions": ["read"], **body})  # fmt: skip

    created = new_key(ann)
    assert created.status_code == 201, created.text
    key = created.json()
    assert (len(key["key_id"]), len(key["secret"]), key["permissions"]) == (64, 64, ["read"])

    me = signed_get(f"{account}/me", key)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "ann@example.com"  # the key's owner, never anyone else
    listed = signed_get(f"{account}/api-keys", key).json()
    assert [k["key_id"] for k in listed] == [key["key_id"]] and "secret" not in listed[0]

    forged = signed_get(f"{account}/me", key, secret="0" * 64)
    assert (forged.status_code, forged.json()["code"]) == (401, "INVALID_SIGNATURE")
    stale = signed_get(f"{account}/me", key, offset_ms=-60_000)
    assert (stale.status_code, stale.json()["code"]) == (400, "TIMESTAMP_OUTSIDE_WINDOW")
    future = signed_get(f"{account}/me", key, offset_ms=5_000)
    assert (future.status_code, future.json()["code"]) == (400, "TIMESTAMP_OUTSIDE_WINDOW")
    unknown = signed_get(f"{account}/me", {**key, "key_id": "f" * 64})
    assert (unknown.status_code, unknown.json()["code"]) == (401, "UNKNOWN_API_KEY")
    # The signature covers the exact bytes: a parameter changed after signing breaks it.
    query = f"limit=5&timestamp={int(time.time() * 1000)}"
    signature = hmac.new(key["secret"].encode(), query.encode(), hashlib.sha256).hexdigest()
    changed = query.replace("limit=5", "limit=6")
    tampered = httpx.get(f"{account}/login-history?{changed}&signature={signature}",
                         headers={"X-MBX-APIKEY": key["key_id"]})  # fmt: skip
    assert (tampered.status_code, tampered.json()["code"]) == (401, "INVALID_SIGNATURE")

    trade_only = new_key(ann, permissions=["trade"]).json()
    lacking = signed_get(f"{account}/me", trade_only)
    assert (lacking.status_code, lacking.json()["code"]) == (403, "MISSING_PERMISSION")
    fenced = new_key(ann, ip_allowlist=["10.0.0.0/8"]).json()
    outside = signed_get(f"{account}/me", fenced)
    assert (outside.status_code, outside.json()["code"]) == (403, "IP_NOT_ALLOWED")
    assert (
        signed_get(f"{account}/me", new_key(ann, ip_allowlist=["127.0.0.1"]).json()).status_code
        == 200
    )

    # A key cannot manage keys or the account; another user's key answers 404.
    by_key = httpx.post(f"{account}/api-keys", headers={"X-MBX-APIKEY": key["key_id"]},
                        json={"label": "x", "permissions": ["read"]})  # fmt: skip
    assert by_key.status_code == 401
    stolen = httpx.delete(f"{account}/api-keys/{key['key_id']}", headers=bob)
    assert (stolen.status_code, stolen.json()["code"]) == (404, "UNKNOWN_API_KEY")
    bad = new_key(ann, permissions=["admin"])
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_API_KEY")

    # Frozen users are refused with their own code; deleted keys are unknown. The freeze
    # is written by another process (this one), so the server may trust the key it read
    # for up to KEY_TRUST_SECONDS more (docs/accounts.md), and no longer.
    backend.execute("update users set status = 'frozen' where email = 'ann@example.com'")
    frozen_at = time.monotonic()
    frozen = signed_get(f"{account}/me", key)
    while frozen.status_code == 200 and time.monotonic() - frozen_at < 5:
        time.sleep(0.1)
        frozen = signed_get(f"{account}/me", key)
    assert (frozen.status_code, frozen.json()["code"]) == (403, "USER_FROZEN")
    assert time.monotonic() - frozen_at <= KEY_TRUST_SECONDS + 1
    backend.execute("update users set status = 'active' where email = 'ann@example.com'")
    assert httpx.delete(f"{account}/api-keys/{key['key_id']}", headers=ann).status_code == 204
    gone = signed_get(f"{account}/me", key)
    assert (gone.status_code, gone.json()["code"]) == (401, "UNKNOWN_API_KEY")

    # Keys survive a restart (their secrets are sealed with the master key on disk).
    assert server.stop() == 0, server.output()
    again = Server(data, env)
    servers.append(again)
    again.wait_ready()
    assert signed_get(f"{again.url}/api/v1/account/me", trade_only).status_code == 403
    sealed = [row[0] for row in backend.rows("select secret_enc from api_keys")]
    assert all(
        key["secret"].encode() not in s and trade_only["secret"].encode() not in s for s in sealed
    )
    assert again.stop() == 0
