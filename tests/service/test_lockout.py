"""The login lockout under concurrency, over real HTTP on both stores: however many wrong
passwords race, exactly MAX_FAILED_LOGINS are checked and the account ends locked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from mercato.auth.sessions import MAX_FAILED_LOGINS
from service.conftest import Backend, Server
from service.test_sessions import PASSWORD, create_user

BURST = 30


def without_rate_limits(directory: Path) -> list[str]:
    """``--config`` turning rate limits off: the auth budget (burst 20 per IP) would
    answer part of a burst of 30 with 429 before the lockout is reached."""
    path = directory / "no-limits.toml"
    path.write_text("[rate_limits]\nenabled = false\n")
    return ["--config", str(path)]


async def _burst(url: str, email: str, passwords: list[str]) -> list[tuple[int, str]]:
    """``passwords`` sent as concurrent logins, each on a connection of its own."""
    limits = httpx.Limits(max_connections=len(passwords))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        answers = await asyncio.gather(*(
            http.post("/api/v1/auth/login", json={"email": email, "password": password})
            for password in passwords
        ))  # fmt: skip
    return [(a.status_code, a.json().get("code", "")) for a in answers]


def _started(backend: Backend, servers: list[Server]) -> Server:
    create_user(backend.data, "ann@example.com", backend.env.get("DATABASE_URL"))
    server = Server(backend.data, backend.env, *without_rate_limits(backend.data.parent))
    servers.append(server)
    server.wait_ready()
    return server


def test_thirty_concurrent_wrong_passwords_check_exactly_five(
    backend: Backend, servers: list[Server]
) -> None:
    server = _started(backend, servers)
    answers = asyncio.run(_burst(server.url, "ann@example.com", ["wrong-password-1"] * BURST))
    assert Counter(answers) == {
        (401, "INVALID_CREDENTIALS"): MAX_FAILED_LOGINS,
        (403, "ACCOUNT_LOCKED"): BURST - MAX_FAILED_LOGINS,
    }
    reasons = dict(backend.rows("select reason, count(*) from login_history group by reason"))
    assert reasons == {"wrong credentials": MAX_FAILED_LOGINS, "locked": BURST - MAX_FAILED_LOGINS}
    [(locked_until,)] = backend.rows("select locked_until from users")
    assert locked_until > time.time() * 1000
    # The lock holds for the right password, and no late write lifted it.
    right = httpx.post(f"{server.url}/api/v1/auth/login",
                       json={"email": "ann@example.com", "password": PASSWORD})  # fmt: skip
    assert (right.status_code, right.json()["code"]) == (403, "ACCOUNT_LOCKED")


def test_right_passwords_racing_wrong_ones_share_the_same_five_checks(
    backend: Backend, servers: list[Server]
) -> None:
    server = _started(backend, servers)
    passwords = ["wrong-password-1"] * (BURST - 5) + [PASSWORD] * 5
    answers = Counter(asyncio.run(_burst(server.url, "ann@example.com", passwords)))
    # At most five passwords are checked; the right ones among them log in, the rest wait.
    checked = answers[(401, "INVALID_CREDENTIALS")] + answers[(200, "")]
    assert checked == MAX_FAILED_LOGINS
    assert answers[(403, "ACCOUNT_LOCKED")] == BURST - MAX_FAILED_LOGINS


def test_four_failures_then_the_right_password_log_in_and_count_afresh(
    backend: Backend, servers: list[Server]
) -> None:
    server = _started(backend, servers)

    def login(password: str) -> tuple[int, str]:
        answer = httpx.post(f"{server.url}/api/v1/auth/login",
                            json={"email": "ann@example.com", "password": password})  # fmt: skip
        return answer.status_code, answer.json().get("code", "")

    for _ in range(MAX_FAILED_LOGINS - 1):
        assert login("wrong-password-1") == (401, "INVALID_CREDENTIALS")
    # The fifth attempt took the last one allowed (and the lock), and proved right.
    assert login(PASSWORD) == (200, "")
    assert backend.rows("select failed_logins, locked_until from users") == [(0, None)]
    assert login("wrong-password-1") == (401, "INVALID_CREDENTIALS")
    assert login(PASSWORD) == (200, "")
