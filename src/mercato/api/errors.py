"""One error body everywhere: ``{"code": ..., "message": ...}`` (codes in docs/errors.md)."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from mercato.api.openapi import components as msgspec_components
from mercato.api.openapi import error_response as documented_error
from mercato.api.ratelimit import RateLimited
from mercato.core.errors import CodedError, ErrorKind
from mercato.port import CommandEncodeError
from mercato.wire import binance

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


#: The one place where a coded error's kind (core/errors.py) becomes an HTTP status.
HTTP_STATUS_OF_KIND = {
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UNAVAILABLE: 503,
}


class ApiError(CodedError):
    """A coded error raised by the HTTP layer itself, with the status it answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def http_status(error: CodedError) -> int:
    if isinstance(error, ApiError):
        return error.status
    return HTTP_STATUS_OF_KIND[error.kind]


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    # Every domain error is a CodedError with its own stable code: mapped here, once, for
    # every route (money parsing, users, sessions, API keys, passwords, this layer's own).
    @app.exception_handler(CodedError)
    async def coded_error(request: Request, error: CodedError) -> JSONResponse:
        return error_response(http_status(error), error.code, error.message)

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
        response = error_response(error.status_code, code, str(error.detail))
        if error.headers:
            response.headers.update(error.headers)
        if error.status_code == 405:
            response.headers["Allow"] = _allowed_methods(request)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, "INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error; it has been logged")


def _allowed_methods(request: Request) -> str:
    """Every method the API takes at this path (RFC 9110 15.5.6), from the OpenAPI
    document (FastAPI's GET routes take no HEAD: it is a 405 too). Starlette's own 405
    names only the first route that matched, so GET and DELETE /orders would be missing
    from POST's; FastAPI nests included routers, so its route list is no flat answer."""
    path = request.url.path
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if _template_regex(template).match(path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


@functools.cache
def _template_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": False,
}


def implied_errors(path: str, operation: dict[str, Any]) -> list[int]:
    """The error answers that follow from an operation's shape, whatever its route says:
    any input may be invalid (400) or over a rate budget (429); the API's routes answer
    503 while the service starts or stops; a path parameter may name nothing (404); a
    JSON body may be too large (413) or not JSON (415)."""
    statuses = [400, 429]
    if path.startswith("/api/"):
        statuses.append(503)
    if "{" in path:
        statuses.append(404)
    if "requestBody" in operation:
        statuses += [413, 415]
    return statuses


def document_errors(app: FastAPI) -> None:
    """Make /openapi.json say what the server does: every error answer a route can give,
    with the common body (never FastAPI's 422 validation shape: the handlers above answer
    400 instead), and the msgspec types' schemas in components/schemas (api/openapi.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, component in msgspec_components().items():
            assert schemas.get(name, component) == component, f"two schemas named {name}"
            schemas[name] = component
        schemas["Error"] = ERROR_SCHEMA
        schemas["BinanceError"] = binance.ERROR_SCHEMA
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                if path.startswith(binance.PATH_PREFIXES):
                    for status in binance.ERROR_STATUSES:
                        responses[str(status)] = documented_error(status, "BinanceError")
                    continue
                for status in implied_errors(path, operation):
                    responses.setdefault(str(status), documented_error(status))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
