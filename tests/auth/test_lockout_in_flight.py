"""The lockout's two decisions (docs/accounts.md, "The lockout under concurrency"), with a
password check held in flight on purpose: it was given its attempt before the lock, so it
counts and may log in, but it cannot lift a lock another attempt set; and the attempt
that takes the last slot and proves right lifts its own lock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth import sessions
from mercato.auth.errors import AuthError
from mercato.auth.sessions import MAX_FAILED_LOGINS, Client, Tokens
from mercato.auth.users import create_user
from mercato.store import create_engine, migrate
from mercato.store.tables import users

PASSWORD = "correct-horse-9"
JWT_KEY = b"j" * 32
MASTER_KEY = bytes(range(32))


def _run(database_url: str, scenario: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            await create_user(db, "ann@example.com", PASSWORD, verified=True)
            await scenario(db)
        finally:
            await db.dispose()

    asyncio.run(main())


def _login(db: AsyncEngine, password: str) -> Awaitable[Tokens]:
    return sessions.login(db, JWT_KEY, "ann@example.com", password,
                          Client("127.0.0.1", "pytest"), master_key=MASTER_KEY)  # fmt: skip


async def _code(call: Awaitable[object]) -> str:
    try:
        await call
    except AuthError as error:
        return error.code
    return "OK"


async def _locked(db: AsyncEngine) -> bool:
    async with db.connect() as connection:
        until = (await connection.execute(select(users.c.locked_until))).scalar_one()
    return until is not None


def test_a_right_password_in_flight_when_the_lock_lands_logs_in_but_keeps_the_lock(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    checking = threading.Event()
    verify = sessions.verify_password

    def held(password_hash: str, password: str) -> bool:
        if password == PASSWORD and not release.is_set():
            checking.set()
            release.wait(30)  # the right password's check takes its time
        return verify(password_hash, password)

    monkeypatch.setattr(sessions, "verify_password", held)

    async def scenario(db: AsyncEngine) -> None:
        in_flight = asyncio.ensure_future(_code(_login(db, PASSWORD)))  # attempt 1
        assert await asyncio.to_thread(checking.wait, 30)
        for _ in range(MAX_FAILED_LOGINS - 1):  # attempts 2..5; the fifth locks
            assert await _code(_login(db, "wrong-password-1")) == "INVALID_CREDENTIALS"
        assert await _code(_login(db, "wrong-password-1")) == "ACCOUNT_LOCKED"
        release.set()
        assert await in_flight == "OK"  # its attempt was taken before the lock: it counts
        assert await _locked(db)  # ...but the lock another attempt set stands
        assert await _code(_login(db, PASSWORD)) == "ACCOUNT_LOCKED"

    _run(database_url, scenario)


def test_the_last_attempt_proving_right_lifts_its_own_lock(database_url: str) -> None:
    async def scenario(db: AsyncEngine) -> None:
        for _ in range(MAX_FAILED_LOGINS - 1):
            assert await _code(_login(db, "wrong-password-1")) == "INVALID_CREDENTIALS"
        assert await _code(_login(db, PASSWORD)) == "OK"  # the fifth attempt, right
        assert not await _locked(db)
        assert await _code(_login(db, PASSWORD)) == "OK"

    _run(database_url, scenario)
