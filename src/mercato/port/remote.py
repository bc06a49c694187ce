"""The engine as a separate custody process sees it: commands submitted over HTTP to the
`mercato serve` that owns the engine, and the little of its state custody reads.

This is the narrow port of `mercato custody run` (docs/custody.md, "Process model"):
custody submits only funding commands (CreditDeposit, SettleWithdrawal,
ReleaseWithdrawal), each idempotent in the engine, so a request retried after a lost
answer changes nothing twice. The server side is ``mercato.api.internal_routes``. Every
request is signed with a key derived from the master key (which a custody process holds
anyway, to unseal the seed): HMAC-SHA256 over the timestamp, the path and the body, and
refused outside a 30 s window. The distributed deployment replaces this with its
networked port.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

import httpx
import msgspec

from mercato.core.commands import (
    Command,
    CreditDeposit,
    ReleaseWithdrawal,
    SettleWithdrawal,
)
from mercato.core.model import Asset
from mercato.core.results import Result, ResultStatus

#: What a custody process may submit: funding commands, nothing that trades or administers.
CUSTODY_COMMANDS: tuple[type, ...] = (CreditDeposit, SettleWithdrawal, ReleaseWithdrawal)
SIGNATURE_WINDOW_MS = 30_000
TIMESTAMP_HEADER = "x-mercato-timestamp"
SIGNATURE_HEADER = "x-mercato-signature"
COMMANDS_PATH = "/internal/v1/commands"
ENGINE_PATH = "/internal/v1/engine"


def internal_key(master_key: bytes) -> bytes:
    """The key of the internal port: derived, so the master key itself never signs."""
    return hmac.new(master_key, b"mercato internal port v1", hashlib.sha256).digest()


def signature(key: bytes, timestamp: str, path: str, body: bytes) -> str:
    message = timestamp.encode() + b"\n" + path.encode() + b"\n" + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_problem(
    key: bytes, headers: Mapping[str, str], path: str, body: bytes, now_ms: int
) -> str | None:
    """Why a request is not signed by a holder of ``key`` (None: it is)."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit() or not given:
        return "the internal port needs x-mercato-timestamp and x-mercato-signature"
    if abs(now_ms - int(timestamp)) > SIGNATURE_WINDOW_MS:
        return "the request's timestamp is outside the 30 s window (clocks apart?)"
    if not hmac.compare_digest(signature(key, timestamp, path, body), given):
        return "bad signature: the master keys of the two processes differ"
    return None


class SubmitAnswer(msgspec.Struct, array_like=True):
    """What custody reads of a Result (its events stay in the engine's process)."""

    seq: int
    status: ResultStatus
    code: str = ""
    message: str = ""


class EngineFacts(msgspec.Struct):
    last_seq: int
    assets: dict[str, int]  # symbol -> ledger decimals


class RemoteView:
    """The engine state custody reads, as of the last refresh (assets change rarely)."""

    def __init__(self) -> None:
        self._assets: dict[str, Asset] = {}

    def asset(self, symbol: str) -> Asset | None:
        return self._assets.get(symbol)

    def assets(self) -> Mapping[str, Asset]:
        return self._assets

    def update(self, facts: EngineFacts) -> None:
        self._assets = {s: Asset(s, decimals) for s, decimals in facts.assets.items()}


class RemoteEnginePort:
    """``submit`` / ``submit_many`` / ``view`` / ``last_seq`` over the internal port."""

    def __init__(self, url: str, master_key: bytes, timeout: float = 10.0) -> None:
        self._key = internal_key(master_key)
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)
        self.view = RemoteView()
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """The engine's sequence as of the last answer."""
        return self._last_seq

    async def refresh(self) -> EngineFacts:
        """Ask the engine for its sequence and assets (raises httpx errors when away)."""
        answer = await self._request("GET", ENGINE_PATH, b"")
        facts = msgspec.json.decode(answer, type=EngineFacts)
        self.view.update(facts)
        self._last_seq = max(self._last_seq, facts.last_seq)
        return facts

    async def submit(self, cmd: Command) -> Result:
        return (await self.submit_many([cmd]))[0]

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        if not all(isinstance(cmd, CUSTODY_COMMANDS) for cmd in commands):
            raise TypeError("the internal port takes only funding commands")
        body = msgspec.json.encode(list(commands))
        answers = msgspec.json.decode(
            await self._request("POST", COMMANDS_PATH, body), type=list[SubmitAnswer]
        )
        if answers:
            self._last_seq = max(self._last_seq, max(a.seq for a in answers))
        return [Result(a.seq, a.status, [], a.code, a.message) for a in answers]

    async def _request(self, method: str, path: str, body: bytes) -> bytes:
        timestamp = str(int(time.time() * 1000))
        headers = {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._key, timestamp, path, body),
            "content-type": "application/json",
        }
        answer = await self._http.request(method, path, content=body, headers=headers)
        answer.raise_for_status()
        return answer.content

    async def close(self) -> None:
        await self._http.aclose()
