"""What /openapi.json says about the msgspec bodies and answers, and the error answers.

The trading and market-data routes encode with msgspec and document their bodies by
hand (``openapi_extra``, ``responses=``). Their schemas refer to
``#/components/schemas/<Name>``, and every type used is collected here so that
``document_errors`` (api/errors.py) puts its components into the document: msgspec's
own ``#/$defs/...`` references would point nowhere in an OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import msgspec

REF_TEMPLATE = "#/components/schemas/{name}"

_documented: list[Any] = []  # every msgspec type a route documents, in first-use order

# The statuses the common error body answers with, and what each means across the API.
ERROR_DESCRIPTIONS = {
    400: "Invalid request: the message names the field and what to fix",
    401: "Not signed in: no, an expired or a revoked token, or a bad signature",
    403: "Signed in but not allowed: frozen account, unverified email, key permission or IP",
    404: "No such resource (another user's is not found either); the code names what",
    409: "The resource's state does not allow it (the code says which)",
    413: "The body is over 64 KiB",
    415: "The body is not sent as Content-Type: application/json",
    429: "Rate limited: see Retry-After",
    503: "Starting or stopping, or history catching up: retry shortly",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def schema_of(kind: Any) -> dict[str, Any]:
    """The JSON schema of ``kind`` (a msgspec struct, or a list of them) for the document,
    referring to its structs in components/schemas."""
    if kind not in _documented:
        _documented.append(kind)
    (schema,), _ = msgspec.json.schema_components([kind], ref_template=REF_TEMPLATE)
    return dict(schema)


def components() -> dict[str, Any]:
    """The components/schemas entries of every documented msgspec type."""
    _, found = msgspec.json.schema_components(_documented, ref_template=REF_TEMPLATE)
    return dict(found)


def json_body(kind: Any) -> dict[str, Any]:
    """``openapi_extra`` for a route whose handler decodes a ``kind`` JSON body itself."""
    content = {"application/json": {"schema": schema_of(kind)}}
    return {"requestBody": {"required": True, "content": content}}


def json_response(kind: Any, status: int, description: str) -> dict[int | str, Any]:
    content = {"application/json": {"schema": schema_of(kind)}}
    return {status: {"description": description, "content": content}}


# The Binance dialect's refusals (docs/binance.md): Binance's statuses, Binance's body.
BINANCE_ERROR_DESCRIPTIONS = {
    400: "Refused: Binance's code and message (docs/binance.md, Errors)",
    401: "Bad or missing API key, IP or permission (-2014, -2015)",
    403: "Refused by the web application firewall",
    404: "No such path",
    409: "A cancelReplace whose cancel or new order failed (-2021)",
    418: "Banned after repeated rate limit violations",
    429: "Over a request weight or order count: see Retry-After (-1003, -1015)",
    500: "Internal error",
    503: "Starting, stopping or overloaded (-1008, -1016)",
}


def error_response(status: int, schema: str = "Error") -> dict[str, Any]:
    """The documented answer for ``status``: the native error body, or Binance's for the
    Binance dialect's operations (``schema="BinanceError"``)."""
    binance = schema == "BinanceError"
    answer: dict[str, Any] = {
        "description": (BINANCE_ERROR_DESCRIPTIONS if binance else ERROR_DESCRIPTIONS)[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if status == 429:
        answer["headers"] = RETRY_AFTER
    return answer


def errors(*statuses: int) -> dict[int | str, Any]:
    """``responses=`` entries for the error answers a route gives besides the common ones
    (api/errors.py adds 400, 429 and the ones that follow from the operation's shape)."""
    return {status: error_response(status) for status in statuses}


# The error answers of an authenticated route: 401 and, for a frozen account, an
# unverified email (order entry) or an API key's permission and allowlist, 403.
SIGNED_IN = (401, 403)
