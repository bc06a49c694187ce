"""`/ws`: market data and the caller's own orders, fills and balances over WebSocket.

The protocol (docs/websocket.md): JSON text frames. The client sends operations
(``subscribe``, ``unsubscribe``, ``auth``, ``ping``, ``pong``), each answered by an
acknowledgement or an error carrying the request's ``id``; the server sends channel
messages, one JSON object per frame or, when several are queued, a JSON array of them.

Connection attempts and every client message take a token from the per-IP budget
(``ip``, docs/configuration.md): a refused attempt gets HTTP 429 with the usual error
body, a refused message an error message. Fan-out, slow consumers and heartbeats are
the hub's (:mod:`mercato.marketdata.hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import jwt
import msgspec
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from mercato.api.binance.streams import is_binance_request, take_over
from mercato.api.errors import http_status
from mercato.api.ratelimit import RateLimited, RateLimiter
from mercato.auth.api_keys import authenticate_signed
from mercato.auth.errors import AuthError
from mercato.auth.sessions import LIVE_SESSIONS, Principal, authenticate, live_credentials
from mercato.auth.users import standing_refusal
from mercato.core.errors import ErrorKind
from mercato.marketdata.feed import PRIVATE_CHANNELS, MarketData, encode
from mercato.marketdata.hub import Client, Hub
from mercato.service import ExchangeService

log = logging.getLogger(__name__)
router = APIRouter()

MAX_MESSAGE_CHARS = 4096
MAX_CHANNELS = 200
MAX_CHANNELS_PER_REQUEST = 50


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _deny(websocket: WebSocket, status: int, code: str, message: str,
                headers: dict[str, str] | None = None) -> None:  # fmt: skip
    """Refuse the handshake with an HTTP answer and the common error body."""
    response = JSONResponse({"code": code, "message": message}, status, headers)
    await websocket.send_denial_response(response)


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    service: ExchangeService = websocket.app.state.service
    limiter: RateLimiter = websocket.app.state.limiter
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        await limiter.check("ip", ip, "from this IP")
    except RateLimited as limited:
        await _deny(websocket, 429, limited.code, limited.message,
                    {"Retry-After": str(limited.retry_after)})  # fmt: skip
        return
    market_data = getattr(service, "market_data", None)
    if not service.ready or not isinstance(market_data, MarketData):
        await _deny(websocket, 503, "NOT_READY", "the exchange is starting or stopping")
        return
    session = Session(websocket, service, market_data, limiter, ip)
    header = websocket.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise AuthError("UNAUTHORIZED", "send Authorization: Bearer <access token>")
            principal, expires = await session.by_token(token.strip())
        except AuthError as error:
            await _deny(websocket, http_status(error), error.code, error.message)
            return
    await websocket.accept()
    hub = market_data.hub
    client = session.client = hub.connect(ip)
    if header:
        session.sign_in(principal, expires)
    client.writer = asyncio.get_running_loop().create_task(
        hub.run_writer(client, websocket.send_text, _closer(websocket)), name="mercato-ws-writer"
    )
    binance_first: str | None = None
    try:
        first = True
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            client.last_received = time.monotonic()
            if client.close_code:
                continue
            text = message.get("text")
            if text is None:
                session.error(None, "INVALID_REQUEST", "send JSON in text frames")
                continue
            if first and not header and is_binance_request(text):
                binance_first = text  # a Binance client: see the end
                break
            first = False
            await session.handle(text)
    finally:
        hub.disconnect(client)
        writer = client.writer
        if writer is not None and not client.close_code:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        elif writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), 6)
    if binance_first is not None:
        # Its first message was a Binance request ({"method": ...}): the connection is a
        # Binance raw stream connection from now on (docs/binance.md, "Market streams").
        await take_over(websocket, binance_first)


def _closer(websocket: WebSocket) -> Any:
    async def close(code: int, reason: str) -> None:
        await websocket.close(code, reason)

    return close


class Session:
    """One connection's operations: subscriptions and authentication."""

    def __init__(self, websocket: WebSocket, service: ExchangeService, market_data: MarketData,
                 limiter: RateLimiter, ip: str) -> None:  # fmt: skip
        self.websocket = websocket
        self.service = service
        self.market_data = market_data
        self.hub = market_data.hub
        self.limiter = limiter
        self.ip = ip
        self.client: Client = Client(ip)  # replaced by the hub's once accepted

    # -- replies ------------------------------------------------------------------------

    def reply(self, message: dict[str, Any]) -> None:
        self.hub.send(self.client, encode(message))

    def error(self, request_id: Any, code: str, message: str, **extra: Any) -> None:
        self.reply({"type": "error", "id": request_id, "code": code, "message": message,
                    **extra})  # fmt: skip

    # -- dispatch -------------------------------------------------------------------------

    async def handle(self, text: str) -> None:
        request: Any = None
        if len(text) <= MAX_MESSAGE_CHARS:
            # RecursionError: arrays or objects nested deeper than the decoder goes (about
            # 1,000 levels); such a message is answered like any other that is not JSON.
            with contextlib.suppress(msgspec.DecodeError, RecursionError):
                request = msgspec.json.decode(text)
        request_id = request.get("id") if isinstance(request, dict) else None
        if request_id is not None and (not isinstance(request_id, int | str)
                                       or isinstance(request_id, bool)
                                       or len(str(request_id)) > 64):  # fmt: skip
            self.error(None, "INVALID_REQUEST", "id must be an integer or a string of at most 64")
            return
        try:  # every message counts, good or bad
            await self.limiter.check("ip", self.ip, "from this IP")
        except RateLimited as limited:
            self.error(request_id, limited.code, limited.message, retry_after=limited.retry_after)
            return
        if len(text) > MAX_MESSAGE_CHARS:
            limit = f"messages are limited to {MAX_MESSAGE_CHARS} characters"
            self.error(None, "INVALID_REQUEST", limit)
            return
        if not isinstance(request, dict):
            self.error(None, "INVALID_REQUEST", "send a JSON object such as "
                       '{"op": "subscribe", "channels": ["trades.BTC-USDT"], "id": 1}')  # fmt: skip
            return
        op = request.get("op")
        if op == "subscribe":
            self.subscribe(request_id, request.get("channels"))
        elif op == "unsubscribe":
            self.unsubscribe(request_id, request.get("channels"))
        elif op == "auth":
            await self.auth(request_id, request)
        elif op == "ping":
            self.reply({"type": "pong", "id": request_id, "ts": _now_ms()})
        elif op == "pong":
            pass  # the answer to the server's ping: receiving it is all that matters
        else:
            self.error(request_id, "INVALID_REQUEST",
                       "op must be subscribe, unsubscribe, auth, ping or pong")  # fmt: skip

    def _channels(self, request_id: Any, channels: Any) -> list[str] | None:
        if (not isinstance(channels, list) or not channels
                or not all(isinstance(c, str) for c in channels)):  # fmt: skip
            self.error(request_id, "INVALID_REQUEST", "channels must be a non-empty list of names")
            return None
        if len(channels) > MAX_CHANNELS_PER_REQUEST:
            self.error(request_id, "INVALID_REQUEST",
                       f"at most {MAX_CHANNELS_PER_REQUEST} channels per request")  # fmt: skip
            return None
        return list(dict.fromkeys(channels))

    def _key(self, channel: str) -> str:
        """The hub's name of a channel: private channels are per user."""
        return f"{channel}:{self.client.user}" if channel in PRIVATE_CHANNELS else channel

    def authenticated(self) -> bool:
        client = self.client
        return client.user != 0 and (client.auth_expires_at == 0
                                     or client.auth_expires_at > _now_ms())  # fmt: skip

    def subscribe(self, request_id: Any, channels: Any) -> None:
        names = self._channels(request_id, channels)
        if names is None:
            return
        for channel in names:
            problem = self.market_data.channel_error(channel)
            if problem is not None:
                self.error(request_id, *problem, channel=channel)
                return
            if channel in PRIVATE_CHANNELS and not self.authenticated():
                self.error(request_id, "UNAUTHORIZED",
                           f"{channel} is private: authenticate first with "
                           '{"op": "auth", "token": "<access token>"} or an API key signature',
                           channel=channel)  # fmt: skip
                return
        client = self.client
        new = [c for c in names if self._key(c) not in client.channels]
        if len(client.channels) + len(new) > MAX_CHANNELS:
            self.error(request_id, "TOO_MANY_SUBSCRIPTIONS",
                       f"at most {MAX_CHANNELS} channels per connection")  # fmt: skip
            return
        self.reply({"type": "subscribed", "id": request_id, "channels": names})
        for channel in new:
            # First what the subscriber starts from (a depth snapshot flushes the market's
            # pending update to the others first), then the subscription: nothing can run
            # in between, so the first update follows the snapshot exactly.
            first = list(self.market_data.initial_messages(client, channel))
            self.hub.subscribe(client, self._key(channel))
            for message in first:
                self.hub.send(client, message)

    def unsubscribe(self, request_id: Any, channels: Any) -> None:
        names = self._channels(request_id, channels)
        if names is None:
            return
        for channel in names:
            self.hub.unsubscribe(self.client, self._key(channel))
        self.reply({"type": "unsubscribed", "id": request_id, "channels": names})

    # -- authentication -----------------------------------------------------------------

    async def by_token(self, token: str) -> tuple[Principal, int]:
        """The principal of an access token and when the token expires (ms)."""
        assert self.service.secrets is not None
        principal = await authenticate(self.service.reader(), self.service.secrets.jwt_key, token)
        claims = jwt.decode(token, options={"verify_signature": False})
        return principal, int(claims["exp"]) * 1000

    async def by_signature(self, request: dict[str, Any]) -> Principal:
        """An API key signing ``apiKey=<key>&timestamp=<ms>[&recvWindow=<ms>]`` as it
        would sign a REST query string (HMAC-SHA256 with its secret, hex)."""
        assert self.service.secrets is not None
        key, timestamp = request.get("api_key"), request.get("timestamp")
        window, signature = request.get("recv_window"), request.get("signature")
        if not isinstance(key, str) or not key or len(key) > 128:
            raise AuthError("UNKNOWN_API_KEY", "api_key must be an API key id")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise AuthError(
                "INVALID_TIMESTAMP", "timestamp must be an integer (ms)", kind=ErrorKind.INVALID
            )
        if window is not None and (not isinstance(window, int) or isinstance(window, bool)):
            raise AuthError(
                "INVALID_TIMESTAMP", "recv_window must be an integer (ms)", kind=ErrorKind.INVALID
            )
        if not isinstance(signature, str) or len(signature) > 128:
            raise AuthError("INVALID_SIGNATURE", "signature must be a hex HMAC-SHA256")
        query = f"apiKey={key}&timestamp={timestamp}"
        if window is not None:
            query += f"&recvWindow={window}"
        query += f"&signature={signature}"
        principal = await authenticate_signed(
            self.service.reader(), self.service.secrets.master_key, key,
            query.encode(), b"", self.ip, False,
        )  # fmt: skip
        if "read" not in principal.permissions:
            raise AuthError(
                "MISSING_PERMISSION",
                "this API key lacks the read permission",
                kind=ErrorKind.FORBIDDEN,
            )
        return principal

    def sign_in(self, principal: Principal, expires_at: int) -> bool:
        client = self.client
        if client.user and client.user != principal.user_id:
            return False
        client.user = principal.user_id
        client.session = principal.session
        client.auth_expires_at = expires_at
        return True

    async def auth(self, request_id: Any, request: dict[str, Any]) -> None:
        try:
            if "token" in request:
                token = request["token"]
                if not isinstance(token, str) or not token or len(token) > 2048:
                    raise AuthError("UNAUTHORIZED", "token must be an access token")
                principal, expires = await self.by_token(token)
            elif "api_key" in request:
                principal, expires = await self.by_signature(request), 0
            else:
                raise AuthError("UNAUTHORIZED", 'send {"op": "auth", "token": ...} '
                                "or api_key, timestamp and signature")  # fmt: skip
            await self.limiter.check("account", str(principal.user_id), "for this account")
        except AuthError as error:
            self.error(request_id, error.code, error.message)
            return
        except RateLimited as limited:
            self.error(request_id, limited.code, limited.message, retry_after=limited.retry_after)
            return
        if not self.sign_in(principal, expires):
            self.error(request_id, "ALREADY_AUTHENTICATED",
                       "this connection belongs to another user: open a new one")  # fmt: skip
            return
        self.reply({"type": "authenticated", "id": request_id, "user_id": principal.user_id,
                    "expires_at": expires or None})  # fmt: skip


REVOCATION_CHECK_SECONDS = 2.0  # the credentials' trust window (auth/sessions.py)


async def watch_credentials(service: ExchangeService) -> None:
    """End the private channels of connections whose login session was logged out or
    revoked, whose API key was deleted, or whose user is no longer active: at once after
    a revocation in this process, and every ``REVOCATION_CHECK_SECONDS`` for those made
    by other processes (standing changes included). Each check asks the database once
    for all signed-in connections (twice with API keys)."""
    wake = asyncio.Event()
    LIVE_SESSIONS.on_revoked.append(wake.set)
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), REVOCATION_CHECK_SECONDS)
            wake.clear()
            if service.ready and isinstance(service.market_data, MarketData):
                try:
                    await end_revoked(service, service.market_data.hub)
                except Exception:  # the database away for a moment: next round
                    log.exception("checking the WebSocket sessions failed")
    finally:
        LIVE_SESSIONS.on_revoked.remove(wake.set)


async def end_revoked(service: ExchangeService, hub: Hub) -> None:
    signed_in = [(c, c.session) for c in hub.clients
                 if c.session and c.auth_expires_at >= 0 and not c.closing]  # fmt: skip
    if not signed_in:
        return
    live = await live_credentials(service.reader(), {s for _, s in signed_in})
    ended = False
    for client, session in signed_in:
        # Skip a client that signed in again (or was ended) while the query ran.
        if client.session != session or client.auth_expires_at < 0:
            continue
        standing = live.get(session)
        if standing is None:
            hub.end_private(
                client, "SESSION_REVOKED", "this session was logged out or its key deleted"
            )
        elif (refusal := standing_refusal(standing.status)) is not None:
            hub.end_private(client, refusal.code, refusal.message)
        else:
            continue
        ended = True
    if ended:  # made by another process: what this one trusts of it is void now too
        LIVE_SESSIONS.revoked()
