"""A user's standing: status (active, frozen, deleted) and role, changed by operators.

A change takes effect on every credential of the user (bearer sessions, refresh tokens,
API keys, WebSocket private channels) within the bound of a revocation: it bumps the
live-session generation once it commits, so the process that made it refuses at once,
and other processes re-read the standing with each credential's liveness within their
2 s trust window (docs/accounts.md, "Standing").
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.sessions import LIVE_SESSIONS
from mercato.auth.users import ROLES, UserError, lookup_address
from mercato.store.tables import api_keys, refresh_tokens, users


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _user_id(connection: AsyncConnection, address: str) -> int:
    """The id of the user of ``address`` if not deleted, else UNKNOWN_USER / USER_DELETED."""
    row = (
        await connection.execute(select(users.c.id, users.c.status).where(users.c.email == address))
    ).first()
    if row is None:
        raise UserError("UNKNOWN_USER", f"no user with {address}")
    if row.status == "deleted":
        raise UserError("USER_DELETED", f"{address} was deleted; its standing cannot change")
    return int(row.id)


async def _change(db: AsyncEngine, email: str, **values: str) -> None:
    address = lookup_address(email)
    async with db.begin() as connection:
        user_id = await _user_id(connection, address)
        await connection.execute(
            update(users).where(users.c.id == user_id).values(**values, updated_at=_now_ms())
        )
    LIVE_SESSIONS.revoked()


async def set_role(db: AsyncEngine, email: str, role: str) -> None:
    if role not in ROLES:
        raise UserError("INVALID_ROLE", f"role must be one of {', '.join(ROLES)}")
    await _change(db, email, role=role)


async def freeze(db: AsyncEngine, email: str) -> None:
    """Refuse every credential of the user, and logins, until ``unfreeze``. Sessions and
    keys are kept: unfreezing gives them back."""
    await _change(db, email, status="frozen")


async def unfreeze(db: AsyncEngine, email: str) -> None:
    await _change(db, email, status="active")


async def delete_user(db: AsyncEngine, email: str) -> None:
    """Disable the account for good: status ``deleted``, every session revoked, every API
    key deleted. The row stays (the engine holds the user's balances under its id, the
    history refers to it) and so does the address: it cannot be registered again."""
    address = lookup_address(email)
    now = _now_ms()
    async with db.begin() as connection:
        user_id = await _user_id(connection, address)
        await connection.execute(
            update(users).where(users.c.id == user_id).values(status="deleted", updated_at=now)
        )
        await connection.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await connection.execute(
            update(api_keys)
            .where(api_keys.c.user_id == user_id, api_keys.c.deleted_at.is_(None))
            .values(deleted_at=now)
        )
    LIVE_SESSIONS.revoked()
