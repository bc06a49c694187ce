"""Constraints and defaults the database itself enforces, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.store import (
    create_engine,
    login_history,
    migrate,
    one_time_tokens,
    recovery_codes,
    refresh_tokens,
    users,
)

T = TypeVar("T")


def run(url: str, body: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Migrate the database at ``url``, then run ``body`` on one connection in one
    transaction (rolled back if ``body`` raises)."""

    async def scenario() -> T:
        await migrate(url)
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                return await body(connection)
        finally:
            await engine.dispose()

    return asyncio.run(scenario())


async def add_user(connection: AsyncConnection, email: str = "alice@example.com") -> int:
    result = await connection.execute(
        users.insert()
        .values(email=email, password_hash="hash", created_at=1_700_000_000_000, updated_at=1)
        .returning(users.c.id)
    )
    return result.scalar_one()


def token(user_id: int, token_hash: str = "t1", **values: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "family_id": "family",
        "token_hash": token_hash,
        "created_at": 1,
        "expires_at": 2,
        "ip": "203.0.113.7",
        "user_agent": "test",
        **values,
    }


def test_email_is_unique(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> None:
        await add_user(connection, "alice@example.com")
        await add_user(connection, "bob@example.com")
        await add_user(connection, "alice@example.com")

    with pytest.raises(IntegrityError):
        run(database_url, body)


def test_email_must_be_stored_lower_case(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> None:
        await add_user(connection, "Alice@Example.com")

    with pytest.raises(IntegrityError):
        run(database_url, body)


def test_foreign_key_to_a_missing_user_is_rejected(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> None:
        user_id = await add_user(connection)
        await connection.execute(refresh_tokens.insert().values(token(user_id)))  # fine
        await connection.execute(refresh_tokens.insert().values(token(user_id + 1000, "t2")))

    with pytest.raises(IntegrityError):
        run(database_url, body)


def test_token_hash_is_unique(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> None:
        user_id = await add_user(connection)
        await connection.execute(refresh_tokens.insert().values(token(user_id, "same")))
        await connection.execute(refresh_tokens.insert().values(token(user_id, "same")))

    with pytest.raises(IntegrityError):
        run(database_url, body)


def test_one_time_token_purpose_is_checked(database_url: str) -> None:
    async def insert(connection: AsyncConnection, purpose: str, token_hash: str) -> None:
        user_id = await add_user(connection, f"{token_hash}@example.com")
        await connection.execute(
            one_time_tokens.insert().values(
                user_id=user_id, purpose=purpose, token_hash=token_hash, created_at=1, expires_at=2
            )
        )

    async def valid(connection: AsyncConnection) -> None:
        await insert(connection, "verify_email", "a")
        await insert(connection, "reset_password", "b")

    async def invalid(connection: AsyncConnection) -> None:
        await insert(connection, "login", "c")

    run(database_url, valid)
    with pytest.raises(IntegrityError):
        run(database_url, invalid)


def test_server_defaults(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> tuple[Any, ...]:
        user_id = await add_user(connection)
        row = (
            await connection.execute(
                sa.select(
                    users.c.role,
                    users.c.status,
                    users.c.failed_logins,
                    users.c.totp_enabled,
                    users.c.email_verified_at,
                    users.c.locked_until,
                    users.c.totp_secret_enc,
                ).where(users.c.id == user_id)
            )
        ).one()
        return tuple(row)

    assert run(database_url, body) == ("user", "active", 0, False, None, None, None)


def test_deleting_a_user_cascades_to_its_secrets_and_keeps_login_history(
    database_url: str,
) -> None:
    async def body(connection: AsyncConnection) -> tuple[int, int, list[Any]]:
        user_id = await add_user(connection)
        await connection.execute(refresh_tokens.insert().values(token(user_id)))
        await connection.execute(recovery_codes.insert().values(user_id=user_id, code_hash="c"))
        await connection.execute(
            login_history.insert().values(
                user_id=user_id,
                email="alice@example.com",
                ip="203.0.113.7",
                user_agent="test",
                success=True,
                reason="ok",
                created_at=1,
            )
        )
        await connection.execute(users.delete().where(users.c.id == user_id))
        count = sa.select(sa.func.count())
        tokens = (await connection.execute(count.select_from(refresh_tokens))).scalar_one()
        codes = (await connection.execute(count.select_from(recovery_codes))).scalar_one()
        history = (
            await connection.execute(sa.select(login_history.c.user_id, login_history.c.success))
        ).all()
        return tokens, codes, [tuple(row) for row in history]

    assert run(database_url, body) == (0, 0, [(None, True)])


def test_user_ids_are_never_reused(database_url: str) -> None:
    async def body(connection: AsyncConnection) -> tuple[int, int]:
        first = await add_user(connection, "a@example.com")
        await connection.execute(users.delete().where(users.c.id == first))
        return first, await add_user(connection, "b@example.com")

    first, second = run(database_url, body)
    assert second > first
