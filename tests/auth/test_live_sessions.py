"""The live-session cache that spares the order path a database read per request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth import sessions
from mercato.auth.errors import AuthError
from mercato.auth.sessions import Client, LiveSessions, Standing, authenticate, login, logout
from mercato.auth.users import create_user
from mercato.store import create_engine, migrate

PASSWORD = "correct-horse-9"
JWT_KEY = b"j" * 32
MASTER_KEY = bytes(range(32))
CLIENT = Client("127.0.0.1", "pytest")
ANN = Standing(1, "user", "active")


def test_a_remembered_session_is_live_until_it_ages_out() -> None:
    cache = LiveSessions(seconds=0.05)
    cache.remember("s1", cache.generation, ANN)
    assert cache.is_live("s1") and not cache.is_live("s2")
    time.sleep(0.06)
    assert not cache.is_live("s1")  # re-checked against the database from now on


def test_a_revocation_voids_every_entry_at_once() -> None:
    cache = LiveSessions()
    cache.remember("s1", cache.generation, ANN)
    cache.revoked()
    assert not cache.is_live("s1")


def test_a_lookup_that_began_before_a_revocation_is_not_trusted() -> None:
    cache = LiveSessions()
    began = cache.generation  # a request reads the session row...
    cache.revoked()  # ...a logout commits meanwhile...
    cache.remember("s1", began, ANN)  # ...and the stale read is stored afterwards
    assert not cache.is_live("s1")


def test_the_cache_is_bounded() -> None:
    cache = LiveSessions(capacity=10)
    for index in range(25):
        cache.remember(f"s{index}", cache.generation, ANN)
    assert cache.is_live("s24") and not cache.is_live("s0")


def test_a_verified_token_is_cached_until_it_expires() -> None:
    key = b"k" * 32
    token = jwt.encode({"sub": "7", "role": "user", "sid": "s7", "typ": "access",
                        "exp": int(time.time()) + 60}, key, algorithm="HS256")  # fmt: skip
    assert sessions._verified(key, token).user_id == 7
    assert (token, key) in sessions._VERIFIED
    with pytest.raises(AuthError) as other_key:  # the cache is per key: no bypass
        sessions._verified(b"x" * 32, token)
    assert other_key.value.code == "UNAUTHORIZED"
    principal, _ = sessions._VERIFIED[(token, key)]
    sessions._VERIFIED[(token, key)] = (principal, time.time() - 1)  # its exp has passed
    with pytest.raises(AuthError) as expired:
        sessions._verified(key, token)
    assert expired.value.code == "TOKEN_EXPIRED"


def _counting_session_lookups(db: AsyncEngine) -> list[str]:
    """Every statement ``db`` sends that reads the refresh_tokens table."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM refresh_tokens" in statement and statement.lstrip().startswith("SELECT"):
            seen.append(statement)

    event.listen(db.sync_engine, "before_cursor_execute", record)
    return seen


def test_concurrent_requests_of_a_stale_session_share_one_lookup(database_url: str) -> None:
    async def scenario() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            await create_user(db, "ann@example.com", PASSWORD, verified=True)
            tokens = await login(db, JWT_KEY, "ann@example.com", PASSWORD, CLIENT,
                                 master_key=MASTER_KEY)  # fmt: skip
            lookups = _counting_session_lookups(db)
            sessions.LIVE_SESSIONS.revoked()  # forget what login may have cached
            principals = await asyncio.gather(
                *(authenticate(db, JWT_KEY, tokens.access_token) for _ in range(20))
            )
            assert {p.user_id for p in principals} == {principals[0].user_id}
            assert len(lookups) == 1  # not one per request
            await authenticate(db, JWT_KEY, tokens.access_token)
            assert len(lookups) == 1  # trusted for a while now

            # A request that follows a logout never joins a lookup begun before it.
            sessions.LIVE_SESSIONS.revoked()
            before_logout = asyncio.ensure_future(authenticate(db, JWT_KEY, tokens.access_token))
            await asyncio.sleep(0)  # its lookup is under way
            await logout(db, principals[0])  # commits, then bumps the generation
            with pytest.raises(AuthError) as refused:
                await authenticate(db, JWT_KEY, tokens.access_token)
            assert refused.value.code == "SESSION_REVOKED"
            with contextlib.suppress(AuthError):
                await before_logout  # either answer is right for a request that raced it
        finally:
            await db.dispose()

    asyncio.run(scenario())
