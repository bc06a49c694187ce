"""`/api/v1/account`: the caller's own data (never anyone else's)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from mercato.api.auth_routes import Caller, service_of
from mercato.store.tables import login_history, users

router = APIRouter(prefix="/api/v1/account", tags=["account"])


class Me(BaseModel):
    user_id: int
    email: str
    role: str
    email_verified: bool


class LoginEntry(BaseModel):
    time: int
    ip: str
    user_agent: str
    success: bool
    reason: str


@router.get("/me", response_model=Me)
async def me(caller: Caller, request: Request) -> Me:
    """Who the access token belongs to."""
    database = service_of(request).database
    assert database is not None
    async with database.connect() as connection:
        row = (await connection.execute(select(users).where(users.c.id == caller.user_id))).one()
    return Me(user_id=row.id, email=row.email, role=row.role,
              email_verified=row.email_verified_at is not None)  # fmt: skip


@router.get("/login-history", response_model=list[LoginEntry])
async def history(
    caller: Caller, request: Request, limit: int = Query(50, ge=1, le=500)
) -> list[LoginEntry]:
    """The caller's logins, newest first: time (ms), IP, user agent, outcome."""
    database = service_of(request).database
    assert database is not None
    async with database.connect() as connection:
        rows = await connection.execute(
            select(login_history)
            .where(login_history.c.user_id == caller.user_id)
            .order_by(login_history.c.id.desc())
            .limit(limit)
        )
        return [LoginEntry(time=r.created_at, ip=r.ip, user_agent=r.user_agent,
                           success=r.success, reason=r.reason) for r in rows]  # fmt: skip
