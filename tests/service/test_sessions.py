"""Login, refresh-token rotation with reuse detection, lockout, logout, history: over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from service.conftest import Backend, Server

PASSWORD = "correct-horse-9"


def create_user(data_dir: Path, email: str, database_url: str | None = None) -> None:
    """``mercato admin create-user`` on the store in ``data_dir``, or at ``database_url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MERCATO_DATA_DIR")}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "mercato.cli", "admin", "create-user", email,
         "--password-stdin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_sessions_end_to_end(backend: Backend, servers: list[Server]) -> None:
    data, env = backend.data, backend.env
    for email in ("ann@example.com", "bob@example.com"):
        create_user(data, email, env.get("DATABASE_URL"))
    server = Server(data, env)
    servers.append(server)
    server.wait_ready()
    auth = f"{server.url}/api/v1/auth"
    account = f"{server.url}/api/v1/account"

    def login(email: str, password: str = PASSWORD) -> httpx.Response:
        return httpx.post(f"{auth}/login", json={"email": email, "password": password},
                          headers={"user-agent": "pytest-agent"})  # fmt: skip

    first = login("ANN@example.com")
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert (tokens["token_type"], tokens["expires_in"]) == ("Bearer", 900)
    me = httpx.get(f"{account}/me", headers=bearer(tokens["access_token"])).json()
    assert (me["email"], me["role"], me["email_verified"]) == ("ann@example.com", "user", True)

    # Rotation: each refresh spends the token; a spent token presented again revokes
    # the whole session, including the newest tokens of the family.
    second = httpx.post(f"{auth}/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    third = httpx.post(f"{auth}/refresh", json={"refresh_token": second["refresh_token"]}).json()
    assert httpx.get(f"{account}/me", headers=bearer(third["access_token"])).status_code == 200
    reuse = httpx.post(f"{auth}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert (reuse.status_code, reuse.json()["code"]) == (401, "TOKEN_REUSED")
    after = httpx.post(f"{auth}/refresh", json={"refresh_token": third["refresh_token"]})
    assert (after.status_code, after.json()["code"]) == (401, "INVALID_TOKEN")
    revoked = httpx.get(f"{account}/me", headers=bearer(third["access_token"]))
    assert (revoked.status_code, revoked.json()["code"]) == (401, "SESSION_REVOKED")

    # Lockout: five wrong passwords lock the account, even for the right password.
    for _ in range(5):
        wrong = login("bob@example.com", "wrong-password-1")
        assert (wrong.status_code, wrong.json()["code"]) == (401, "INVALID_CREDENTIALS")
    locked = login("bob@example.com")
    assert (locked.status_code, locked.json()["code"]) == (403, "ACCOUNT_LOCKED")
    unknown = login("nobody@example.com")
    assert (unknown.status_code, unknown.json()["code"]) == (401, "INVALID_CREDENTIALS")

    # Logout ends this session at once; logout-everywhere ends all of them.
    one, two = login("ann@example.com").json(), login("ann@example.com").json()
    assert httpx.post(f"{auth}/logout", headers=bearer(one["access_token"])).status_code == 204
    assert httpx.get(f"{account}/me", headers=bearer(one["access_token"])).status_code == 401
    assert httpx.get(f"{account}/me", headers=bearer(two["access_token"])).status_code == 200
    everywhere = httpx.post(f"{auth}/logout-everywhere", headers=bearer(two["access_token"]))
    assert everywhere.status_code == 204
    assert httpx.get(f"{account}/me", headers=bearer(two["access_token"])).status_code == 401

    # History: the caller's own logins only, newest first.
    fresh = login("ann@example.com").json()
    history = httpx.get(f"{account}/login-history", headers=bearer(fresh["access_token"])).json()
    assert [h["success"] for h in history] == [True, True, True, True]
    assert all(h["user_agent"] == "pytest-agent" and h["ip"] == "127.0.0.1" for h in history)
    assert history[0]["time"] >= history[-1]["time"]

    # Without a token, or with a forged one: 401 with a code, never someone's data.
    assert httpx.get(f"{account}/me").json()["code"] == "UNAUTHORIZED"
    forged = httpx.get(f"{account}/me", headers=bearer(fresh["access_token"][:-4] + "AAAA"))
    assert (forged.status_code, forged.json()["code"]) == (401, "UNAUTHORIZED")

    # A restart keeps users and sessions (same signing key, refresh tokens in the store).
    assert server.stop() == 0, server.output()
    again = Server(data, env)
    servers.append(again)
    again.wait_ready()
    assert (
        httpx.get(
            f"{again.url}/api/v1/account/me", headers=bearer(fresh["access_token"])
        ).status_code
        == 200
    )
    renewed = httpx.post(
        f"{again.url}/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}
    )
    assert renewed.status_code == 200, renewed.text
    assert again.stop() == 0
