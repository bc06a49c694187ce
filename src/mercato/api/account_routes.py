"""`/api/v1/account`: the caller's own data (never anyone else's).

With 2FA on, the sensitive actions (password change, creating an API key, disabling 2FA)
need ``totp_code``: a current code or a recovery code (docs/accounts.md).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from mercato.api.auth_routes import Caller, SessionCaller, StrictBody, service_of
from mercato.api.openapi import SIGNED_IN, errors
from mercato.auth import api_keys, totp
from mercato.auth.accounts import change_password
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


@router.get("/me", response_model=Me, responses=errors(*SIGNED_IN))
async def me(caller: Caller, request: Request) -> Me:
    """Who the access token belongs to."""
    database = service_of(request).database
    assert database is not None
    async with database.connect() as connection:
        row = (await connection.execute(select(users).where(users.c.id == caller.user_id))).one()
    return Me(user_id=row.id, email=row.email, role=row.role,
              email_verified=row.email_verified_at is not None)  # fmt: skip


@router.get("/login-history", response_model=list[LoginEntry], responses=errors(*SIGNED_IN))
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


TOTP_CODE_DOC = "a current 2FA code or an unused recovery code; required when 2FA is on"


def totp_code_field() -> Any:
    return Field(default=None, min_length=1, max_length=32, description=TOTP_CODE_DOC)


class PasswordChangeBody(StrictBody):
    current_password: str = Field(max_length=128)
    new_password: str = Field(max_length=128)
    totp_code: str | None = totp_code_field()


@router.post("/password", status_code=204, responses=errors(*SIGNED_IN))
async def change_password_route(
    body: PasswordChangeBody, caller: SessionCaller, request: Request
) -> None:
    """Change the password (the current one is required, and ``totp_code`` when 2FA is
    on); every session ends, this one included, so the caller logs in again."""
    database = service_of(request).database
    assert database is not None
    await change_password(
        database, caller.user_id, body.current_password, body.new_password,
        master_key=_master_key(request), totp_code=body.totp_code,
    )  # fmt: skip


class TwoFactorCode(StrictBody):
    code: str = Field(min_length=1, max_length=32)


class DisableBody(StrictBody):
    totp_code: str | None = totp_code_field()
    code: str | None = Field(
        default=None, min_length=1, max_length=32, description="older name of totp_code"
    )


class Enrolment(BaseModel):
    secret: str
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


def _master_key(request: Request) -> bytes:
    secrets = service_of(request).secrets
    assert secrets is not None
    return secrets.master_key


@router.post("/2fa/enroll", response_model=Enrolment, responses=errors(*SIGNED_IN, 409))
async def enroll_route(caller: SessionCaller, request: Request) -> Enrolment:
    """Start 2FA: a TOTP secret and its otpauth:// URI for an authenticator app. Nothing
    changes at login until a code confirms it."""
    database = service_of(request).database
    assert database is not None
    secret, uri = await totp.enroll(database, _master_key(request), caller.user_id)
    return Enrolment(secret=secret, otpauth_uri=uri)


@router.post("/2fa/confirm", response_model=RecoveryCodes, responses=errors(*SIGNED_IN, 409))
async def confirm_route(
    body: TwoFactorCode, caller: SessionCaller, request: Request
) -> RecoveryCodes:
    """Turn 2FA on with a current code; returns ten one-time recovery codes, shown once."""
    database = service_of(request).database
    assert database is not None
    codes = await totp.confirm(database, _master_key(request), caller.user_id, body.code)
    return RecoveryCodes(recovery_codes=codes)


@router.post("/2fa/disable", status_code=204, responses=errors(*SIGNED_IN))
async def disable_route(body: DisableBody, caller: SessionCaller, request: Request) -> None:
    """Turn 2FA off; needs ``totp_code``: a current code or a recovery code."""
    database = service_of(request).database
    assert database is not None
    code = body.totp_code or body.code
    await totp.disable(database, _master_key(request), caller.user_id, code)


class NewApiKey(StrictBody):
    label: str = Field(min_length=1, max_length=64)
    permissions: list[str] = Field(min_length=1, max_length=3, examples=[["read", "trade"]])
    ip_allowlist: list[str] = Field(default_factory=list, max_length=20)
    totp_code: str | None = totp_code_field()


class ApiKeyOut(BaseModel):
    key_id: str
    label: str
    permissions: list[str]
    ip_allowlist: list[str]
    created_at: int


class CreatedApiKey(ApiKeyOut):
    secret: str


@router.post(
    "/api-keys", status_code=201, response_model=CreatedApiKey, responses=errors(*SIGNED_IN)
)
async def create_key_route(
    body: NewApiKey, caller: SessionCaller, request: Request
) -> CreatedApiKey:
    """Create an API key (``totp_code`` needed when 2FA is on). The secret is in this
    answer only: store it now."""
    database = service_of(request).database
    assert database is not None
    key, secret = await api_keys.create_key(
        database, _master_key(request), caller.user_id, body.label, body.permissions,
        body.ip_allowlist, totp_code=body.totp_code,
    )  # fmt: skip
    return CreatedApiKey(**msgspec.structs.asdict(key), secret=secret)


@router.get("/api-keys", response_model=list[ApiKeyOut], responses=errors(*SIGNED_IN))
async def list_keys_route(caller: Caller, request: Request) -> list[ApiKeyOut]:
    """The caller's keys, without secrets."""
    database = service_of(request).database
    assert database is not None
    keys = await api_keys.list_keys(database, caller.user_id)
    return [ApiKeyOut(**msgspec.structs.asdict(key)) for key in keys]


@router.delete("/api-keys/{key_id}", status_code=204, responses=errors(*SIGNED_IN))
async def delete_key_route(
    key_id: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],  # malformed: 400, never a lookup
    caller: SessionCaller,
    request: Request,
) -> None:
    """Delete one of the caller's keys (someone else's answers 404). No 2FA code: taking
    access away must stay quick, e.g. for a key that leaked."""
    database = service_of(request).database
    assert database is not None
    await api_keys.delete_key(database, caller.user_id, key_id)
