"""Registration refuses what is not an email address and treats look-alikes of a
registered address as taken, over real HTTP on both stores; login and password reset find
an account by the normalised form of its address."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from mercato.auth.users import normalize_email
from service.conftest import Backend, Server
from service.test_lockout import without_rate_limits
from service.test_sessions import PASSWORD

NOT_ADDRESSES = {
    "a@b@x.example.com": "invalid characters: '@'",
    "<script>alert(1)</script>@x.example.com": "",
    "ann\u200b@example.com": "ZERO WIDTH SPACE",  # invisible
    "ann@exam\u200bple.com": "ZERO WIDTH SPACE",
    "ann\u2060@example.com": "WORD JOINER",
    "\u202eann@example.com": "RIGHT-TO-LEFT OVERRIDE",  # reverses what follows on screen
    "ann\u00ad@example.com": "SOFT HYPHEN",
    "ann@localhost": "period",
}
LOOK_ALIKES = [  # of ann@example.com, registered first
    "ANN@Example.COM",
    "\uff41\uff4e\uff4e@example.com",  # fullwidth ann
    "ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # fullwidth example
    "\u0430nn@example.com",  # Cyrillic a
    "ann@ex\u0430mple.com",  # Cyrillic a in the domain
    "\u0251nn@example.com",  # Latin alpha
]


@pytest.fixture
def server(backend: Backend, servers: list[Server]) -> Server:
    started = Server(backend.data, backend.env, *without_rate_limits(backend.data.parent))
    servers.append(started)
    started.wait_ready()
    return started


def register(server: Server, email: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/auth/register",
                      json={"email": email, "password": PASSWORD})  # fmt: skip


def test_what_is_not_an_address_is_refused_and_says_why(server: Server, backend: Backend) -> None:
    for email, reason in NOT_ADDRESSES.items():
        answer = register(server, email)
        assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_EMAIL"), email
        assert reason in answer.json()["message"], (email, answer.json()["message"])
    assert backend.rows("select count(*) from users") == [(0,)]  # nothing half-created


def test_look_alikes_of_a_registered_address_are_taken(server: Server, backend: Backend) -> None:
    assert register(server, "ann@example.com").status_code == 201
    for email in LOOK_ALIKES:
        answer = register(server, email)
        # Word for word the answer of a plain duplicate, naming only what was sent.
        assert answer.status_code == 409, (email, answer.text)
        assert answer.json() == {
            "code": "EMAIL_TAKEN",
            "message": f"a user with {normalize_email(email)} exists already",
        }
    assert register(server, "anne@example.com").status_code == 201  # not a look-alike
    assert backend.rows("select count(*) from users") == [(2,)]


def test_login_and_password_reset_find_the_account_by_its_normalised_address(
    server: Server, backend: Backend
) -> None:
    assert register(server, "ann@example.com").status_code == 201
    fullwidth = "\uff41\uff4e\uff4e@example.com"
    login = httpx.post(f"{server.url}/api/v1/auth/login",
                       json={"email": fullwidth, "password": PASSWORD})  # fmt: skip
    assert login.status_code == 200, login.text
    reset = httpx.post(f"{server.url}/api/v1/auth/password-reset/request",
                       json={"email": fullwidth})  # fmt: skip
    assert reset.status_code == 202
    subjects = backend.rows("select to_address, subject from email_outbox order by id")
    assert subjects[-1] == ("ann@example.com", "Reset your Mercato password")


def test_concurrent_look_alike_registrations_never_both_succeed(
    server: Server, backend: Backend
) -> None:
    pairs = 10

    async def burst() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=2 * pairs)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
            answers = await asyncio.gather(*(
                http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
                for i in range(pairs)
                for email in (f"ann{i}@example.com", f"\u0430nn{i}@example.com")
            ))  # fmt: skip
        return [(a.status_code, a.json().get("code", "")) for a in answers]

    answers = asyncio.run(burst())
    for i in range(pairs):  # one of each pair got the account, the other was told it is taken
        assert Counter(answers[2 * i : 2 * i + 2]) == {(201, ""): 1, (409, "EMAIL_TAKEN"): 1}
    assert backend.rows("select count(*) from users") == [(pairs,)]
