"""The internal port a separate custody process (`mercato custody run`) submits through
(docs/custody.md, "Process model"; the client is ``mercato.port.remote``).

It exists only when custody is configured to run outside serve (``[custody]
run_in_serve = false``): otherwise every path answers 404. Requests are signed with the
key derived from the master key; only funding commands are taken. Not in the OpenAPI
document: it is not an API for users.
"""

from __future__ import annotations

import time

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mercato.api.auth_routes import service_of
from mercato.api.errors import ApiError
from mercato.core.commands import Command
from mercato.port.remote import (
    COMMANDS_PATH,
    CUSTODY_COMMANDS,
    ENGINE_PATH,
    EngineFacts,
    SubmitAnswer,
    internal_key,
    signature_problem,
)
from mercato.service import ExchangeService

router = APIRouter(include_in_schema=False)
MAX_COMMANDS = 1000


async def _verified(request: Request, path: str) -> tuple[ExchangeService, bytes]:
    service = service_of(request)
    custody = service.config.custody
    if not custody.chains or custody.run_in_serve:
        raise ApiError(404, "NOT_FOUND", "no such endpoint")
    assert service.secrets is not None
    body = await request.body()
    problem = signature_problem(
        internal_key(service.secrets.master_key),
        request.headers,
        path,
        body,
        int(time.time() * 1000),
    )
    if problem is not None:
        raise ApiError(401, "INVALID_SIGNATURE", problem)
    return service, body


@router.post(COMMANDS_PATH)
async def submit_route(request: Request) -> Response:
    service, body = await _verified(request, COMMANDS_PATH)
    try:
        commands = msgspec.json.decode(body, type=list[Command])
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ApiError(400, "INVALID_REQUEST", f"not a list of commands: {error}") from None
    if len(commands) > MAX_COMMANDS:
        raise ApiError(400, "INVALID_REQUEST", f"at most {MAX_COMMANDS} commands per request")
    if not all(isinstance(cmd, CUSTODY_COMMANDS) for cmd in commands):
        raise ApiError(403, "COMMAND_NOT_ALLOWED", "the internal port takes funding commands only")
    assert service.port is not None
    results = await service.port.submit_many(commands)
    answers = [SubmitAnswer(r.seq, r.status, r.code, r.message) for r in results]
    return Response(msgspec.json.encode(answers), media_type="application/json")


@router.get(ENGINE_PATH)
async def engine_route(request: Request) -> Response:
    service, _ = await _verified(request, ENGINE_PATH)
    assert service.port is not None
    view = service.port.view
    facts = EngineFacts(service.port.last_seq, {s: a.decimals for s, a in view.assets().items()})
    return Response(msgspec.json.encode(facts), media_type="application/json")
