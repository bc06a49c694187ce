"""Self-service accounts: registration and email verification.

A one-time token is 32 random bytes (URL-safe); only its SHA-256 is stored, it expires
after a day and works once.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.mail import Mailer
from mercato.auth.users import User, UserError, create_user
from mercato.store.tables import PURPOSE_VERIFY_EMAIL as VERIFY_EMAIL
from mercato.store.tables import one_time_tokens, users

TOKEN_TTL_MS = 24 * 3600 * 1000


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def issue_token(db: AsyncEngine, user_id: int, purpose: str) -> str:
    token = secrets.token_urlsafe(32)
    now = _now_ms()
    async with db.begin() as connection:
        await connection.execute(
            one_time_tokens.insert().values(
                user_id=user_id, purpose=purpose, token_hash=_hash(token), created_at=now,
                expires_at=now + TOKEN_TTL_MS,
            )
        )  # fmt: skip
    return token


async def register(db: AsyncEngine, mailer: Mailer, email: str, password: str) -> User:
    """Create an unverified user and mail them a verification token."""
    user = await create_user(db, email, password)
    token = await issue_token(db, user.id, VERIFY_EMAIL)
    await mailer.send(
        user.email,
        "Verify your Mercato email address",
        "Welcome to Mercato.\n\n"
        "To verify this address, send this token to POST /api/v1/auth/verify-email:\n\n"
        f"    {token}\n\n"
        "It works once and expires in 24 hours. If you did not register, ignore this mail.\n",
    )
    return user


async def verify_email(db: AsyncEngine, token: str) -> int:
    """Mark the token's user as verified; return the user id. The token is spent."""
    now = _now_ms()
    async with db.begin() as connection:
        spent = await connection.execute(
            update(one_time_tokens)
            .where(
                one_time_tokens.c.token_hash == _hash(token),
                one_time_tokens.c.purpose == VERIFY_EMAIL,
                one_time_tokens.c.used_at.is_(None),
                one_time_tokens.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(one_time_tokens.c.user_id)
        )
        user_id = spent.scalar_one_or_none()
        if user_id is None:
            raise UserError("INVALID_TOKEN", "the token is unknown, used or expired")
        await connection.execute(
            update(users)
            .where(users.c.id == user_id, users.c.email_verified_at.is_(None))
            .values(email_verified_at=now, updated_at=now)
        )
    return int(user_id)


async def is_verified(db: AsyncEngine, user_id: int) -> bool:
    async with db.connect() as connection:
        row = await connection.execute(
            select(users.c.email_verified_at).where(users.c.id == user_id)
        )
        return row.scalar_one_or_none() is not None
