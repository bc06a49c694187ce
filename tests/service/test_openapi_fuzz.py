"""Schemathesis fuzzes every operation of a real server's own /openapi.json.

The server runs as operators run it (``mercato serve --dev``, on SQLite and on
PostgreSQL). Two users are registered, verified (with the token from the outbox) and
logged in, so the authenticated operations are reached with a bearer token, not only
refused; the first is funded by the dev faucet, so its orders reach the engine. Schemathesis
then sends valid and invalid inputs (its positive and negative modes) to every operation,
a bounded number per operation, and every answer must conform to the document and hold
to docs/errors.md:

- Schemathesis' checks (``CHECKS``): never a 5xx, a status, content type, headers and
  body that the document declares for the operation, invalid inputs refused with a 4xx
  (``negative_data_rejection``), and, for the reads, valid inputs accepted
  (``positive_data_acceptance``; see ``checks_for`` for why not for the writes);
- every answer that is not a 2xx is JSON with exactly ``{"code": str, "message": str}``;
  on the Binance dialect's paths (``BINANCE_PATHS``, docs/binance.md) Binance's own
  ``{"code": negative int, "msg": str}``. A 429 (rate limits) is an allowed answer like
  any other 4xx, with that same body.

Operations that end the caller's session (logout, logout-everywhere, password change) get
the second user's session, logged in again after any 2xx: logout-everywhere ends every
session of a user, and the first user's token must stay good for the rest of the run.

The pytest plugin's ``schemathesis.pytest.from_fixture`` is not used: it relies on a
private pytest attribute that pytest 9.2 removed. The operations' Hypothesis strategies
(``APIOperation.as_strategy``) are public and do the same generation; ``bench/fuzz_api.py``
runs the Schemathesis command line (with its coverage phase) for a bigger run.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    CheckFunction,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mercato.config import Config
from service.conftest import Backend, Server
from service.test_sessions import bearer

# Cases per operation and generation mode. ~41 operations x 2 modes x 2 backends: the
# whole test takes about a minute. Raise it locally for a deeper run (or bench/fuzz_api.py).
MAX_EXAMPLES = 25
TIMEOUT = 5.0
TOKEN_LINE = re.compile(r"^ {4}(\S+)\r?$", re.MULTILINE)
SESSION_ENDING = frozenset(
    {
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/logout-everywhere"),
        ("POST", "/api/v1/account/password"),
    }
)


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def checks_for(operation: APIOperation) -> list[CheckFunction]:
    """The checks of ``operation``'s answers. Valid data must be accepted by the reads
    only: a write's schema cannot say which inputs the business rules take (a price on the
    market's tick, a balance that covers the order, a 2FA code that is current, a token
    that was mailed, a password the policy accepts), so schema-valid writes are refused
    with a 400 that names the rule, as they should be."""
    if operation.path.startswith(BINANCE_PATHS):
        # Binance's parameters are Binance's (docs/binance.md), read from the query and
        # the form body by the dialect, not declared in this document: schemathesis
        # cannot generate a valid request, only check that each answer is well formed.
        return CHECKS
    if operation.method.upper() == "GET" and operation.path not in CROSS_PARAMETER_RULES:
        return [*CHECKS, positive_data_acceptance]
    return CHECKS


# The Binance-compatible dialect's paths: its refusals are Binance's error body.
BINANCE_PATHS = ("/api/v3/", "/sapi/", "/fapi/", "/dapi/")


# Reads with a rule across parameters that a schema cannot state: candles' ``start``
# after ``end`` is a 400 (docs/errors.md).
CROSS_PARAMETER_RULES = frozenset({"/api/v1/markets/{symbol}/candles"})


@dataclass
class User:
    email: str
    password: str = field(default_factory=lambda: f"fuzz-{secrets.token_hex(12)}")
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Target:
    server: Server
    main: User  # the session of every operation but the session-ending ones
    ending: User  # the session the session-ending operations may end
    ending_stale: bool = False
    session: requests.Session = field(default_factory=requests.Session)  # keep-alive
    broken: str = ""  # set when the server stopped answering: no point sending more

    def login(self, user: User) -> None:
        body = {"email": user.email, "password": user.password}
        answer = httpx.post(f"{self.server.url}/api/v1/auth/login", json=body, timeout=TIMEOUT)
        if answer.status_code == 200:  # on a 429 the old token stays: a 401, not a failure
            user.headers = bearer(answer.json()["access_token"])

    def headers_for(self, method: str, path: str) -> dict[str, str]:
        if (method, path) not in SESSION_ENDING:
            return self.main.headers
        if self.ending_stale:
            self.login(self.ending)
            self.ending_stale = False
        return self.ending.headers


def _config_without_rate_limits(directory: Path) -> list[str]:
    """``--config`` turning rate limits off, once the server has them: the fuzzer sends
    requests faster than any budget allows, and answers that are all 429 would test
    nothing else (the limits have their own tests)."""
    if "rate_limits" not in Config.__struct_fields__:
        return []
    path = directory / "fuzz.toml"
    path.write_text("[rate_limits]\nenabled = false\n")
    return ["--config", str(path)]


def _sign_up(server: Server, backend: Backend, user: User) -> None:
    auth = f"{server.url}/api/v1/auth"
    body = {"email": user.email, "password": user.password}
    created = httpx.post(f"{auth}/register", json=body, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    ((mail,),) = backend.rows("select body from email_outbox where to_address = :to", to=user.email)
    match = TOKEN_LINE.search(mail)
    assert match is not None, mail
    verified = httpx.post(f"{auth}/verify-email", json={"token": match.group(1)}, timeout=TIMEOUT)
    assert verified.status_code == 200, verified.text


@pytest.fixture
def target(backend: Backend, servers: list[Server]) -> Iterator[Target]:
    server = Server(
        backend.data, backend.env, "--dev", *_config_without_rate_limits(backend.data.parent)
    )
    servers.append(server)
    server.wait_ready()
    fuzzed = Target(server, User("fuzz-main@mercato.test"), User("fuzz-ending@mercato.test"))
    for user in (fuzzed.main, fuzzed.ending):
        _sign_up(server, backend, user)
        fuzzed.login(user)
        assert user.headers, f"{user.email} could not log in"
    for asset, amount in (("USDT", "1000000"), ("BTC", "1000")):
        funded = httpx.post(f"{server.url}/api/v1/dev/faucet", headers=fuzzed.main.headers,
                            json={"asset": asset, "amount": amount}, timeout=TIMEOUT)  # fmt: skip
        assert funded.status_code == 200, funded.text
    yield fuzzed
    assert server.stop() == 0


def check_answer(where: str, status: int, content_type: str, content: bytes,
                 path: str = "") -> None:  # fmt: skip
    where = f"{where} -> {status}: {content[:300]!r}"
    assert status < 500, where
    if 200 <= status < 300:
        return
    assert content_type.startswith("application/json"), where
    body = json.loads(content)
    if path.startswith(BINANCE_PATHS):
        assert isinstance(body, dict) and set(body) == {"code", "msg"}, where
        assert isinstance(body["code"], int) and body["code"] < 0, where
        assert isinstance(body["msg"], str) and body["msg"], where
        return
    assert isinstance(body, dict) and set(body) == {"code", "message"}, where
    assert isinstance(body["code"], str) and body["code"], where
    assert isinstance(body["message"], str) and body["message"], where


def fuzz(operation: APIOperation, mode: GenerationMode, target: Target) -> None:
    """Up to MAX_EXAMPLES cases of ``operation`` in ``mode``; a bad answer raises (after
    Hypothesis shrank its input)."""
    key = (operation.method.upper(), operation.path)
    checks = checks_for(operation)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # the nested tests would share one key; a failure prints its input
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if target.broken:
            return  # shrinking against a server that stopped answering only takes time
        try:
            response = case.call(
                session=target.session, headers=target.headers_for(*key), timeout=TIMEOUT
            )
        except requests.RequestException as error:
            target.broken = f"{case.as_curl_command()}: {type(error).__name__}: {error}"
            return
        if key in SESSION_ENDING and response.status_code < 300:
            target.ending_stale = True
        content_type = response.headers.get("content-type", [""])[0]
        where = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r:.200}"
        check_answer(where, response.status_code, content_type, response.content, case.path)
        try:
            case.validate_response(response, checks=checks)
        except BaseExceptionGroup as failures:  # Schemathesis' FailureGroup of its checks
            raise AssertionError(f"{where}:\n{failures}") from None

    run()


# Inputs the generator finds only now and then, checked every run: NUL, which PostgreSQL
# text cannot hold (once a 500 from register, login, password-reset/request, api-keys and
# DELETE api-keys/{key_id}), a body that is not UTF-8, and JSON nested too deep to parse
# (once 400 BAD_REQUEST, a code docs/errors.md does not have).
NUL, AUTH, ACCOUNT = "\x00", "/api/v1/auth", "/api/v1/account"
PASSWORD = "correct-horse-9"
PROBES: list[tuple[str, str, object]] = [
    ("POST", f"{AUTH}/register", {"email": f"a{NUL}@example.com", "password": PASSWORD}),
    ("POST", f"{AUTH}/login", {"email": f"a{NUL}@example.com", "password": PASSWORD}),
    ("POST", f"{AUTH}/login", {"email": "x@example.com", "password": NUL, "totp_code": NUL}),
    ("POST", f"{AUTH}/password-reset/request", {"email": f"a{NUL}@example.com"}),
    ("POST", f"{AUTH}/password-reset/confirm", {"token": NUL, "new_password": PASSWORD + NUL}),
    ("POST", f"{AUTH}/verify-email", {"token": NUL}),
    ("POST", f"{AUTH}/refresh", {"refresh_token": NUL}),
    ("POST", f"{ACCOUNT}/api-keys", {"label": NUL, "permissions": ["read"]}),
    ("POST", f"{ACCOUNT}/api-keys", {"label": "x", "permissions": ["read"], "ip_allowlist": [NUL]}),
    ("POST", f"{ACCOUNT}/password", {"current_password": NUL, "new_password": NUL}),
    ("POST", f"{ACCOUNT}/2fa/confirm", {"code": NUL}),
    ("DELETE", f"{ACCOUNT}/api-keys/%00", None),
    ("DELETE", f"{ACCOUNT}/api-keys/{'f' * 64}", None),
    ("POST", f"{AUTH}/login", b'{"email": "\xff", "password": "x"}'),
    ("POST", f"{AUTH}/login", b"[" * 10_000 + b"]" * 10_000),
    ("POST", f"{AUTH}/login", b'{"email": "\\ud800@example.com", "password": "x"}'),
]


def refs_in(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def check_document(document: dict[str, Any]) -> None:
    """Every reference resolves (msgspec's ``#/$defs/...`` once pointed nowhere, and
    Schemathesis only warns about those), and lists are documented as arrays."""
    schemas = document["components"]["schemas"]
    refs = set(refs_in(document))
    assert {"#/components/schemas/OrderView", "#/components/schemas/LedgerEntry"} <= refs
    unresolved = {r for r in refs if r.rpartition("/")[2] not in schemas or
                  not r.startswith("#/components/schemas/")}  # fmt: skip
    assert not unresolved, unresolved
    for path in ("/api/v1/balances", "/api/v1/orders", "/api/v1/portfolio"):
        answer = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert answer["application/json"]["schema"]["type"] == "array", path


def test_every_operation_answers_without_a_server_error(target: Target) -> None:
    url = target.server.url
    check_document(httpx.get(f"{url}/openapi.json", timeout=TIMEOUT).json())
    for method, path, body in PROBES:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = httpx.request(method, url + path, content=content if body is not None else None,
                               headers={"content-type": "application/json", **target.main.headers},
                               timeout=TIMEOUT)  # fmt: skip
        where = f"{method} {path} {body!r:.80}"
        check_answer(
            where, answer.status_code, answer.headers.get("content-type", ""), answer.content
        )
        assert 400 <= answer.status_code < 500, (method, path, body, answer.text)

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [operation.label for operation in operations]
    failures = []
    for operation in operations:
        for mode in GenerationMode:
            try:
                fuzz(operation, mode, target)
            except Unsatisfiable:
                # Nothing to make invalid (logout, 2fa/enroll, the health probes).
                assert mode is GenerationMode.NEGATIVE, operation.label
            except AssertionError as error:
                failures.append(f"{operation.label} ({mode.value}): {error}")
            assert not target.broken, f"the server stopped answering: {target.broken}"
    assert not failures, "\n".join(failures)
