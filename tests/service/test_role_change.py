"""A role change reaches the principal of a live session within the bound of a revocation:
at once in the process that made it, within the 2 s trust window when the operator's CLI
(another process) made it. The principal's role is the store's, not the access token's."""

from __future__ import annotations

import asyncio
import time

from mercato.auth.sessions import LIVE_SESSIONS, Client, authenticate, login
from mercato.auth.standing import set_role
from mercato.store import create_engine
from service.conftest import Backend
from service.test_sessions import PASSWORD, create_user
from service.test_standing import admin

JWT_KEY = b"j" * 32
MASTER_KEY = bytes(range(32))


def test_a_demoted_operator_loses_the_role_within_the_bound(backend: Backend) -> None:
    create_user(backend.data, "boss@example.com", backend.env.get("DATABASE_URL"))
    admin(backend, "set-role", "boss@example.com", "admin")

    async def scenario() -> None:
        db = create_engine(backend.url)
        try:
            tokens = await login(db, JWT_KEY, "boss@example.com", PASSWORD,
                                 Client("127.0.0.1", "pytest"), master_key=MASTER_KEY)  # fmt: skip
            assert (await authenticate(db, JWT_KEY, tokens.access_token)).role == "admin"
            await set_role(db, "boss@example.com", "user")  # in this process: at once
            assert (await authenticate(db, JWT_KEY, tokens.access_token)).role == "user"

            await set_role(db, "boss@example.com", "admin")
            assert (await authenticate(db, JWT_KEY, tokens.access_token)).role == "admin"
            await asyncio.to_thread(admin, backend, "set-role", "boss@example.com", "user")
            changed_at = time.monotonic()
            while (await authenticate(db, JWT_KEY, tokens.access_token)).role != "user":
                assert time.monotonic() - changed_at <= LIVE_SESSIONS.seconds + 1
                await asyncio.sleep(0.1)
        finally:
            await db.dispose()

    asyncio.run(scenario())
