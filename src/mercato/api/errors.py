"""One error body everywhere: ``{"code": ..., "message": ...}`` (codes in docs/errors.md)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mercato.api.ratelimit import RateLimited
from mercato.auth.passwords import PasswordPolicyError
from mercato.auth.sessions import AuthError
from mercato.auth.users import UserError
from mercato.journal import CommandEncodeError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "INVALID_REQUEST",  # e.g. a body that is not UTF-8, or JSON nested too deep
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    503: "NOT_READY",
}


# Stable codes of the domain errors that are not a 400.
USER_ERROR_STATUS = {
    "EMAIL_TAKEN": 409,
    "INVALID_CREDENTIALS": 401,
    "TOTP_ALREADY_ENABLED": 409,
    "UNKNOWN_API_KEY": 404,
}


class ApiError(Exception):
    """An error with a stable code; raising it answers ``status`` with the error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message)

    # Domain errors carry their own stable code; they are mapped here, once, for every route.
    @app.exception_handler(AuthError)
    async def auth_error(request: Request, error: AuthError) -> JSONResponse:
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        return error_response(USER_ERROR_STATUS.get(error.code, 400), error.code, error.message)

    @app.exception_handler(PasswordPolicyError)
    async def weak_password(request: Request, error: PasswordPolicyError) -> JSONResponse:
        return error_response(400, "WEAK_PASSWORD", str(error))

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, error: RateLimited) -> JSONResponse:
        response = error_response(429, error.code, error.message)
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(CommandEncodeError)
    async def unencodable(request: Request, error: CommandEncodeError) -> JSONResponse:
        # A number past what the journal can hold (64 bits): refused before sequencing.
        return error_response(400, "INVALID_REQUEST", "a number in the request is out of range")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "HTTP_ERROR")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, "INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error; it has been logged")


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": False,
}
COMMON_ERRORS = {
    "400": "Invalid request: the message names the field and what to fix",
    "429": "Rate limited: see Retry-After",
}


def document_errors(app: FastAPI) -> None:
    """Make /openapi.json say what the server does: errors are 4xx with the common body,
    never FastAPI's 422 validation shape (the handlers above answer 400 instead)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in COMMON_ERRORS.items():
                    responses.setdefault(status, {"description": description, "content": error})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
