"""TOTP two-factor authentication (RFC 6238 via pyotp) and one-time recovery codes.

Enrolment stores the secret sealed with the master key; it only takes effect once a
code from the authenticator confirms it, which also issues ten recovery codes (shown
once, stored as SHA-256). When enabled, login needs a current code or an unused
recovery code; disabling needs one too.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import pyotp
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.crypto import seal, unseal
from mercato.auth.users import UserError
from mercato.store.tables import recovery_codes, users

ISSUER = "Mercato"
RECOVERY_CODES = 10
VALID_WINDOW = 1  # accept the previous and next 30-second step (clock drift)


def _context(user_id: int) -> bytes:
    return f"totp:{user_id}".encode()


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def enroll(db: AsyncEngine, master_key: bytes, user_id: int) -> tuple[str, str]:
    """A new secret (base32) and its otpauth:// URI; inactive until confirmed."""
    secret = pyotp.random_base32()
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if user.totp_enabled:
            raise UserError("TOTP_ALREADY_ENABLED", "2FA is enabled; disable it first")
        await connection.execute(
            update(users).where(users.c.id == user_id).values(
                totp_secret_enc=seal(master_key, secret.encode(), _context(user_id)),
                updated_at=_now_ms(),
            )
        )  # fmt: skip
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return secret, uri


def _code_matches(master_key: bytes, user: Row[tuple[object, ...]], code: str) -> bool:
    if user.totp_secret_enc is None:
        return False
    secret = unseal(master_key, user.totp_secret_enc, _context(user.id)).decode()
    return pyotp.TOTP(secret).verify(code.strip(), valid_window=VALID_WINDOW)


async def confirm(db: AsyncEngine, master_key: bytes, user_id: int, code: str) -> list[str]:
    """Turn 2FA on with a first code; return the recovery codes (never shown again)."""
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if user.totp_enabled:
            raise UserError("TOTP_ALREADY_ENABLED", "2FA is enabled already")
        if user.totp_secret_enc is None:
            raise UserError("TOTP_NOT_ENROLLED", "enrol first: POST /api/v1/account/2fa/enroll")
        if not _code_matches(master_key, user, code):
            raise UserError("INVALID_TOTP", "wrong or expired code")
        codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODES)]
        await connection.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        await connection.execute(
            insert(recovery_codes),
            [{"user_id": user_id, "code_hash": _hash(c)} for c in codes],
        )
        await connection.execute(
            update(users).where(users.c.id == user_id)
            .values(totp_enabled=True, updated_at=_now_ms())
        )  # fmt: skip
    return codes


async def second_factor_ok(
    connection: AsyncConnection, master_key: bytes, user: Row[tuple[object, ...]], code: str
) -> bool:
    """A current TOTP code, or an unused recovery code (which this spends)."""
    if _code_matches(master_key, user, code):
        return True
    spent = await connection.execute(
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user.id,
            recovery_codes.c.code_hash == _hash(code),
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=_now_ms())
    )
    return bool(spent.rowcount)


async def disable(db: AsyncEngine, master_key: bytes, user_id: int, code: str) -> None:
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if not user.totp_enabled:
            raise UserError("TOTP_NOT_ENABLED", "2FA is not enabled")
        if not await second_factor_ok(connection, master_key, user, code):
            raise UserError("INVALID_TOTP", "wrong or expired code")
        await connection.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        await connection.execute(
            update(users).where(users.c.id == user_id)
            .values(totp_enabled=False, totp_secret_enc=None, updated_at=_now_ms())
        )  # fmt: skip
