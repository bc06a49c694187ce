"""Self-service accounts: registration, email verification, password change and reset.

A one-time token is 32 random bytes (URL-safe); only its SHA-256 is stored, it works
once and expires (a day for verification, an hour for a password reset).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.mail import Mailer
from mercato.auth.passwords import check_policy, hash_password, verify_password
from mercato.auth.sessions import LIVE_SESSIONS
from mercato.auth.totp import check_second_factor
from mercato.auth.users import User, UserError, create_user, normalize_email
from mercato.core.errors import ErrorKind
from mercato.store.tables import PURPOSE_RESET_PASSWORD as RESET_PASSWORD
from mercato.store.tables import PURPOSE_VERIFY_EMAIL as VERIFY_EMAIL
from mercato.store.tables import one_time_tokens, refresh_tokens, users

VERIFY_TTL_MS = 24 * 3600 * 1000
RESET_TTL_MS = 3600 * 1000


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def issue_token(db: AsyncEngine, user_id: int, purpose: str, ttl_ms: int) -> str:
    token = secrets.token_urlsafe(32)
    now = _now_ms()
    async with db.begin() as connection:
        await connection.execute(
            one_time_tokens.insert().values(
                user_id=user_id, purpose=purpose, token_hash=_hash(token), created_at=now,
                expires_at=now + ttl_ms,
            )
        )  # fmt: skip
    return token


async def register(db: AsyncEngine, mailer: Mailer, email: str, password: str) -> User:
    """Create an unverified user and mail them a verification token."""
    user = await create_user(db, email, password)
    token = await issue_token(db, user.id, VERIFY_EMAIL, VERIFY_TTL_MS)
    await mailer.send(
        user.email,
        "Verify your Mercato email address",
        "Welcome to Mercato.\n\n"
        "To verify this address, send this token to POST /api/v1/auth/verify-email:\n\n"
        f"    {token}\n\n"
        "It works once and expires in 24 hours. If you did not register, ignore this mail.\n",
    )
    return user


async def _spend_token(connection: AsyncConnection, purpose: str, token: str, now: int) -> int:
    """Mark a live token of ``purpose`` used and return its user, or refuse."""
    spent = await connection.execute(
        update(one_time_tokens)
        .where(
            one_time_tokens.c.token_hash == _hash(token),
            one_time_tokens.c.purpose == purpose,
            one_time_tokens.c.used_at.is_(None),
            one_time_tokens.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(one_time_tokens.c.user_id)
    )
    user_id = spent.scalar_one_or_none()
    if user_id is None:
        raise UserError("INVALID_TOKEN", "the token is unknown, used or expired")
    return int(user_id)


async def verify_email(db: AsyncEngine, token: str) -> int:
    """Mark the token's user as verified; return the user id. The token is spent."""
    now = _now_ms()
    async with db.begin() as connection:
        user_id = await _spend_token(connection, VERIFY_EMAIL, token, now)
        await connection.execute(
            update(users)
            .where(users.c.id == user_id, users.c.email_verified_at.is_(None))
            .values(email_verified_at=now, updated_at=now)
        )
    return user_id


async def request_password_reset(db: AsyncEngine, mailer: Mailer, email: str) -> None:
    """Mail a reset token if the address has an account; say nothing either way."""
    try:
        address = normalize_email(email)
    except UserError:
        return
    async with db.connect() as connection:
        user_id = (
            await connection.execute(select(users.c.id).where(users.c.email == address))
        ).scalar_one_or_none()
    if user_id is None:
        return
    token = await issue_token(db, user_id, RESET_PASSWORD, RESET_TTL_MS)
    await mailer.send(
        address,
        "Reset your Mercato password",
        "Someone asked to reset the password of this Mercato account.\n\n"
        "To choose a new one, send this token with it to "
        "POST /api/v1/auth/password-reset/confirm:\n\n"
        f"    {token}\n\n"
        "It works once and expires in one hour. Every session of the account ends when\n"
        "the password changes. If you did not ask for this, ignore this mail.\n",
    )


async def _set_password(
    connection: AsyncConnection, user_id: int, password_hash: str, now: int
) -> None:
    """New password hash, failed logins forgotten, every session of the user ended."""
    await connection.execute(
        update(users).where(users.c.id == user_id).values(
            password_hash=password_hash, failed_logins=0, locked_until=None, updated_at=now,
        )
    )  # fmt: skip
    await connection.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def reset_password(db: AsyncEngine, token: str, password: str) -> int:
    check_policy(password)
    # argon2 in a thread (~0.1-0.4 s of CPU): the event loop keeps serving meanwhile.
    password_hash = await asyncio.to_thread(hash_password, password)
    now = _now_ms()
    async with db.begin() as connection:
        user_id = await _spend_token(connection, RESET_PASSWORD, token, now)
        await _set_password(connection, user_id, password_hash, now)
    LIVE_SESSIONS.revoked()
    return user_id


async def change_password(
    db: AsyncEngine, user_id: int, current: str, new: str, *, master_key: bytes,
    totp_code: str | None,
) -> None:  # fmt: skip
    """Needs the current password, and the second factor when 2FA is on (checked first,
    so a session without it learns nothing about the password); ends every session (the
    caller logs in again). A refusal changes nothing and spends no code."""
    check_policy(new)
    # argon2 in threads (~0.1-0.4 s of CPU each): the event loop keeps serving meanwhile.
    new_hash = await asyncio.to_thread(hash_password, new)
    now = _now_ms()
    async with db.begin() as connection:
        await check_second_factor(connection, master_key, user_id, totp_code)
        stored = (
            await connection.execute(select(users.c.password_hash).where(users.c.id == user_id))
        ).scalar_one()
        if not await asyncio.to_thread(verify_password, stored, current):
            raise UserError(
                "INVALID_CREDENTIALS", "the current password is wrong", ErrorKind.UNAUTHENTICATED
            )
        await _set_password(connection, user_id, new_hash, now)
    LIVE_SESSIONS.revoked()
