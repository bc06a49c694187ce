"""Coded errors carry a protocol-neutral kind; api/errors.py alone turns it into a status."""

from __future__ import annotations

import pytest

from mercato.api.errors import HTTP_STATUS_OF_KIND, ApiError, http_status
from mercato.api.ratelimit import RateLimited
from mercato.auth.errors import AuthError
from mercato.auth.passwords import PasswordPolicyError
from mercato.auth.users import UserError
from mercato.config import RateBudget
from mercato.core.errors import CodedError, ErrorKind
from mercato.core.money import MoneyError
from mercato.core.results import Rejection


def test_every_kind_has_an_http_status() -> None:
    assert set(HTTP_STATUS_OF_KIND) == set(ErrorKind)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MoneyError("INVALID_DECIMAL", "x"), 400),
        (Rejection("UNKNOWN_MARKET", "x"), 400),
        (UserError("EMAIL_TAKEN", "x", ErrorKind.CONFLICT), 409),
        (AuthError("TOKEN_EXPIRED", "x"), 401),
        (AuthError("USER_FROZEN", "x", kind=ErrorKind.FORBIDDEN), 403),
        (PasswordPolicyError("too short"), 400),
        (RateLimited("per IP", RateBudget(per_second=1.0, burst=1), 0.2), 429),
        (ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "x"), 415),
    ],
)
def test_each_error_shape_is_a_coded_error_with_its_status(error: CodedError, status: int) -> None:
    assert isinstance(error, CodedError)
    assert error.code and error.message
    assert http_status(error) == status
