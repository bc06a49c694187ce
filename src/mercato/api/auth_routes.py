"""`/api/v1/auth`: registration and email verification (sessions and 2FA come next)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from mercato.api.errors import ApiError
from mercato.auth.accounts import register, verify_email
from mercato.auth.passwords import PasswordPolicyError
from mercato.auth.users import UserError
from mercato.service import ExchangeService

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

USER_ERROR_STATUS = {"EMAIL_TAKEN": 409}


class _Body(BaseModel):
    # Unknown fields and type coercion are refused: what a client sends is what it means.
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(_Body):
    email: str = Field(max_length=254, examples=["ann@example.com"])
    password: str = Field(max_length=128, examples=["correct-horse-9"])


class RegisteredUser(BaseModel):
    user_id: int
    email: str
    email_verified: bool


class VerifyEmailBody(_Body):
    token: str = Field(min_length=1, max_length=128)


class Verified(BaseModel):
    user_id: int
    email_verified: bool


def _service(request: Request) -> ExchangeService:
    service: ExchangeService = request.app.state.service
    if not service.ready or service.database is None or service.mailer is None:
        raise ApiError(503, "NOT_READY", "the exchange is starting or stopping; retry shortly")
    return service


def _as_api_error(error: UserError | PasswordPolicyError) -> ApiError:
    if isinstance(error, PasswordPolicyError):
        return ApiError(400, "WEAK_PASSWORD", str(error))
    return ApiError(USER_ERROR_STATUS.get(error.code, 400), error.code, error.message)


@router.post("/register", status_code=201, response_model=RegisteredUser)
async def register_route(body: RegisterBody, request: Request) -> RegisteredUser:
    """Create an account; a verification token is mailed to the address. Unverified
    accounts cannot trade or withdraw."""
    service = _service(request)
    assert service.database is not None and service.mailer is not None
    try:
        user = await register(service.database, service.mailer, body.email, body.password)
    except (UserError, PasswordPolicyError) as error:
        raise _as_api_error(error) from None
    return RegisteredUser(user_id=user.id, email=user.email, email_verified=False)


@router.post("/verify-email", response_model=Verified)
async def verify_email_route(body: VerifyEmailBody, request: Request) -> Verified:
    """Confirm an address with the token from the verification mail (works once)."""
    service = _service(request)
    assert service.database is not None
    try:
        user_id = await verify_email(service.database, body.token)
    except UserError as error:
        raise _as_api_error(error) from None
    return Verified(user_id=user_id, email_verified=True)
