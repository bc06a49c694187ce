"""Binance's market streams: ``/ws/<stream>`` (raw), ``/stream?streams=a/b/c`` (combined)
and, on the native ``/ws``, a connection whose first message is a Binance request
(docs/binance.md, "Market streams").

Any path under ``/ws/`` is accepted: its parts that are stream names are subscribed, the
others ignored (CCXT connects to ``/ws/<its own index>`` and then subscribes). Requests are
``{"method", "params", "id"}``, answered ``{"result", "id"}`` or Binance's
``{"error": {"code", "msg"}, "id"}``. The events come from
:class:`~mercato.marketdata.binance_feed.BinanceFeed` through the hub, one per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from mercato.api.ratelimit import RateLimited, RateLimiter
from mercato.marketdata.binance_feed import BinanceFeed, channel
from mercato.marketdata.hub import CLOSE_POLICY, Client, Hub
from mercato.service import ExchangeService
from mercato.wire import binance_streams as wire

router = APIRouter()

MAX_STREAMS = 1024
MAX_MESSAGES_PER_SECOND = 5
CONNECTION_LIFE_SECONDS = 24 * 3600
MAX_ID_CHARS = 36
CLOSE_NORMAL = 1000


@router.websocket("/ws/{path:path}")
async def raw_streams(websocket: WebSocket, path: str) -> None:
    await serve(websocket, path.split("/"), combined=False)


@router.websocket("/stream")
async def combined_streams(websocket: WebSocket) -> None:
    streams = websocket.query_params.get("streams", "")
    await serve(websocket, streams.split("/") if streams else [], combined=True)


def is_binance_request(text: str) -> bool:
    """Whether the first message on the native ``/ws`` is a Binance request (it has a
    ``method`` and no ``op``): the connection then speaks Binance's dialect."""
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        request = msgspec.json.decode(text)
        return isinstance(request, dict) and "method" in request and "op" not in request
    return False


async def take_over(websocket: WebSocket, first: str) -> None:
    """Serve an accepted native ``/ws`` connection as a raw Binance stream connection,
    starting with its first message ``first``."""
    feed = _feed(websocket)
    if feed is None:
        await websocket.close(CLOSE_POLICY, "the exchange is stopping")
        return
    await _run(websocket, feed, [], combined=False, first=first)


def _feed(websocket: WebSocket) -> BinanceFeed | None:
    service: ExchangeService = websocket.app.state.service
    feed = getattr(service, "binance_feed", None)
    if not service.ready or not isinstance(feed, BinanceFeed):
        return None
    return feed


async def serve(websocket: WebSocket, names: list[str], *, combined: bool) -> None:
    limiter: RateLimiter = websocket.app.state.limiter
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        await limiter.check("ip", ip, "from this IP")
    except RateLimited as limited:
        await websocket.send_denial_response(JSONResponse(
            {"code": -1003, "msg": limited.message}, 429,
            {"Retry-After": str(limited.retry_after)}))  # fmt: skip
        return
    feed = _feed(websocket)
    if feed is None:
        await websocket.send_denial_response(
            JSONResponse({"code": -1001, "msg": "the exchange is starting or stopping"}, 503)
        )
        return
    await websocket.accept()
    streams = [n for n in names if wire.parse_stream(n) is not None][:MAX_STREAMS]
    await _run(websocket, feed, streams, combined=combined, first=None)


async def _run(websocket: WebSocket, feed: BinanceFeed, streams: list[str], *,
               combined: bool, first: str | None) -> None:  # fmt: skip
    hub = feed.hub
    ip = websocket.client.host if websocket.client else "unknown"
    client = hub.connect(ip)
    client.native = False
    session = StreamSession(hub, client, combined)
    for stream in streams:
        session.add(stream)
    feed.connected()
    client.writer = asyncio.get_running_loop().create_task(
        hub.run_writer(client, websocket.send_text, _closer(websocket)),
        name="mercato-binance-stream-writer",
    )
    life = asyncio.get_running_loop().call_later(
        CONNECTION_LIFE_SECONDS, hub.close, client, CLOSE_NORMAL, "the 24 h connection life ended"
    )
    try:
        if first is not None:
            session.handle(first)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if client.close_code:
                continue
            if not session.count_message():
                hub.close(client, CLOSE_POLICY,
                          f"more than {MAX_MESSAGES_PER_SECOND} messages in a second")  # fmt: skip
                continue
            session.handle(message.get("text") or "")
    finally:
        life.cancel()
        feed.disconnected()
        await _finish(hub, client)


async def _finish(hub: Hub, client: Client) -> None:
    hub.disconnect(client)
    writer = client.writer
    if writer is None:
        return
    if not client.close_code:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
    else:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(writer), 6)


def _closer(websocket: WebSocket) -> Any:
    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    return close


class StreamSession:
    """One connection's streams and its ``combined`` property."""

    def __init__(self, hub: Hub, client: Client, combined: bool) -> None:
        self.hub = hub
        self.client = client
        self.combined = combined
        self.streams: dict[str, None] = {}  # in subscription order
        self._received: deque[float] = deque()

    def count_message(self) -> bool:
        """Note one incoming message; False past Binance's 5 per second."""
        now = time.monotonic()
        received = self._received
        while received and now - received[0] >= 1.0:
            received.popleft()
        received.append(now)
        return len(received) <= MAX_MESSAGES_PER_SECOND

    def reply(self, text: str) -> None:
        self.hub.send(self.client, text)

    def add(self, stream: str) -> None:
        self.streams[stream] = None
        self.hub.subscribe(self.client, channel(stream, self.combined))

    def remove(self, stream: str) -> None:
        self.streams.pop(stream, None)
        self.hub.unsubscribe(self.client, channel(stream, self.combined))

    # -- requests ---------------------------------------------------------------------------

    def handle(self, text: str) -> None:
        try:
            request = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError) as bad:
            self.reply(wire.error(None, 3, f"Invalid JSON: {bad}"))
            return
        if not isinstance(request, dict):
            self.reply(wire.error(None, 2, "Invalid request: expected a JSON object"))
            return
        request_id = request.get("id")
        if not _valid_id(request_id):
            why = "Invalid request: request ID must be an unsigned integer"
            self.reply(wire.error(None, 2, why))
            return
        if "method" not in request:
            self.reply(wire.error(request_id, 2, "Invalid request: missing field `method`"))
            return
        method, params = request["method"], request.get("params")
        if method not in wire.METHODS:
            expected = ", ".join(f"`{m}`" for m in wire.METHODS)
            self.reply(wire.error(request_id, 2, f"Invalid request: unknown variant "
                                  f"`{method}`, expected one of {expected}"))  # fmt: skip
        elif method == "LIST_SUBSCRIPTIONS":
            self.reply(wire.result(request_id, list(self.streams)))
        elif method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.change(request_id, method == "SUBSCRIBE", params)
        else:
            self.property(request_id, method == "SET_PROPERTY", params)

    def change(self, request_id: Any, subscribe: bool, params: Any) -> None:
        """SUBSCRIBE / UNSUBSCRIBE: all or nothing."""
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            self.reply(wire.error(request_id, 2, "Invalid request: params must be a list of "
                                  "stream names"))  # fmt: skip
            return
        if any(wire.parse_stream(p) is None for p in params):
            self.reply(wire.error(request_id, 2, "Invalid request: invalid stream"))
            return
        if subscribe:
            new = [p for p in dict.fromkeys(params) if p not in self.streams]
            if len(self.streams) + len(new) > MAX_STREAMS:
                self.reply(wire.error(request_id, 2, "Invalid request: a connection listens "
                                      f"to at most {MAX_STREAMS} streams"))  # fmt: skip
                return
            for stream in new:
                self.add(stream)
        else:
            for stream in params:
                self.remove(stream)
        self.reply(wire.result(request_id))

    def property(self, request_id: Any, set_it: bool, params: Any) -> None:
        """SET_PROPERTY / GET_PROPERTY; the one property is ``combined``."""
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            self.reply(wire.error(request_id, 2, "Invalid request: property name must be a string"))
            return
        if len(params) > (2 if set_it else 1):
            self.reply(wire.error(request_id, 2, "Invalid request: too many parameters"))
            return
        if params[0] != "combined":
            self.reply(wire.error(request_id, 0, "Unknown property"))
            return
        if not set_it:
            self.reply(wire.result(request_id, self.combined))
            return
        value = params[1] if len(params) == 2 else None
        if not isinstance(value, bool):
            self.reply(wire.error(request_id, 1, "Invalid value type: expected Boolean"))
            return
        streams = list(self.streams)
        for stream in streams:
            self.remove(stream)
        self.combined = value
        for stream in streams:
            self.add(stream)
        self.reply(wire.result(request_id))


def _valid_id(request_id: Any) -> bool:
    """Binance's ids: a 64-bit signed integer, an alphanumeric string of at most 36, null."""
    if request_id is None:
        return True
    if isinstance(request_id, bool):
        return False
    if isinstance(request_id, int):
        return -(2**63) <= request_id < 2**63
    return isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS and request_id.isalnum()
