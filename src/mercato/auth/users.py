"""User records in the SQL store: creation, listing, email addresses, standing refusals."""

from __future__ import annotations

import time

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.errors import AuthError
from mercato.auth.passwords import check_policy, hash_password
from mercato.store.tables import users

ROLES = ("user", "admin", "superadmin")
# A user's standing besides the role: only an active user may use any credential.
STATUSES = ("active", "frozen", "deleted")
MAX_EMAIL_LENGTH = 254


class UserError(ValueError):
    """A user operation that cannot be done; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class User(msgspec.Struct, frozen=True):
    id: int
    email: str
    role: str
    status: str
    verified: bool
    created_at: int


def normalize_email(email: str) -> str:
    """Trimmed and lower-cased: addresses are unique whatever their case (every mail
    provider of note treats the local part case-insensitively)."""
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or len(address) > MAX_EMAIL_LENGTH
        or any(ch.isspace() for ch in address)
    ):
        raise UserError("INVALID_EMAIL", f"{email!r} is not an email address")
    return address


def standing_refusal(status: str) -> AuthError | None:
    """Why a user whose status is ``status`` may use no credential, or None if they may.
    A status this code does not know refuses too (fail closed)."""
    if status == "active":
        return None
    if status == "deleted":
        return AuthError(403, "USER_DELETED", "this account was deleted")
    return AuthError(403, "USER_FROZEN", "this account is frozen; contact support")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def create_user(
    db: AsyncEngine, email: str, password: str, *, role: str = "user", verified: bool = False
) -> User:
    """Create a user; ``verified`` marks the address as confirmed (operator-created users)."""
    address = normalize_email(email)
    if role not in ROLES:
        raise UserError("INVALID_ROLE", f"role must be one of {', '.join(ROLES)}")
    check_policy(password)
    now = _now_ms()
    values = {
        "email": address,
        "password_hash": hash_password(password),
        "role": role,
        "email_verified_at": now if verified else None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with db.begin() as connection:
            result = await connection.execute(insert(users).values(**values))
            user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    except IntegrityError:
        raise UserError("EMAIL_TAKEN", f"a user with {address} exists already") from None
    return User(user_id, address, role, "active", verified, now)


async def list_users(db: AsyncEngine) -> list[User]:
    async with db.connect() as connection:
        rows = await connection.execute(select(users).order_by(users.c.id))
        return [
            User(row.id, row.email, row.role, row.status, row.email_verified_at is not None,
                 row.created_at)
            for row in rows
        ]  # fmt: skip
