"""TOTP two-factor authentication (RFC 6238 via pyotp) and one-time recovery codes.

Enrolment stores the secret sealed with the master key; it only takes effect once a
code from the authenticator confirms it, which also issues ten recovery codes (shown
once, stored as SHA-256). When enabled, login and the sensitive account actions need a
current code or an unused recovery code (:func:`check_second_factor`,
:func:`require_second_factor`); disabling needs one too.

A TOTP code works once: the newest time step accepted for a user is stored
(``users.totp_last_step``) and a code of that step or an earlier one is refused
(``TOTP_REUSED``), as Google and Binance do. The step is advanced with a conditional
UPDATE (``WHERE totp_last_step < :step``), so two requests racing with one code cannot
both pass, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Literal

import pyotp
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.crypto import seal, unseal
from mercato.auth.errors import AuthError
from mercato.auth.users import UserError
from mercato.core.errors import ErrorKind
from mercato.store.tables import recovery_codes, users

ISSUER = "Mercato"
RECOVERY_CODES = 10
STEP_SECONDS = 30
VALID_WINDOW = 1  # accept the previous and next 30-second step (clock drift)

#: What checking a second factor found: accepted (and now spent), wrong or expired, or
#: a TOTP code of a step at or before the last one accepted.
Outcome = Literal["ok", "wrong", "reused"]


def _context(user_id: int) -> bytes:
    return f"totp:{user_id}".encode()


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _unix_time() -> float:
    """The clock TOTP steps are counted on (a function, so tests can move it)."""
    return time.time()


async def enroll(db: AsyncEngine, master_key: bytes, user_id: int) -> tuple[str, str]:
    """A new secret (base32) and its otpauth:// URI; inactive until confirmed."""
    secret = pyotp.random_base32()
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if user.totp_enabled:
            raise UserError(
                "TOTP_ALREADY_ENABLED", "2FA is enabled; disable it first", ErrorKind.CONFLICT
            )
        # A new secret starts a new sequence of codes: the old one's last step is moot.
        await connection.execute(
            update(users).where(users.c.id == user_id).values(
                totp_secret_enc=seal(master_key, secret.encode(), _context(user_id)),
                totp_last_step=0, updated_at=_now_ms(),
            )
        )  # fmt: skip
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return secret, uri


def _matching_step(master_key: bytes, user: Row[tuple[object, ...]], code: str) -> int | None:
    """The time step (within the drift window) whose code ``code`` is, or None."""
    if user.totp_secret_enc is None:
        return None
    code = code.strip()
    secret = unseal(master_key, user.totp_secret_enc, _context(user.id)).decode()
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    if len(code) != totp.digits or not code.isdigit():
        return None
    now = int(_unix_time()) // STEP_SECONDS
    steps = range(now - VALID_WINDOW, now + VALID_WINDOW + 1)
    matching = [s for s in steps if hmac.compare_digest(totp.generate_otp(s), code)]
    return max(matching, default=None)


async def _advance_step(connection: AsyncConnection, user_id: int, step: int) -> bool:
    """Record ``step`` as the newest accepted one, if it is newer than the stored one.
    One statement: of two transactions racing with one step, only one sees a row."""
    done = await connection.execute(
        update(users)
        .where(users.c.id == user_id, users.c.totp_last_step < step)
        .values(totp_last_step=step)
    )
    return bool(done.rowcount)


async def confirm(db: AsyncEngine, master_key: bytes, user_id: int, code: str) -> list[str]:
    """Turn 2FA on with a first code; return the recovery codes (never shown again). The
    confirming code is spent: it cannot be used again to log in."""
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if user.totp_enabled:
            raise UserError("TOTP_ALREADY_ENABLED", "2FA is enabled already", ErrorKind.CONFLICT)
        if user.totp_secret_enc is None:
            raise UserError("TOTP_NOT_ENROLLED", "enrol first: POST /api/v1/account/2fa/enroll")
        step = _matching_step(master_key, user, code)
        if step is None:
            raise AuthError("INVALID_TOTP", "wrong or expired code", kind=ErrorKind.INVALID)
        if not await _advance_step(connection, user_id, step):
            raise AuthError(
                "TOTP_REUSED",
                "this code was used already; wait for the next",
                kind=ErrorKind.INVALID,
            )
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


async def second_factor(
    connection: AsyncConnection, master_key: bytes, user: Row[tuple[object, ...]], code: str
) -> Outcome:
    """A TOTP code of a step after the last accepted one (which becomes the last), or an
    unused recovery code (which this spends). Changes nothing unless the outcome is "ok"."""
    step = _matching_step(master_key, user, code)
    if step is not None:
        return "ok" if await _advance_step(connection, user.id, step) else "reused"
    spent = await connection.execute(
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user.id,
            recovery_codes.c.code_hash == _hash(code),
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=_now_ms())
    )
    return "ok" if spent.rowcount else "wrong"


async def check_second_factor(
    connection: AsyncConnection, master_key: bytes, user_id: int, code: str | None
) -> None:
    """The second factor of a sensitive action, inside the action's own transaction (so
    that if the action fails afterwards, the code is not spent either).

    Nothing to check when the user has 2FA off. Otherwise ``code`` must be a current TOTP
    code not used before, or an unused recovery code, which is spent. Refusals, with
    nothing changed: ``AuthError`` 401 ``TOTP_REQUIRED`` (no code), 400 ``INVALID_TOTP``
    (wrong or expired), 400 ``TOTP_REUSED`` (a TOTP code already accepted).
    """
    user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
    if not user.totp_enabled:
        return
    if not code:
        raise AuthError(
            "TOTP_REQUIRED", "2FA is on: send totp_code (a current code or a recovery code)"
        )
    outcome = await second_factor(connection, master_key, user, code)
    if outcome == "reused":
        raise AuthError(
            "TOTP_REUSED",
            "this 2FA code was used already; wait for the next one",
            kind=ErrorKind.INVALID,
        )
    if outcome == "wrong":
        raise AuthError("INVALID_TOTP", "wrong or expired 2FA code", kind=ErrorKind.INVALID)


async def require_second_factor(
    db: AsyncEngine, master_key: bytes, user_id: int, code: str | None
) -> None:
    """:func:`check_second_factor` in a transaction of its own: the code is spent when
    this returns, whatever the caller does next. Prefer ``check_second_factor`` inside
    the action's transaction when the action can still fail."""
    async with db.begin() as connection:
        await check_second_factor(connection, master_key, user_id, code)


async def disable(db: AsyncEngine, master_key: bytes, user_id: int, code: str | None) -> None:
    """Turn 2FA off (a current code or a recovery code needed); forget the secret and the
    recovery codes."""
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.id == user_id))).one()
        if not user.totp_enabled:
            raise UserError("TOTP_NOT_ENABLED", "2FA is not enabled")
        await check_second_factor(connection, master_key, user_id, code)
        await connection.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        await connection.execute(
            update(users).where(users.c.id == user_id)
            .values(totp_enabled=False, totp_secret_enc=None, updated_at=_now_ms())
        )  # fmt: skip
