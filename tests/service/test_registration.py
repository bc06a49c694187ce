"""Registration and email verification over real HTTP, with a real SMTP server."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from service.conftest import Backend, Server, smtp_env

TOKEN_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)  # SMTP delivers CRLF


def test_register_then_verify_from_the_mail_that_arrived(
    backend: Backend, servers: list[Server], smtp: Any
) -> None:
    controller, inbox = smtp
    server = Server(backend.data, smtp_env(backend.env, controller.port))
    servers.append(server)
    server.wait_ready()
    api = f"{server.url}/api/v1/auth"

    ann = {"email": " Ann@Example.COM", "password": "correct-horse-9"}
    created = httpx.post(f"{api}/register", json=ann)
    assert created.status_code == 201, created.text
    assert created.json() == {"user_id": 1, "email": "ann@example.com", "email_verified": False}

    (mail,) = inbox.wait_for(1)
    assert mail["To"] == "ann@example.com" and "desk@mercato.test" in mail["From"]
    token = TOKEN_LINE.search(mail.get_payload(decode=True).decode()).group(1)

    verified = httpx.post(f"{api}/verify-email", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"user_id": 1, "email_verified": True}
    again = httpx.post(f"{api}/verify-email", json={"token": token})
    assert (again.status_code, again.json()["code"]) == (400, "INVALID_TOKEN")

    taken = httpx.post(
        f"{api}/register", json={"email": "ANN@example.com", "password": "correct-horse-9"}
    )
    assert (taken.status_code, taken.json()["code"]) == (409, "EMAIL_TAKEN")
    assert len(inbox.messages) == 1  # no mail for a refused registration

    assert server.stop() == 0, server.output()
    ((verified_at,),) = backend.rows("select email_verified_at from users where id = 1")
    outbox = backend.rows("select to_address, sent_at is not null, attempts from email_outbox")
    assert verified_at is not None
    assert outbox == [("ann@example.com", 1, 1)]


def test_without_smtp_the_mail_waits_in_the_outbox_and_the_log(
    backend: Backend, servers: list[Server]
) -> None:
    server = Server(backend.data, backend.env)
    servers.append(server)
    server.wait_ready()
    bob = {"email": "bob@example.com", "password": "another-pass-42"}
    created = httpx.post(f"{server.url}/api/v1/auth/register", json=bob)
    assert created.status_code == 201
    assert server.stop() == 0
    log = server.output()
    ((body, sent_at),) = backend.rows("select body, sent_at from email_outbox")
    token = TOKEN_LINE.search(body).group(1)
    assert sent_at is None and token in log  # a local operator can still verify


BAD_REGISTRATIONS = [
    ('{"email": "x@example.com", "password": "short"}', 400, "WEAK_PASSWORD"),
    ('{"email": "not-an-address", "password": "correct-horse-9"}', 400, "INVALID_EMAIL"),
    ('{"email": "x@example.com", "password": "correct-horse-9", "admin": 1}', 400,
     "INVALID_REQUEST"),
    ('{"email": "x@example.com", "password": 123456789012}', 400, "INVALID_REQUEST"),
    ('{"email": "x@example.com"', 400, "INVALID_REQUEST"),
    ("[]", 400, "INVALID_REQUEST"),
]  # fmt: skip


def test_bad_registrations_get_a_4xx_code_and_create_nothing(
    backend: Backend, servers: list[Server]
) -> None:
    # One server for every payload (a boot per payload and backend would be most of the
    # suite's time); "nothing" is checked once, after all of them.
    server = Server(backend.data, backend.env)
    servers.append(server)
    server.wait_ready()
    for payload, status, code in BAD_REGISTRATIONS:
        answer = httpx.post(f"{server.url}/api/v1/auth/register", content=payload,
                            headers={"content-type": "application/json"})  # fmt: skip
        assert (answer.status_code, answer.json()["code"]) == (status, code), (payload, answer.text)
        assert answer.json()["message"], payload
    assert server.stop() == 0
    assert backend.rows("select count(*) from users") == [(0,)]
    assert backend.rows("select count(*) from email_outbox") == [(0,)]


def test_verify_email_refuses_unknown_tokens(backend: Backend, servers: list[Server]) -> None:
    server = Server(backend.data, backend.env)
    servers.append(server)
    server.wait_ready()
    answer = httpx.post(f"{server.url}/api/v1/auth/verify-email", json={"token": "forged"})
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_TOKEN")
    assert server.stop() == 0


def test_oversized_bodies_are_refused_before_any_handler(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """SQLite only: the limit is ASGI middleware in front of every handler, the same
    whatever the store (registration itself runs on both in the tests above)."""
    server = Server(tmp_path / "data", env)
    servers.append(server)
    server.wait_ready()
    url = f"{server.url}/api/v1/auth/register"
    huge = '{"email": "x@example.com", "password": "' + "a1" * 40_000 + '"}'
    declared = httpx.post(url, content=huge, headers={"content-type": "application/json"})
    assert (declared.status_code, declared.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")

    def chunks():  # no Content-Length: the limit applies to what streams in
        for _ in range(100):
            yield b"x" * 1024

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert (streamed.status_code, streamed.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    small = httpx.post(url, json={"email": "x@example.com", "password": "correct-horse-9"})
    assert small.status_code == 201
    assert server.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "mercato.db") as db:
        assert db.execute("select email from users").fetchall() == [("x@example.com",)]
