"""Password change and reset over HTTP, the reset token read from a real SMTP delivery."""

from __future__ import annotations

import re
from typing import Any

import httpx

from service.conftest import Backend, Server, smtp_env
from service.test_sessions import PASSWORD, bearer, create_user

TOKEN_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)
NEW_PASSWORD = "brand-new-pass-7"


def test_change_and_reset_end_every_session(
    backend: Backend, servers: list[Server], smtp: Any
) -> None:
    controller, inbox = smtp
    create_user(backend.data, "ann@example.com", backend.env.get("DATABASE_URL"))
    server = Server(backend.data, smtp_env(backend.env, controller.port))
    servers.append(server)
    server.wait_ready()
    auth, account = f"{server.url}/api/v1/auth", f"{server.url}/api/v1/account"

    def login(password: str) -> httpx.Response:
        return httpx.post(f"{auth}/login", json={"email": "ann@example.com", "password": password})

    here, elsewhere = login(PASSWORD).json(), login(PASSWORD).json()

    def change(current: str, new: str) -> httpx.Response:
        return httpx.post(f"{account}/password", headers=bearer(here["access_token"]),
                          json={"current_password": current, "new_password": new})  # fmt: skip

    wrong = change("not-it-123", NEW_PASSWORD)
    assert (wrong.status_code, wrong.json()["code"]) == (401, "INVALID_CREDENTIALS")
    weak = change(PASSWORD, "short")
    assert (weak.status_code, weak.json()["code"]) == (400, "WEAK_PASSWORD")
    done = change(PASSWORD, NEW_PASSWORD)
    assert done.status_code == 204, done.text
    for session in (here, elsewhere):
        assert (
            httpx.get(f"{account}/me", headers=bearer(session["access_token"])).status_code == 401
        )
    assert login(PASSWORD).status_code == 401
    assert login(NEW_PASSWORD).status_code == 200

    # Reset: the same answer for an unknown address, and no mail for it.
    unknown = httpx.post(f"{auth}/password-reset/request", json={"email": "nobody@example.com"})
    known = httpx.post(f"{auth}/password-reset/request", json={"email": "ANN@example.com"})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    (mail,) = inbox.wait_for(1)
    assert mail["To"] == "ann@example.com"
    token = TOKEN_LINE.search(mail.get_payload(decode=True).decode()).group(1)

    session = login(NEW_PASSWORD).json()
    reset = httpx.post(f"{auth}/password-reset/confirm",
                       json={"token": token, "new_password": "third-pass-333"})  # fmt: skip
    assert reset.status_code == 204, reset.text
    assert httpx.get(f"{account}/me", headers=bearer(session["access_token"])).status_code == 401
    assert login(NEW_PASSWORD).status_code == 401
    assert login("third-pass-333").status_code == 200
    again = httpx.post(f"{auth}/password-reset/confirm",
                       json={"token": token, "new_password": "fourth-pass-44"})  # fmt: skip
    assert (again.status_code, again.json()["code"]) == (400, "INVALID_TOKEN")
    assert len(inbox.messages) == 1
    assert server.stop() == 0
