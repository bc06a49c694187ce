"""Binance's WebSocket API, ``/ws-api/v3`` (web-socket-api.md), and the user data stream
on it (docs/binance.md, "WebSocket API and user data").

A request is one JSON text frame ``{"id", "method", "params"}``; its answer is
``{"id", "status": 200, "result", "rateLimits"}`` or ``{"id", "status": 4xx,
"error": {"code", "msg"}, "rateLimits"}``, one frame each. Signed methods carry
``apiKey``, ``timestamp`` (``recvWindow``) and ``signature``: the HMAC-SHA256 of the other
params sorted by name as ``name=value`` joined by ``&``, checked by the same function as
REST's signed requests (``authenticate_signed``). User data stream events arrive as
``{"subscriptionId": n, "event": {...}}``, one per frame
(:mod:`mercato.marketdata.binance_user`).

Every frame out goes through the connection's hub queue (bounded: a slow consumer is
closed) and one writer, so answers and events never interleave mid-frame. Every request
takes a token from the per-IP budget, as on ``/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from mercato.api.binance import symbols_of
from mercato.api.binance import trading as ops
from mercato.api.binance.auth import KEY_FORMAT, bad_key_format
from mercato.api.binance.errors import binance_error_of
from mercato.api.binance.weights import Meter, OrderCounts, meter_of
from mercato.api.ratelimit import RateLimited, RateLimiter
from mercato.auth.api_keys import MAX_RECV_WINDOW_MS, authenticate_signed
from mercato.auth.errors import AuthError
from mercato.auth.sessions import LIVE_SESSIONS, Principal, live_credentials
from mercato.auth.users import standing_refusal
from mercato.core.errors import ErrorKind
from mercato.marketdata.binance_user import Subscription, UserDataStreams
from mercato.marketdata.feed import MarketData
from mercato.marketdata.hub import Client, Hub
from mercato.service import ExchangeService
from mercato.wire.binance import BinanceError, binance_symbol
from mercato.wire.binance_errors import (
    BY_CODE,
    OVERLOADED,
    UNKNOWN,
    mandatory_parameter,
    too_many_requests,
)
from mercato.wire.binance_market import BinanceFormat, exchange_info, symbol_info
from mercato.wire.binance_market import rate_limits as declared_limits

log = logging.getLogger(__name__)
router = APIRouter()
_encode = msgspec.json.Encoder().encode

MAX_MESSAGE_CHARS = 16_384
MAX_SUBSCRIPTIONS = 1000  # Binance's per-session limit of active subscriptions
MAX_SUBSCRIPTION_IDS = 65_535  # ... and of subscriptions over a session's life
WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute, as Binance reports it
REVOCATION_CHECK_SECONDS = 2.0  # as the native private channels (api/ws.py)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def unknown_method() -> BinanceError:
    """Binance's docs give no answer for a method they do not have: Mercato answers its
    UNSUPPORTED_OPERATION (docs/binance.md)."""
    return BinanceError(400, -1020, "This operation is not supported.")


def malformed_request() -> BinanceError:
    return BinanceError(400, -1135, "Invalid JSON Request")


def hmac_key_not_supported() -> BinanceError:
    """What Binance answers ``session.logon`` signed with an HMAC key (only Ed25519
    keys may log a session on; every Mercato key is HMAC)."""
    return BinanceError(400, -4056, "HMAC_SHA256 API key is not supported.")


def not_logged_on() -> BinanceError:
    return BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")


# -- rate limits ----------------------------------------------------------------------


def rate_limits(meter: Meter, used: int, orders: OrderCounts | None) -> list[dict[str, Any]]:
    """The ``rateLimits`` of an answer: the IP's request weight this minute (the REST
    API's meter, shared), and the account's order counts after an order placement."""
    limits: list[dict[str, Any]] = []
    if orders is not None:
        ten_seconds, day = meter.limits.order_limits()
        limits += [{**ten_seconds, "count": orders.ten_seconds}, {**day, "count": orders.day}]
    most = meter.limits.weight_per_minute or WEIGHT_LIMIT
    limits.append({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                   "limit": most, "count": used})  # fmt: skip
    return limits


# -- the shared user data streams -------------------------------------------------------


def streams_of(websocket: WebSocket, service: ExchangeService, hub: Hub) -> UserDataStreams:
    """The app's user data streams: made, subscribed to the port and watched for
    revoked credentials on first use."""
    state = websocket.app.state
    streams: UserDataStreams | None = getattr(state, "binance_user_data", None)
    if streams is None:
        assert service.port is not None
        streams = UserDataStreams(service.port.view, hub, service.order_states.state)
        service.port.subscribe(streams.on_batch)
        state.binance_user_data = streams
        state.binance_user_data_watch = asyncio.get_running_loop().create_task(
            watch_streams(service, streams), name="mercato-binance-user-data-revocations"
        )
    return streams


async def watch_streams(service: ExchangeService, streams: UserDataStreams) -> None:
    """End the subscriptions whose API key was deleted or whose user is no longer active:
    at once after a revocation in this process, and every ``REVOCATION_CHECK_SECONDS``
    for those made elsewhere (as api/ws.py does for the native private channels)."""
    wake = asyncio.Event()
    LIVE_SESSIONS.on_revoked.append(wake.set)
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), REVOCATION_CHECK_SECONDS)
            wake.clear()
            subscriptions = streams.subscriptions()
            if not subscriptions or not service.ready:
                continue
            try:
                live = await live_credentials(service.reader(), {s.session for s in subscriptions})
            except Exception:  # the database away for a moment: next round
                log.exception("checking the user data stream subscriptions failed")
                continue
            for subscription in subscriptions:
                standing = live.get(subscription.session)
                if standing is None or standing_refusal(standing.status) is not None:
                    streams.terminate(subscription)
    finally:
        LIVE_SESSIONS.on_revoked.remove(wake.set)


# -- the endpoint -----------------------------------------------------------------------


@router.websocket("/ws-api/v3")
async def ws_api(websocket: WebSocket) -> None:
    service: ExchangeService = websocket.app.state.service
    limiter: RateLimiter = websocket.app.state.limiter
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        await limiter.check("ip", ip, "from this IP")
    except RateLimited as limited:
        await _deny(websocket, too_many_requests(limited.retry_after))
        return
    market_data = getattr(service, "market_data", None)
    if not service.ready or not isinstance(market_data, MarketData):
        await _deny(websocket, BinanceError(503, -1008, OVERLOADED))
        return
    await websocket.accept()
    hub = market_data.hub
    connection = Connection(websocket, service, limiter, ip, hub,
                            streams_of(websocket, service, hub))  # fmt: skip
    writer = asyncio.get_running_loop().create_task(
        hub.run_writer(connection.client, websocket.send_text, websocket.close),
        name="mercato-binance-ws-api-writer",
    )
    connection.client.writer = writer
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if connection.client.close_code:
                continue
            await connection.handle(message.get("text"))
    finally:
        connection.close()
        if not connection.client.close_code:
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(writer), 6)


async def _deny(websocket: WebSocket, error: BinanceError) -> None:
    await websocket.send_denial_response(
        JSONResponse(error.body(), error.status, error.headers or None)
    )


# -- one connection -----------------------------------------------------------------------

Handler = Callable[["Connection", dict[str, Any]], Awaitable[Any]]
Weight = int | Callable[[dict[str, Any]], int]


class Connection:
    """One WebSocket API connection: its requests, its subscriptions."""

    def __init__(self, websocket: WebSocket, service: ExchangeService, limiter: RateLimiter,
                 ip: str, hub: Hub, streams: UserDataStreams) -> None:  # fmt: skip
        self.websocket = websocket
        self.service = service
        self.limiter = limiter
        self.ip = ip
        self.hub = hub
        self.streams = streams
        # Not one of the hub's clients: no native pings or idle timeout (Binance's
        # clients answer protocol pings, which the server sends), but its queue.
        self.client = Client(ip)
        self.client.native = False  # one message per frame
        self.connected_since = _now_ms()
        self.return_rate_limits = websocket.query_params.get("returnRateLimits") != "false"
        self.subscriptions: dict[int, Subscription] = {}
        self.next_subscription_id = 0
        self.meter = meter_of(websocket.app)
        self.used = 0  # the IP's request weight after the request being answered
        self.orders: OrderCounts | None = None  # the account's order counts, after a placement

    def close(self) -> None:
        for subscription in self.subscriptions.values():
            self.streams.remove(subscription)
        self.subscriptions.clear()
        self.client.queue = []

    def forget(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.subscription_id, None)

    def send(self, message: dict[str, Any]) -> None:
        self.hub.send(self.client, _encode(message).decode())

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, text: str | None) -> None:
        request = _decode(text)
        request_id = request.get("id") if isinstance(request, dict) else None
        if isinstance(request_id, bool | float | Decimal | dict | list):
            request_id = None
        self.orders = None
        show = self.return_rate_limits
        params = request.get("params") if isinstance(request, dict) else None
        if isinstance(params, dict):
            show = _flag(params.get("returnRateLimits"), show)
        try:
            await self.limiter.check("ip", self.ip, "from this IP")
            method, params = _method_and_params(request)
            handler, weight = METHODS.get(method, (None, 1))
            amount = weight if isinstance(weight, int) else weight(params)
            self.used = self.meter.charge(self.ip, amount)
            if handler is None:
                raise unknown_method()
            result = await handler(self, params)
        except Exception as exc:
            error = binance_error_of(exc)
            if error is None:
                log.exception("a WebSocket API request failed")
                error = BinanceError(*UNKNOWN)
            self.used = self.meter.used(self.ip)
            self.reply({"id": request_id, "status": error.status, "error": error.body()}, show)
            return
        self.reply({"id": request_id, "status": 200, "result": result}, show)

    def reply(self, answer: dict[str, Any], show: bool) -> None:
        if show:
            answer["rateLimits"] = rate_limits(self.meter, self.used, self.orders)
        self.send(answer)

    # -- signed requests -----------------------------------------------------------------

    async def signed(self, params: dict[str, Any], permission: str) -> Principal:
        """The principal of a signed request (its params' signature checked), allowed
        ``permission`` ("read" for USER_DATA and USER_STREAM, "trade" for TRADE), in
        Binance's words as REST's signed requests are (api/binance/auth.py)."""
        key = params.get("apiKey")
        if not isinstance(key, str) or not KEY_FORMAT.match(key):
            raise mandatory_parameter("apiKey") if not key else bad_key_format()
        for name in ("signature", "timestamp"):
            if params.get(name) is None or params.get(name) == "":
                raise mandatory_parameter(name)
        signature, window = params["signature"], params.get("recvWindow")
        if not isinstance(signature, str):
            raise BinanceError(*BY_CODE["INVALID_SIGNATURE"])
        if isinstance(window, int | Decimal) and window > MAX_RECV_WINDOW_MS:
            raise BinanceError(400, -1102, "'recvWindow' contains unexpected value. "
                               f"Cannot be greater than {MAX_RECV_WINDOW_MS}.")  # fmt: skip
        assert self.service.secrets is not None
        query = f"{signature_payload(params)}&signature={signature}"
        try:
            principal = await authenticate_signed(
                self.service.reader(), self.service.secrets.master_key, key, query.encode(),
                b"", self.ip, False,
            )  # fmt: skip
        except AuthError as error:
            if error.code == "INVALID_TIMESTAMP":
                raise mandatory_parameter("timestamp") from None
            if error.code == "TIMESTAMP_OUTSIDE_WINDOW" and _ahead(params["timestamp"]):
                raise BinanceError(*BY_CODE["TIMESTAMP_AHEAD"]) from None
            raise
        if permission not in principal.permissions:
            raise AuthError("MISSING_PERMISSION", f"this API key lacks {permission}",
                            kind=ErrorKind.FORBIDDEN)  # fmt: skip
        await self.limiter.check("account", str(principal.user_id), "for this account")
        if permission == "trade":
            await self.limiter.check("orders", str(principal.user_id),
                                     "of order entry for this account")  # fmt: skip
        return principal


def _ahead(timestamp: Any) -> bool:
    """The request's timestamp is 1 s or more ahead of the server's clock."""
    return isinstance(timestamp, int) and timestamp >= _now_ms() + 1000


def signature_payload(params: Mapping[str, Any]) -> str:
    """What a WebSocket API signature signs: every param but ``signature``, sorted by
    name, as ``name=value`` joined by ``&``, the values as sent (not URL-encoded)."""
    return "&".join(f"{name}={text_of(params[name])}" for name in sorted(params)
                    if name != "signature")  # fmt: skip


def text_of(value: Any) -> str:
    """A JSON param as the text a client signs: ``true``/``false``, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _decode(text: str | None) -> Any:
    if text is None or len(text) > MAX_MESSAGE_CHARS:
        return None
    try:  # decimals kept as written: they are signed as text
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError):
        return None


def _method_and_params(request: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(request, dict):
        raise malformed_request()
    method = request.get("method")
    if not isinstance(method, str) or not method:
        raise mandatory_parameter("method")
    params = request.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise malformed_request()
    return method.removeprefix("v3/"), params


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return value is True or value == "true"


# -- methods -----------------------------------------------------------------------------


async def ping(connection: Connection, params: dict[str, Any]) -> Any:
    return {}


async def server_time(connection: Connection, params: dict[str, Any]) -> Any:
    return {"serverTime": _now_ms()}


async def exchange_information(connection: Connection, params: dict[str, Any]) -> Any:
    """``exchangeInfo`` of ``symbol``, ``symbols`` or every market, in the REST API's
    shapes (wire/binance_market.py)."""
    service = connection.service
    market_data = service.market_data
    assert isinstance(market_data, MarketData)
    view = market_data.view
    symbols = symbols_of(service)
    wanted = params.get("symbols") or ([params["symbol"]] if params.get("symbol") else None)
    if wanted is not None and not (isinstance(wanted, list)
                                   and all(isinstance(s, str) for s in wanted)):  # fmt: skip
        raise BinanceError(400, -1130, "Data sent for parameter 'symbols' is not valid.")
    markets = [symbols.market(s) for s in wanted] if wanted else view.market_symbols()
    rows = []
    for market in markets:
        spec, rules = view.spec(market), view.rules(market)
        assert spec is not None and rules is not None
        fmt = market_data.formats[market]
        shape = BinanceFormat(rules, fmt.base_decimals, fmt.quote_decimals)
        status = view.trading_status(market)
        rows.append(symbol_info(binance_symbol(market), spec, rules, status, shape))
    budgets = service.config.rate_limits.budgets()
    ip, orders = budgets.get("ip"), budgets.get("orders")
    limits = declared_limits(ip.per_second if ip else None,
                             orders.per_second if orders else None)  # fmt: skip
    return exchange_info(_now_ms(), limits, rows)


def _session(connection: Connection) -> dict[str, Any]:
    """``session.status``: Mercato's keys (HMAC) never log a session on."""
    return {"apiKey": None, "authorizedSince": None,
            "connectedSince": connection.connected_since,
            "returnRateLimits": connection.return_rate_limits, "serverTime": _now_ms(),
            "userDataStream": bool(connection.subscriptions)}  # fmt: skip


async def session_logon(connection: Connection, params: dict[str, Any]) -> Any:
    """Binance refuses HMAC keys here; a valid signature is checked first, so a wrong
    one still answers -1022 as Binance's does."""
    await connection.signed(params, "read")
    raise hmac_key_not_supported()


async def session_status(connection: Connection, params: dict[str, Any]) -> Any:
    return _session(connection)


async def session_logout(connection: Connection, params: dict[str, Any]) -> Any:
    return _session(connection)


async def session_subscriptions(connection: Connection, params: dict[str, Any]) -> Any:
    return [{"subscriptionId": i} for i in sorted(connection.subscriptions)]


async def subscribe_logged_on(connection: Connection, params: dict[str, Any]) -> Any:
    """``userDataStream.subscribe`` needs a logged-on session, which HMAC keys never
    have: sign ``userDataStream.subscribe.signature`` instead."""
    raise not_logged_on()


async def subscribe_signature(connection: Connection, params: dict[str, Any]) -> Any:
    principal = await connection.signed(params, "read")
    user = principal.user_id
    if any(s.user == user for s in connection.subscriptions.values()):
        raise BinanceError(400, -2035, "User Data Stream subscription already active.")
    if len(connection.subscriptions) >= MAX_SUBSCRIPTIONS:
        raise BinanceError(400, -1191, "Too many subscriptions. Connection may create up to "
                           f"'{MAX_SUBSCRIPTIONS}' subscriptions at a time.")  # fmt: skip
    if connection.next_subscription_id >= MAX_SUBSCRIPTION_IDS:
        raise BinanceError(400, -2042, "Maximum subscription ID reached for this connection.")
    subscription_id = connection.next_subscription_id
    connection.next_subscription_id += 1
    subscription = Subscription(connection.client, user, subscription_id, principal.session,
                                connection.forget)  # fmt: skip
    connection.subscriptions[subscription_id] = subscription
    connection.streams.add(subscription)
    return {"subscriptionId": subscription_id}


async def unsubscribe(connection: Connection, params: dict[str, Any]) -> Any:
    """Without ``subscriptionId``: every subscription of the connection."""
    wanted = params.get("subscriptionId")
    if wanted is None:
        ended = list(connection.subscriptions)
    else:
        try:
            ended = [int(wanted)] if int(wanted) in connection.subscriptions else []
        except (TypeError, ValueError):
            raise mandatory_parameter("subscriptionId") from None
    for subscription_id in ended:
        connection.streams.terminate(connection.subscriptions[subscription_id])
    return {}


# -- trading and account methods: thin over the REST API's operations (trading.py) ----------

#: Params that sign a request and are not the operation's.
_SIGNING = ("apiKey", "signature", "returnRateLimits")


def operation_params(params: Mapping[str, Any]) -> dict[str, str]:
    """The params as REST's query string would carry them to the shared operations."""
    return {name: text_of(value) for name, value in params.items() if name not in _SIGNING}


def _operation(run: Callable[[ExchangeService, Principal, ops.Params], Awaitable[Any]],
               permission: str, places: bool = False) -> Handler:  # fmt: skip
    async def handler(connection: Connection, params: dict[str, Any]) -> Any:
        principal = await connection.signed(params, permission)
        if places:
            connection.orders = connection.meter.count_order(principal.user_id)
        return await run(connection.service, principal, operation_params(params))

    return handler


async def order_rate_limits(connection: Connection, params: dict[str, Any]) -> Any:
    """``account.rateLimits.orders``: the account's order counts in each window."""
    principal = await connection.signed(params, "read")
    counts = connection.meter.order_counts(principal.user_id)
    ten_seconds, day = connection.meter.limits.order_limits()
    return [{**ten_seconds, "count": counts.ten_seconds}, {**day, "count": counts.day}]


def _with_symbol(alone: int, every: int) -> Callable[[dict[str, Any]], int]:
    return lambda params: alone if params.get("symbol") else every


METHODS: dict[str, tuple[Handler, Weight]] = {
    "order.place": (_operation(ops.place_order, "trade", places=True), 1),
    "order.test": (_operation(ops.test_order, "trade"), 1),
    "order.status": (_operation(ops.query_order, "read"), 4),
    "order.cancel": (_operation(ops.cancel_order, "trade"), 1),
    "openOrders.status": (_operation(ops.open_orders, "read"), _with_symbol(6, 80)),
    "openOrders.cancelAll": (_operation(ops.cancel_open_orders, "trade"), 1),
    "allOrders": (_operation(ops.all_orders, "read"), 20),
    "myTrades": (_operation(ops.my_trades, "read"), 20),
    "order.cancelReplace": (_operation(ops.cancel_replace, "trade", places=True), 1),
    "order.amend.keepPriority": (_operation(ops.amend_keep_priority, "trade"), 4),
    "myPreventedMatches": (_operation(ops.prevented_matches, "read"), 20),
    "account.status": (_operation(ops.account, "read"), 20),
    "account.rateLimits.orders": (order_rate_limits, 40),
    "ping": (ping, 1),
    "time": (server_time, 1),
    "exchangeInfo": (exchange_information, 20),
    "session.logon": (session_logon, 2),
    "session.status": (session_status, 2),
    "session.logout": (session_logout, 2),
    "session.subscriptions": (session_subscriptions, 2),
    "userDataStream.subscribe": (subscribe_logged_on, 2),
    "userDataStream.subscribe.signature": (subscribe_signature, 2),
    "userDataStream.unsubscribe": (unsubscribe, 2),
}
