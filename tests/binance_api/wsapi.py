"""A small WebSocket API client for the tests: requests by id, events kept aside, signed
params as Binance's docs build them (web-socket-api.md, "SIGNED request example (HMAC)")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import websockets

from .conftest import Account, Exchange

WAIT = 30.0  # seconds a test waits for what must come (never an assertion on time)


def sign(account: Account, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with apiKey, timestamp and the signature of all of them sorted."""
    signed = {"apiKey": account.key, "timestamp": int(time.time() * 1000), **params}
    payload = "&".join(f"{k}={_text(signed[k])}" for k in sorted(signed))
    digest = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return {**signed, "signature": digest}


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class WsApi:
    """One connection: ``call`` sends a request and returns its answer; stream events
    (``{"subscriptionId", "event"}``) are collected in ``events``."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.frames: list[Any] = []  # every frame, decoded, in arrival order
        self._next = 0

    @classmethod
    async def open(cls, exchange: Exchange, query: str = "") -> WsApi:
        return cls(await websockets.connect(f"{exchange.ws_url}/ws-api/v3{query}"))

    async def send_raw(self, text: str) -> dict[str, Any]:
        await self.socket.send(text)
        return await self._answer(None, any_id=True)

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   request_id: Any = None) -> dict[str, Any]:  # fmt: skip
        if request_id is None:
            self._next += 1
            request_id = f"r{self._next}"
        request: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.socket.send(json.dumps(request))
        return await self._answer(request_id)

    async def _answer(self, request_id: Any, any_id: bool = False) -> dict[str, Any]:
        while True:
            frame = await self._frame()
            if "status" in frame and (any_id or frame.get("id") == request_id):
                return frame

    async def _frame(self) -> dict[str, Any]:
        text = await asyncio.wait_for(self.socket.recv(), WAIT)
        frame = json.loads(text)
        self.frames.append(frame)
        assert isinstance(frame, dict), f"one JSON object per frame, got {text[:200]}"
        if "event" in frame:
            self.events.append(frame)
        return frame

    async def events_until(self, done: Any) -> list[dict[str, Any]]:
        """Read frames until ``done(events)`` holds; returns the events."""
        while not done(self.events):
            await self._frame()
        return self.events

    async def close(self) -> None:
        await self.socket.close()
