"""TOTP 2FA over HTTP: enrol, confirm, login with a code or a recovery code, disable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pyotp

from service.conftest import Server
from service.test_sessions import PASSWORD, bearer, create_user


def test_two_factor_end_to_end(tmp_path: Path, env: dict[str, str], servers: list[Server]) -> None:
    data = tmp_path / "data"
    create_user(data, "ann@example.com")
    server = Server(data, env)
    servers.append(server)
    server.wait_ready()
    auth, account = f"{server.url}/api/v1/auth", f"{server.url}/api/v1/account"

    def login(**extra: str) -> httpx.Response:
        body = {"email": "ann@example.com", "password": PASSWORD, **extra}
        return httpx.post(f"{auth}/login", json=body)

    headers = bearer(login().json()["access_token"])
    enrolment = httpx.post(f"{account}/2fa/enroll", headers=headers).json()
    secret = enrolment["secret"]
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/Mercato:ann%40example.com?secret=")
    assert login().status_code == 200  # not on before a code confirms it

    totp = pyotp.TOTP(secret)
    wrong_code = next(
        c for c in ("000000", "111111", "222222") if not totp.verify(c, valid_window=1)
    )
    wrong = httpx.post(f"{account}/2fa/confirm", headers=headers, json={"code": wrong_code})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "INVALID_TOTP")
    confirmed = httpx.post(f"{account}/2fa/confirm", headers=headers, json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    again = httpx.post(f"{account}/2fa/enroll", headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "TOTP_ALREADY_ENABLED")

    missing = login()
    assert (missing.status_code, missing.json()["code"]) == (401, "TOTP_REQUIRED")
    bad = login(totp_code=wrong_code)
    assert (bad.status_code, bad.json()["code"]) == (401, "INVALID_CREDENTIALS")
    assert login(totp_code=totp.now()).status_code == 200
    assert login(totp_code=codes[0]).status_code == 200
    reused = login(totp_code=codes[0])  # a recovery code works once
    assert (reused.status_code, reused.json()["code"]) == (401, "INVALID_CREDENTIALS")

    headers = bearer(login(totp_code=codes[1]).json()["access_token"])
    off = httpx.post(f"{account}/2fa/disable", headers=headers, json={"code": totp.now()})
    assert off.status_code == 204, off.text
    assert login().status_code == 200
    assert server.stop() == 0

    with sqlite3.connect(data / "mercato.db") as db:
        enabled, sealed = db.execute("select totp_enabled, totp_secret_enc from users").fetchone()
        remaining = db.execute("select count(*) from recovery_codes").fetchone()
    assert (enabled, sealed, remaining) == (0, None, (0,))


def test_the_secret_is_stored_sealed(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "data"
    create_user(data, "bob@example.com")
    server = Server(data, env)
    servers.append(server)
    server.wait_ready()
    bob = {"email": "bob@example.com", "password": PASSWORD}
    token = httpx.post(f"{server.url}/api/v1/auth/login", json=bob).json()["access_token"]
    enroll = f"{server.url}/api/v1/account/2fa/enroll"
    secret = httpx.post(enroll, headers=bearer(token)).json()["secret"]
    assert server.stop() == 0
    with sqlite3.connect(data / "mercato.db") as db:
        (sealed,) = db.execute("select totp_secret_enc from users").fetchone()
    assert secret.encode() not in sealed and len(sealed) > len(secret)
