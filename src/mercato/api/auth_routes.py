"""`/api/v1/auth`: registration, email verification, login and sessions (2FA comes next)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors
from mercato.api.ratelimit import RateLimiter
from mercato.auth.accounts import register, request_password_reset, reset_password, verify_email
from mercato.auth.api_keys import authenticate_signed
from mercato.auth.sessions import (
    Client,
    Principal,
    Tokens,
    authenticate,
    login,
    logout,
    logout_everywhere,
    refresh,
)
from mercato.service import ExchangeService

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class StrictBody(BaseModel):
    # Unknown fields and type coercion are refused: what a client sends is what it means.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL: refuse it here (400), not in the store (500).
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise ValueError("must not contain NUL characters")
        return value


class RegisterBody(StrictBody):
    email: str = Field(max_length=254, examples=["ann@example.com"])
    password: str = Field(max_length=128, examples=["correct-horse-9"])


class RegisteredUser(BaseModel):
    user_id: int
    email: str
    email_verified: bool


class VerifyEmailBody(StrictBody):
    token: str = Field(min_length=1, max_length=128)


class Verified(BaseModel):
    user_id: int
    email_verified: bool


def service_of(request: Request) -> ExchangeService:
    service: ExchangeService = request.app.state.service
    if not service.ready or service.database is None or service.mailer is None:
        raise ApiError(503, "NOT_READY", "the exchange is starting or stopping; retry shortly")
    return service


@router.post("/register", status_code=201, response_model=RegisteredUser, responses=errors(409))
async def register_route(body: RegisterBody, request: Request) -> RegisteredUser:
    """Create an account; a verification token is mailed to the address. Unverified
    accounts cannot trade or withdraw."""
    service = service_of(request)
    assert service.database is not None and service.mailer is not None
    user = await register(service.database, service.mailer, body.email, body.password)
    return RegisteredUser(user_id=user.id, email=user.email, email_verified=False)


@router.post("/verify-email", response_model=Verified)
async def verify_email_route(body: VerifyEmailBody, request: Request) -> Verified:
    """Confirm an address with the token from the verification mail (works once)."""
    service = service_of(request)
    assert service.database is not None
    user_id = await verify_email(service.database, body.token)
    return Verified(user_id=user_id, email_verified=True)


class LoginBody(StrictBody):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)
    totp_code: str | None = Field(
        default=None, max_length=32, description="2FA code or a recovery code, when 2FA is on"
    )


class RefreshBody(StrictBody):
    refresh_token: str = Field(min_length=1, max_length=128)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str


def _client(request: Request) -> Client:
    host = request.client.host if request.client else ""
    return Client(host, request.headers.get("user-agent", "")[:256])


def _pair(tokens: Tokens) -> TokenPair:
    return TokenPair(**msgspec.structs.asdict(tokens))


def _keys(service: ExchangeService) -> bytes:
    assert service.secrets is not None
    return service.secrets.jwt_key


@router.post("/login", response_model=TokenPair, responses=errors(401, 403))
async def login_route(body: LoginBody, request: Request) -> TokenPair:
    """Exchange email and password for a 15-minute access token and a refresh token.
    Five wrong passwords in a row lock the account for 15 minutes."""
    service = service_of(request)
    assert service.database is not None
    assert service.secrets is not None
    tokens = await login(service.database, _keys(service), body.email, body.password,
                         _client(request), master_key=service.secrets.master_key,
                         totp_code=body.totp_code)  # fmt: skip
    return _pair(tokens)


@router.post("/refresh", response_model=TokenPair, responses=errors(401))
async def refresh_route(body: RefreshBody, request: Request) -> TokenPair:
    """Spend a refresh token for a new pair. Using one twice revokes the session."""
    service = service_of(request)
    assert service.database is not None
    tokens = await refresh(service.database, _keys(service), body.refresh_token,
                           _client(request))  # fmt: skip
    return _pair(tokens)


async def _bearer(request: Request, service: ExchangeService) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "UNAUTHORIZED", "send Authorization: Bearer <access token>, or a signed request"
        )
    return await authenticate(service.reader(), _keys(service), token.strip())


async def _signed(request: Request, service: ExchangeService, key_id: str,
                  params: dict[str, str] | None) -> Principal:  # fmt: skip
    assert service.secrets is not None
    content_type = request.headers.get("content-type", "")
    return await authenticate_signed(
        service.reader(), service.secrets.master_key, key_id,
        request.scope["query_string"], await request.body(),
        request.client.host if request.client else "",
        content_type.startswith("application/x-www-form-urlencoded"), params,
    )  # fmt: skip


async def _spend(request: Request, caller: Principal) -> Principal:
    """Take a token from the caller's account budget (shared by its sessions and keys)."""
    limiter: RateLimiter = request.app.state.limiter
    await limiter.check("account", str(caller.user_id), "for this account")
    return caller


async def caller_with(request: Request, permission: str,
                      params: dict[str, str] | None = None) -> Principal:  # fmt: skip
    """A bearer session, or an API key holding ``permission`` that signs the request
    (``X-MBX-APIKEY`` + ``timestamp`` + ``signature``); its account budget is charged.
    ``params``: the signed request's fields, if the caller has parsed them already."""
    service = service_of(request)
    key_id = request.headers.get("x-mbx-apikey")
    if key_id is None:
        return await _spend(request, await _bearer(request, service))
    caller = await _signed(request, service, key_id, params)
    if permission not in caller.permissions:
        raise ApiError(403, "MISSING_PERMISSION", f"this API key lacks the {permission} permission")
    return await _spend(request, caller)


async def principal(request: Request) -> Principal:
    """The caller of a read endpoint: a session, or a key with ``read``."""
    return await caller_with(request, "read")


async def session_principal(request: Request) -> Principal:
    """The caller of an account-changing endpoint: a login session only, never a key."""
    return await _spend(request, await _bearer(request, service_of(request)))


Caller = Annotated[Principal, Depends(principal)]
SessionCaller = Annotated[Principal, Depends(session_principal)]


@router.post("/logout", status_code=204, responses=errors(*SIGNED_IN))
async def logout_route(caller: SessionCaller, request: Request) -> None:
    """End this session (its refresh tokens and, at once, its access tokens)."""
    service = service_of(request)
    assert service.database is not None
    await logout(service.database, caller)


@router.post("/logout-everywhere", status_code=204, responses=errors(*SIGNED_IN))
async def logout_everywhere_route(caller: SessionCaller, request: Request) -> None:
    """End every session of the caller."""
    service = service_of(request)
    assert service.database is not None
    await logout_everywhere(service.database, caller)


class ResetRequestBody(StrictBody):
    email: str = Field(max_length=254)


class ResetConfirmBody(StrictBody):
    token: str = Field(min_length=1, max_length=128)
    new_password: str = Field(max_length=128)


class Accepted(BaseModel):
    status: str


@router.post("/password-reset/request", status_code=202, response_model=Accepted)
async def reset_request_route(body: ResetRequestBody, request: Request) -> Accepted:
    """Mail a reset token if the address has an account. The answer is the same either
    way, so it does not reveal who has an account."""
    service = service_of(request)
    assert service.database is not None and service.mailer is not None
    await request_password_reset(service.database, service.mailer, body.email)
    return Accepted(status="if the address has an account, a reset token was mailed to it")


@router.post("/password-reset/confirm", status_code=204)
async def reset_confirm_route(body: ResetConfirmBody, request: Request) -> None:
    """Set a new password with the mailed token; every session of the account ends."""
    service = service_of(request)
    assert service.database is not None
    await reset_password(service.database, body.token, body.new_password)
