"""TOTP 2FA over HTTP: enrol, confirm, login with a code or a recovery code, disable;
codes work once; the sensitive account actions need a code.

A TOTP code is refused once used (and so is any code of an earlier step), so a test
that needs several uses the current step's code, then the next step's (inside the
clock-drift window), then recovery codes, rather than waiting 30 s for a new one."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pyotp

from service.conftest import Server
from service.test_sessions import PASSWORD, bearer, create_user

NEW_PASSWORD = "brand-new-pass-7"
REQUIRED, INVALID, REUSED = (401, "TOTP_REQUIRED"), (400, "INVALID_TOTP"), (400, "TOTP_REUSED")


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
    first_code = totp.now()
    confirmed = httpx.post(f"{account}/2fa/confirm", headers=headers, json={"code": first_code})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    again = httpx.post(f"{account}/2fa/enroll", headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "TOTP_ALREADY_ENABLED")

    missing = login()
    assert (missing.status_code, missing.json()["code"]) == REQUIRED
    bad = login(totp_code=wrong_code)
    assert (bad.status_code, bad.json()["code"]) == (401, "INVALID_CREDENTIALS")
    # A code works once: the one that confirmed 2FA is spent. The next step's code (inside
    # the clock-drift window) logs in, once.
    replayed = login(totp_code=first_code)
    assert (replayed.status_code, replayed.json()["code"]) == (401, "TOTP_REUSED")
    next_code = totp.at(time.time() + 30)
    assert login(totp_code=next_code).status_code == 200
    replayed = login(totp_code=next_code)
    assert (replayed.status_code, replayed.json()["code"]) == (401, "TOTP_REUSED")
    assert login(totp_code=codes[0]).status_code == 200
    reused = login(totp_code=codes[0])  # a recovery code works once
    assert (reused.status_code, reused.json()["code"]) == (401, "INVALID_CREDENTIALS")

    headers = bearer(login(totp_code=codes[1]).json()["access_token"])
    off = httpx.post(f"{account}/2fa/disable", headers=headers, json={"code": codes[2]})
    assert off.status_code == 204, off.text  # "code": the older name of "totp_code"
    assert login().status_code == 200
    assert server.stop() == 0

    with sqlite3.connect(data / "mercato.db") as db:
        enabled, sealed = db.execute("select totp_enabled, totp_secret_enc from users").fetchone()
        remaining = db.execute("select count(*) from recovery_codes").fetchone()
        reasons = [r for (r,) in db.execute("select reason from login_history order by id")]
    assert (enabled, sealed, remaining) == (0, None, (0,))
    assert reasons.count("2fa code reused") == 2


def test_sensitive_actions_need_a_code_when_2fa_is_on(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """API key creation, password change and disabling 2FA need totp_code; a refusal
    changes nothing; a code is spent once used; deleting a key needs no code."""
    data = tmp_path / "data"
    create_user(data, "ann@example.com")
    server = Server(data, env)
    servers.append(server)
    server.wait_ready()
    auth, account = f"{server.url}/api/v1/auth", f"{server.url}/api/v1/account"

    def login(password: str = PASSWORD, **extra: str) -> httpx.Response:
        body = {"email": "ann@example.com", "password": password, **extra}
        return httpx.post(f"{auth}/login", json=body)

    def post(path: str, headers: dict[str, str], **body: object) -> httpx.Response:
        return httpx.post(f"{account}/{path}", headers=headers, json=body)

    def refused(answer: httpx.Response) -> tuple[int, str]:
        return answer.status_code, answer.json()["code"]

    headers = bearer(login().json()["access_token"])
    key = {"label": "bot", "permissions": ["read"]}
    assert post("api-keys", headers, **key).status_code == 201  # 2FA off: no code needed

    secret = httpx.post(f"{account}/2fa/enroll", headers=headers).json()["secret"]
    totp = pyotp.TOTP(secret)
    first_code = totp.now()
    codes = post("2fa/confirm", headers, code=first_code).json()["recovery_codes"]
    wrong_code = next(
        c for c in ("000000", "111111", "222222") if not totp.verify(c, valid_window=1)
    )

    def key_count() -> int:
        return len(httpx.get(f"{account}/api-keys", headers=headers).json())

    # API keys.
    assert refused(post("api-keys", headers, **key)) == REQUIRED
    assert refused(post("api-keys", headers, **key, totp_code=wrong_code)) == INVALID
    assert refused(post("api-keys", headers, **key, totp_code=first_code)) == REUSED
    assert key_count() == 1
    next_code = totp.at(time.time() + 30)
    created = post("api-keys", headers, **key, totp_code=next_code)
    assert created.status_code == 201, created.text
    assert refused(post("api-keys", headers, **key, totp_code=next_code)) == REUSED
    assert key_count() == 2
    # Taking access away needs no code.
    deleted = httpx.delete(f"{account}/api-keys/{created.json()['key_id']}", headers=headers)
    assert deleted.status_code == 204

    # Password: refused without a (fresh) code, and then nothing changed: the session
    # lives on and the old password still logs in.
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert refused(post("password", headers, **change)) == REQUIRED
    assert refused(post("password", headers, **change, totp_code=wrong_code)) == INVALID
    assert refused(post("password", headers, **change, totp_code=next_code)) == REUSED
    assert httpx.get(f"{account}/me", headers=headers).status_code == 200
    assert login(totp_code=codes[0]).status_code == 200
    changed = post("password", headers, **change, totp_code=codes[1])  # a recovery code
    assert changed.status_code == 204, changed.text
    assert httpx.get(f"{account}/me", headers=headers).status_code == 401
    assert refused(login(totp_code=codes[2])) == (401, "INVALID_CREDENTIALS")
    headers = bearer(login(NEW_PASSWORD, totp_code=codes[3]).json()["access_token"])

    # Disabling: totp_code like the other actions.
    assert refused(post("2fa/disable", headers)) == REQUIRED
    assert refused(post("2fa/disable", headers, totp_code=codes[1])) == INVALID
    assert post("2fa/disable", headers, totp_code=codes[4]).status_code == 204
    assert post("api-keys", headers, **key).status_code == 201  # off again: no code
    assert login(NEW_PASSWORD).status_code == 200
    assert server.stop() == 0


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
