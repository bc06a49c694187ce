"""`/api/v1` trading: place, cancel, amend orders; balances; the development faucet.

The order path is lean on purpose: the body is decoded and validated by msgspec, the
caller's eligibility is cached, and the journal is the durability point, so placing an
order makes no database round trip. Reads of history (orders, fills, ledger) come from
the SQL projection, after it has caught up with everything acknowledged so far.
"""

from __future__ import annotations

import asyncio
import secrets
from fractions import Fraction
from typing import Annotated, Any, Literal, NoReturn

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from mercato.api.auth_routes import Caller, caller_with, service_of
from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors, json_body, json_response
from mercato.api.ratelimit import RateLimiter
from mercato.auth.sessions import Principal
from mercato.core.commands import AmendOrder, CancelAll, CancelOrder, CreditDeposit, PlaceOrder
from mercato.core.engine import MAX_PRICE_TICKS, MAX_SUPPLY, Engine
from mercato.core.events import OrderUpdated
from mercato.core.money import MoneyError, format_amount, format_units, parse_amount
from mercato.core.order_state import fills_of
from mercato.core.order_state import fold as fold_order
from mercato.core.positions import Position
from mercato.core.results import Result
from mercato.service import ExchangeService
from mercato.store import queries
from mercato.store.tables import users
from mercato.wire.decimals import MarketFormat
from mercato.wire.native import (
    FillView,
    OrderView,
    order_view,
    projected_fill_view,
    trade_fill_view,
)

router = APIRouter(prefix="/api/v1", tags=["trading"])

FAUCET_MAX_UNITS = 1_000_000  # per call, in whole units of the asset

Str32 = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Decimal40 = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
# Binance's client order id alphabet (docs/trading.md), up to the engine's 64 characters.
CLIENT_ORDER_ID_CHARS = r"A-Za-z0-9._:/\-"
ClientOrderId = Annotated[str, msgspec.Meta(max_length=64, pattern=f"^[{CLIENT_ORDER_ID_CHARS}]*$")]


class OrderRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Decimal strings for every amount; integers are refused, floats never accepted."""

    market: Str32
    side: Literal["BUY", "SELL"]
    type: Literal[
        "LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
        "TAKE_PROFIT_LIMIT",
    ] = "LIMIT"  # fmt: skip
    quantity: Decimal40 | None = None
    price: Decimal40 | None = None
    quote_quantity: Decimal40 | None = None
    stop_price: Decimal40 | None = None
    iceberg_quantity: Decimal40 | None = None
    time_in_force: Literal["GTC", "IOC", "FOK", "GTD"] = "GTC"
    expire_at: Annotated[int, msgspec.Meta(ge=0, le=2**62)] = 0
    client_order_id: ClientOrderId = ""
    stp: Literal["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"] | None = None


class PlacedOrder(msgspec.Struct, kw_only=True):
    order: OrderView
    fills: list[FillView]
    duplicate: bool = False


class FaucetRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: Str32
    amount: Decimal40


class Balance(msgspec.Struct):
    asset: str
    available: str
    locked: str
    total: str


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def decode(request: Request, kind: type[msgspec.Struct]) -> Any:
    """The body as ``kind``, or a 400 that says which field is wrong and why."""
    body = await request.body()
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise ApiError(400, "INVALID_REQUEST", str(error)) from None
    except msgspec.DecodeError as error:
        raise ApiError(400, "INVALID_REQUEST", f"body is not valid JSON: {error}") from None


class Eligibility:
    """Which users may trade: those with a verified email address. A verification is
    never undone, so a user found verified is remembered for the life of the process and
    the order path does not ask the database again. The user's standing (frozen,
    deleted) is not kept here: the credential check refuses a user who is not active
    (auth/sessions.py, within its 2 s trust window)."""

    def __init__(self) -> None:
        self._verified: set[int] = set()

    async def require_trader(self, service: ExchangeService, user_id: int) -> None:
        if user_id in self._verified:
            return
        async with _reads(service) as connection:
            verified_at = (
                await connection.execute(
                    select(users.c.email_verified_at).where(users.c.id == user_id)
                )
            ).scalar_one_or_none()
        if verified_at is None:
            raise ApiError(403, "EMAIL_NOT_VERIFIED", "verify your email address before trading")
        self._verified.add(user_id)


def _eligibility(request: Request) -> Eligibility:
    eligibility: Eligibility = request.app.state.eligibility  # set by create_app
    return eligibility


async def trader(request: Request) -> Principal:
    """A verified user (session, or key with ``trade``), charged the order-entry budget."""
    caller = await caller_with(request, "trade")
    limiter: RateLimiter = request.app.state.limiter
    await limiter.check("orders", str(caller.user_id), "of order entry for this account")
    await _eligibility(request).require_trader(service_of(request), caller.user_id)
    return caller


Trader = Annotated[Principal, Depends(trader)]


def engine_rejection(result: Result) -> ApiError:
    """An engine rejection as an HTTP error with the engine's stable code."""
    status = 404 if result.code.startswith("UNKNOWN_") else 400
    return ApiError(status, result.code, result.message)


def _amount(text: str | None, parse: Any, what: str, largest: int = MAX_SUPPLY) -> int:
    """``parse(text, what)``: the field's name goes into the message of a refusal."""
    if text is None:
        return 0
    try:
        value: int = parse(text, what)
    except MoneyError as error:
        raise ApiError(400, f"INVALID_{what.upper()}", error.message) from None
    if value > largest:
        raise ApiError(400, f"INVALID_{what.upper()}", f"{what} {text} is too large")
    return value


def to_command(service: ExchangeService, user: int, body: OrderRequest) -> PlaceOrder:
    """The engine command for ``body``; amounts must be exact multiples of the market's
    tick and step sizes (and of the quote asset's atom), never rounded."""
    assert service.sequencer is not None
    engine = service.sequencer.engine
    state = engine.markets.get(body.market)
    if state is None:
        raise ApiError(404, "UNKNOWN_MARKET", f"no market {body.market!r}; see GET /api/v1/markets")
    rules = state.rules
    quote_decimals = engine.assets[state.quote].decimals
    return PlaceOrder(
        user,
        body.market,
        body.side,
        body.type,
        _amount(body.quantity, rules.parse_quantity, "quantity"),
        _amount(body.price, rules.parse_price, "price", MAX_PRICE_TICKS),
        body.time_in_force,
        body.client_order_id,
        _amount(
            body.quote_quantity, lambda t, w: parse_amount(t, quote_decimals, w), "quote_quantity"
        ),
        _amount(body.stop_price, rules.parse_price, "stop_price", MAX_PRICE_TICKS),
        body.expire_at,
        _amount(body.iceberg_quantity, rules.parse_quantity, "iceberg_quantity"),
        body.stp,
    )


def market_format(service: ExchangeService, market: str) -> MarketFormat:
    """The market's formatter, kept by market data (refreshed when the market changes)."""
    assert service.market_data is not None
    return service.market_data.formats[market]


def placed_view(service: ExchangeService, user: int, result: Result) -> PlacedOrder:
    assert service.sequencer is not None
    engine = service.sequencer.engine
    state = fold_order(result.events, result.order_id, engine.last_ts)
    assert state is not None, "an accepted order always has its OrderAccepted event"
    fmt = market_format(service, state.market)
    fills = [
        trade_fill_view(fmt, trade, user) for trade in fills_of(result.events, result.order_id)
    ]
    return PlacedOrder(order=order_view(fmt, state), fills=fills)


@router.post(
    "/orders",
    status_code=201,
    openapi_extra=json_body(OrderRequest),
    responses={
        **json_response(PlacedOrder, 201, "The order as placed, with the fills it got at once"),
        **json_response(PlacedOrder, 200, "A repeated client_order_id: the original order"),
        **errors(*SIGNED_IN, 404),
    },
)
async def place_order(caller: Trader, request: Request) -> Response:
    """Place an order of any type the engine supports. Amounts are decimal strings on the
    market's tick and step sizes. ``client_order_id`` is an idempotency key: the same id
    again answers 200 with the original order (``duplicate: true``), never a second one."""
    service = service_of(request)
    body: OrderRequest = await decode(request, OrderRequest)
    command = to_command(service, caller.user_id, body)
    assert service.sequencer is not None
    if not command.client_order_id:
        result = await service.sequencer.submit(command)
        if result.status != "ACCEPTED":
            raise engine_rejection(result)
        return _json(placed_view(service, caller.user_id, result), 201)
    outcome = await _client_ids(request).place_once(service, command)
    if isinstance(outcome, Result):
        return _json(placed_view(service, caller.user_id, outcome), 201)
    return _json(await _original(service, caller.user_id, *outcome))


async def _original(service: ExchangeService, user: int, order_id: int, seq: int) -> PlacedOrder:
    """The order a repeated client_order_id refers to, as it is now, with all its fills."""
    await caught_up(service, max(seq, _engine(service).last_seq))
    order = await _one_order(service, user, order_id=order_id)
    async with _reads(service) as connection:
        page = await queries.user_fills(
            connection, user, order_id=order_id, limit=queries.MAX_LIMIT
        )
    fmt = market_format(service, order.market)
    fills = [projected_fill_view(fmt, f) for f in reversed(page.items)]
    return PlacedOrder(order=order, fills=fills, duplicate=True)


def _engine(service: ExchangeService) -> Engine:
    assert service.sequencer is not None
    return service.sequencer.engine


class ClientOrderIds:
    """Makes ``client_order_id`` an idempotency key: a (user, id) places at most one order.

    A placement claims its key before its first await, so a concurrent repeat waits for it
    rather than racing it. Orders placed since the start are remembered here until the
    projection holds them; older ones are found in the projection, which caught up with
    the journal before the service became ready, and only asked when the Bloom filter of
    used ids says the key may have been used. A rejected placement leaves the key free.
    """

    KEEP = 50_000  # remembered keys before those already projected are dropped

    def __init__(self) -> None:
        self._placed: dict[tuple[int, str], tuple[int, int]] = {}  # -> (order_id, seq)
        self._pending: dict[tuple[int, str], asyncio.Future[tuple[int, int] | None]] = {}

    async def place_once(
        self, service: ExchangeService, command: PlaceOrder
    ) -> Result | tuple[int, int]:
        """The new order's result, or (order id, seq) of the order that has the key."""
        key = (command.user, command.client_order_id)
        while True:
            pending = self._pending.get(key)
            if pending is None:
                break
            found = await asyncio.shield(pending)
            if found is not None:
                return found
        if key in self._placed:
            return self._placed[key]
        claim: asyncio.Future[tuple[int, int] | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = claim
        try:
            found = await self._projected(service, key)
            if found is not None:
                claim.set_result(found)
                return found
            assert service.sequencer is not None
            result = await service.sequencer.submit(command)
            if result.status != "ACCEPTED":
                claim.set_result(None)
                raise engine_rejection(result)
            self._remember(service, key, (result.order_id, result.seq))
            claim.set_result((result.order_id, result.seq))
            return result
        finally:
            if not claim.done():
                claim.set_result(None)
            del self._pending[key]

    async def _projected(
        self, service: ExchangeService, key: tuple[int, str]
    ) -> tuple[int, int] | None:
        if not service.known_client_ids.may_contain(*key):
            return None  # never used: the common case needs no database read
        async with _reads(service) as connection:
            record = await queries.get_order(connection, key[0], client_order_id=key[1])
        return None if record is None else (record.order_id, record.created_seq)

    def _remember(
        self, service: ExchangeService, key: tuple[int, str], placed: tuple[int, int]
    ) -> None:
        if len(self._placed) >= self.KEEP and service.projector is not None:
            projected = service.projector.cursor
            self._placed = {k: v for k, v in self._placed.items() if v[1] > projected}
        self._placed[key] = placed


def _client_ids(request: Request) -> ClientOrderIds:
    ids: ClientOrderIds = request.app.state.client_order_ids  # set by create_app
    return ids


@router.get(
    "/balances",
    responses={**json_response(list[Balance], 200, "One entry per asset"), **errors(*SIGNED_IN)},
)
async def balances(request: Request, caller: Caller) -> Response:
    """Available and locked balance of every asset, live from the engine."""
    service = service_of(request)
    assert service.sequencer is not None
    engine = service.sequencer.engine
    return _json([balance_of(engine, caller.user_id, asset) for asset in sorted(engine.assets)])


def balance_of(engine: Engine, user: int, asset: str) -> Balance:
    decimals = engine.assets[asset].decimals
    available, locked = engine.balance(user, asset)
    return Balance(asset, format_amount(available, decimals), format_amount(locked, decimals),
                   format_amount(available + locked, decimals))  # fmt: skip


@router.post(
    "/dev/faucet",
    openapi_extra=json_body(FaucetRequest),
    responses={
        **json_response(Balance, 200, "The balance after the credit"),
        **errors(*SIGNED_IN, 404),
    },
)
async def faucet(request: Request, caller: Trader) -> Response:
    """Test funds, only when the server runs with ``--dev`` (refused otherwise): credits
    up to 1,000,000 units of an asset to the caller, through the engine like a deposit."""
    service = service_of(request)
    if not service.config.server.dev:
        raise ApiError(403, "FAUCET_DISABLED", "the faucet exists only on servers run with --dev")
    body: FaucetRequest = await decode(request, FaucetRequest)
    assert service.sequencer is not None
    engine = service.sequencer.engine
    known = engine.assets.get(body.asset)
    if known is None:
        raise ApiError(404, "UNKNOWN_ASSET", f"no asset {body.asset!r}; see GET /api/v1/assets")
    decimals = known.decimals
    atoms = _amount(body.amount, lambda t, w: parse_amount(t, decimals, w), "amount")
    if atoms > FAUCET_MAX_UNITS * 10**decimals:
        raise ApiError(
            400, "INVALID_AMOUNT", f"the faucet gives at most {FAUCET_MAX_UNITS} {body.asset}"
        )
    external_id = f"faucet:{secrets.token_hex(12)}"
    result = await service.sequencer.submit(
        CreditDeposit(caller.user_id, body.asset, atoms, external_id)
    )
    if result.status != "ACCEPTED":
        raise engine_rejection(result)
    return _json(balance_of(engine, caller.user_id, body.asset))


# -- reads of the projection -------------------------------------------------------------

PROJECTION_WAIT_SECONDS = 5.0


class OrderPage(msgspec.Struct):
    items: list[OrderView]
    next_before: int | None


class FillPage(msgspec.Struct):
    items: list[FillView]
    next_before: int | None


class LedgerEntry(msgspec.Struct, kw_only=True):
    id: int
    asset: str
    account: str
    delta: str
    balance_after: str
    reason: str
    ref: int
    time: int


class LedgerPage(msgspec.Struct):
    items: list[LedgerEntry]
    next_before: int | None


async def caught_up(service: ExchangeService, seq: int | None = None) -> None:
    """Wait until the projection holds every command acknowledged so far (or ``seq``):
    a client reads what it has been told happened."""
    assert service.sequencer is not None and service.projector is not None
    wanted = service.sequencer.last_seq if seq is None else seq
    if not await service.projector.wait_for(wanted, PROJECTION_WAIT_SECONDS):
        raise ApiError(503, "PROJECTION_LAGGING", "history is catching up; retry shortly")


def _reads(service: ExchangeService) -> Any:
    return service.reader().connect()


def _order_views(service: ExchangeService, records: list[queries.OrderRecord]) -> list[OrderView]:
    return [order_view(market_format(service, r.market), r) for r in records]


def _market_filter(service: ExchangeService, market: str | None) -> str | None:
    assert service.sequencer is not None
    if market is not None and market not in service.sequencer.engine.markets:
        raise ApiError(404, "UNKNOWN_MARKET", f"no market {market!r}; see GET /api/v1/markets")
    return market


Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)]
MarketFilter = Annotated[str | None, Query(max_length=32, description="one market only")]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="cursor: next_before")]
Millis = Annotated[int | None, Query(ge=0, le=2**62)]


@router.get(
    "/orders",
    responses={
        **json_response(list[OrderView], 200, "Open orders, oldest first"),
        **errors(*SIGNED_IN, 404),
    },
)
async def list_open_orders(
    caller: Caller, request: Request, market: MarketFilter = None
) -> Response:
    """The caller's open orders (resting, partially filled, untriggered stops)."""
    service = service_of(request)
    _market_filter(service, market)
    await caught_up(service)
    async with _reads(service) as connection:
        records = await queries.open_orders(connection, caller.user_id, market=market)
    return _json(_order_views(service, records))


OrderStatusName = Literal[
    "UNTRIGGERED", "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED",
    "EXPIRED_IN_MATCH",
]  # fmt: skip


@router.get(
    "/orders/history",
    responses={**json_response(OrderPage, 200, "Newest first"), **errors(*SIGNED_IN, 404)},
)
async def order_history(
    caller: Caller,
    request: Request,
    market: MarketFilter = None,
    status: OrderStatusName | None = None,
    start_time: Millis = None,
    end_time: Millis = None,
    before: Before = None,
    limit: Limit = queries.DEFAULT_LIMIT,
) -> Response:
    """All the caller's orders, newest first; pass ``next_before`` as ``before`` for the
    next page."""
    service = service_of(request)
    _market_filter(service, market)
    await caught_up(service)
    async with _reads(service) as connection:
        page = await queries.order_history(
            connection, caller.user_id, market=market, status=status, start_time=start_time,
            end_time=end_time, before=before, limit=limit,
        )  # fmt: skip
    return _json(OrderPage(_order_views(service, page.items), page.next_before))


async def _one_order(
    service: ExchangeService,
    user: int,
    *,
    order_id: int | None = None,
    client_order_id: str | None = None,
) -> OrderView:
    async with _reads(service) as connection:
        record = await queries.get_order(
            connection, user, order_id=order_id, client_order_id=client_order_id
        )
    if record is None:  # someone else's order is not found either
        raise ApiError(404, "UNKNOWN_ORDER", "you have no such order")
    return _order_views(service, [record])[0]


# Cancel and amend: 409 ORDER_NOT_OPEN for the caller's own order that has finished.
CHANGE_ERRORS = errors(*SIGNED_IN, 409)
OrderId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# Routed with the :path converter: the server decodes %2F to '/' before routing, and an
# id holding '/' is still one parameter (before, it matched no route: an empty 307).
ClientOrderIdPath = Annotated[
    str,
    Path(
        min_length=1, max_length=64, pattern=f"^[{CLIENT_ORDER_ID_CHARS}]+$",
        description="percent-encode a '/' in the id as %2F",
    ),
]  # fmt: skip


@router.get(
    "/orders/{order_id}",
    responses={**json_response(OrderView, 200, "The order"), **errors(*SIGNED_IN)},
)
async def get_order(caller: Caller, request: Request, order_id: OrderId) -> Response:
    """One of the caller's orders by id."""
    service = service_of(request)
    await caught_up(service)
    return _json(await _one_order(service, caller.user_id, order_id=order_id))


@router.get(
    "/orders/by-client-id/{client_order_id:path}",
    responses={**json_response(OrderView, 200, "The order"), **errors(*SIGNED_IN)},
)
async def get_order_by_client_id(
    caller: Caller, request: Request, client_order_id: ClientOrderIdPath
) -> Response:
    """One of the caller's orders by its client order id."""
    service = service_of(request)
    await caught_up(service)
    return _json(await _one_order(service, caller.user_id, client_order_id=client_order_id))


async def _not_open(
    service: ExchangeService, user: int, order_id: int, client_order_id: str
) -> NoReturn:
    """Why an order cannot be changed: 409 if it is the caller's and finished, else 404
    (another user's order is indistinguishable from no order)."""
    await caught_up(service)
    async with _reads(service) as connection:
        record = await queries.get_order(
            connection, user, order_id=order_id or None, client_order_id=client_order_id or None
        )
    if record is not None:
        raise ApiError(409, "ORDER_NOT_OPEN", f"the order is {record.status} already")
    raise ApiError(404, "UNKNOWN_ORDER", "you have no such open order")


async def _changed_order(
    service: ExchangeService, user: int, command: CancelOrder | AmendOrder
) -> Response:
    """Submit a cancel or an amend; answer the order as it left it, from the in-memory
    order states (the projection's fold, with no wait for the projection)."""
    engine = _engine(service)
    order_id = command.order_id or engine.client_ids.get((user, command.client_order_id), 0)
    order = engine.orders.get(order_id)
    assert service.sequencer is not None
    result = await service.sequencer.submit(command)
    if result.status != "ACCEPTED":
        if result.code == "UNKNOWN_ORDER":
            await _not_open(service, user, command.order_id, command.client_order_id)
        raise engine_rejection(result)
    state = service.fill_totals.state(order_id)
    if order is None or order.order_id != result.order_id or state is None:
        # a different order by now (or, never seen, one the read model does not hold)
        await caught_up(service, result.seq)
        return _json(await _one_order(service, user, order_id=result.order_id))
    return _json(order_view(market_format(service, state.market), state))


@router.delete(
    "/orders/{order_id}",
    responses={**json_response(OrderView, 200, "The cancelled order"), **CHANGE_ERRORS},
)
async def cancel_order(caller: Trader, request: Request, order_id: OrderId) -> Response:
    """Cancel one of the caller's open orders. Another user's order answers 404, an
    order that is no longer open 409 ORDER_NOT_OPEN."""
    return await _changed_order(service_of(request), caller.user_id,
                                CancelOrder(caller.user_id, order_id))  # fmt: skip


@router.delete(
    "/orders/by-client-id/{client_order_id:path}",
    responses={**json_response(OrderView, 200, "The cancelled order"), **CHANGE_ERRORS},
)
async def cancel_order_by_client_id(
    caller: Trader, request: Request, client_order_id: ClientOrderIdPath
) -> Response:
    """Cancel one of the caller's open orders by its client order id."""
    command = CancelOrder(caller.user_id, client_order_id=client_order_id)
    return await _changed_order(service_of(request), caller.user_id, command)


class Cancelled(msgspec.Struct):
    cancelled: list[int]


@router.delete(
    "/orders",
    responses={
        **json_response(Cancelled, 200, "Ids of the cancelled orders"),
        **errors(*SIGNED_IN, 404),
    },
)
async def cancel_all(caller: Trader, request: Request, market: MarketFilter = None) -> Response:
    """Cancel all the caller's open orders, or those of one market."""
    service = service_of(request)
    _market_filter(service, market)
    assert service.sequencer is not None
    result = await service.sequencer.submit(CancelAll(caller.user_id, market or ""))
    if result.status != "ACCEPTED":
        raise engine_rejection(result)
    ids = [
        event.order_id
        for event in result.events
        if isinstance(event, OrderUpdated) and event.user == caller.user_id
        and event.status == "CANCELED"
    ]  # fmt: skip
    return _json(Cancelled(ids))


AMENDED_QUANTITY = (
    "the order's new total quantity, what is filled already included (not the remainder): "
    "it must exceed the filled quantity, and what stays open is the difference"
)


class AmendRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    price: Annotated[Decimal40, msgspec.Meta(description="the new limit price")] | None = None
    quantity: Annotated[Decimal40, msgspec.Meta(description=AMENDED_QUANTITY)] | None = None


@router.patch(
    "/orders/{order_id}",
    openapi_extra=json_body(AmendRequest),
    responses={**json_response(OrderView, 200, "The amended order"), **CHANGE_ERRORS},
)
async def amend_order(caller: Trader, request: Request, order_id: OrderId) -> Response:
    """Change a resting limit order's price and/or quantity, keeping its order id.
    ``quantity`` is the new **total**, fills included, not the remainder: an order of 1
    with 0.4 filled, amended to 0.7, keeps 0.3 open (and is refused at 0.4 or less). The
    same price with a smaller quantity keeps the order's place in the queue (time
    priority); a new price or a larger quantity sends it to the back of its price level,
    as if placed now, where it may trade at once (a LIMIT_MAKER order that would is
    refused). The funds locked follow the open remainder."""
    service = service_of(request)
    body: AmendRequest = await decode(request, AmendRequest)
    if body.price is None and body.quantity is None:
        raise ApiError(400, "INVALID_REQUEST", "give price, quantity or both")
    assert service.sequencer is not None
    engine = service.sequencer.engine
    order = engine.orders.get(order_id)
    if order is None or order.user != caller.user_id:
        await _not_open(service, caller.user_id, order_id, "")
    rules = engine.markets[order.market].rules
    command = AmendOrder(
        caller.user_id, order_id,
        quantity=_amount(body.quantity, rules.parse_quantity, "quantity"),
        price=_amount(body.price, rules.parse_price, "price", MAX_PRICE_TICKS),
    )  # fmt: skip
    return await _changed_order(service, caller.user_id, command)


@router.get(
    "/trades",
    responses={
        **json_response(FillPage, 200, "The caller's fills, newest first"),
        **errors(*SIGNED_IN, 404),
    },
)
async def my_trades(
    caller: Caller,
    request: Request,
    market: MarketFilter = None,
    order_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    start_time: Millis = None,
    end_time: Millis = None,
    before: Before = None,
    limit: Limit = queries.DEFAULT_LIMIT,
) -> Response:
    """The caller's fills with price, quantity, fee and fee asset, maker or taker."""
    service = service_of(request)
    _market_filter(service, market)
    await caught_up(service)
    async with _reads(service) as connection:
        page = await queries.user_fills(
            connection, caller.user_id, market=market, order_id=order_id,
            start_time=start_time, end_time=end_time, before=before, limit=limit,
        )  # fmt: skip
    items = [projected_fill_view(market_format(service, f.market), f) for f in page.items]
    return _json(FillPage(items, page.next_before))


@router.get(
    "/ledger",
    responses={
        **json_response(LedgerPage, 200, "Balance changes, newest first"),
        **errors(*SIGNED_IN, 404),
    },
)
async def ledger(
    caller: Caller,
    request: Request,
    asset: Annotated[str | None, Query(max_length=32)] = None,
    before: Before = None,
    limit: Limit = queries.DEFAULT_LIMIT,
) -> Response:
    """Every change of the caller's balances: the account (available or locked), the
    signed amount, the balance after it, the reason and its reference (order or trade id)."""
    service = service_of(request)
    assert service.sequencer is not None
    engine = service.sequencer.engine
    if asset is not None and asset not in engine.assets:
        raise ApiError(404, "UNKNOWN_ASSET", f"no asset {asset!r}; see GET /api/v1/assets")
    await caught_up(service)
    async with _reads(service) as connection:
        page = await queries.ledger_history(
            connection, caller.user_id, asset=asset, before=before, limit=limit
        )
    items = []
    for entry in page.items:
        decimals = engine.assets[entry.asset].decimals
        items.append(LedgerEntry(
            id=entry.id, asset=entry.asset, account=entry.account,
            delta=format_amount(entry.delta, decimals),
            balance_after=format_amount(entry.balance_after, decimals), reason=entry.reason,
            ref=entry.ref, time=entry.ts,
        ))  # fmt: skip
    return _json(LedgerPage(items, page.next_before))


class Holding(msgspec.Struct, kw_only=True):
    asset: str
    market: str
    quote_asset: str
    balance: str
    position: str
    average_cost: str | None
    last_price: str | None
    realised_pnl: str
    unrealised_pnl: str | None


def _quote_atoms(value: Fraction | int, decimals: int) -> str:
    return format_amount(round(value), decimals)  # round() on a Fraction is half-even


def _holding(engine: Engine, user: int, market: str, position: Position) -> Holding:
    state = engine.markets[market]
    base_decimals = engine.assets[state.base].decimals
    quote_decimals = engine.assets[state.quote].decimals
    last = state.last_price or None  # ticks; 0 before the market's first trade
    # quote atoms per base atom, from a price in ticks
    scale = Fraction(state.rules.tick_size) * 10**quote_decimals / 10**base_decimals
    last_price = None if last is None else last * scale
    average = position.average_cost
    unrealised = position.unrealised(last_price)
    available, locked = engine.balance(user, state.base)
    unit = Fraction(10**base_decimals, 10**quote_decimals)  # atoms/atom -> units/unit
    return Holding(
        asset=state.base, market=market, quote_asset=state.quote,
        balance=format_amount(available + locked, base_decimals),
        position=format_amount(position.quantity, base_decimals),
        average_cost=None if average is None
        else _quote_atoms(average * unit * 10**quote_decimals, quote_decimals),
        last_price=None if last is None else format_units(last, state.rules.tick_size),
        realised_pnl=_quote_atoms(position.realised, quote_decimals),
        unrealised_pnl=None if unrealised is None else _quote_atoms(unrealised, quote_decimals),
    )  # fmt: skip


@router.get(
    "/portfolio",
    responses={
        **json_response(list[Holding], 200, "One entry per market traded"),
        **errors(*SIGNED_IN),
    },
)
async def portfolio_view(caller: Caller, request: Request) -> Response:
    """Per market the caller has traded: the base balance, the position bought there, its
    weighted average cost, realised P&L and unrealised P&L at the last price, all in the
    market's quote asset (method in docs/trading.md)."""
    service = service_of(request)
    engine = _engine(service)
    await caught_up(service)
    async with _reads(service) as connection:
        held = await queries.user_positions(connection, caller.user_id)
    return _json([_holding(engine, caller.user_id, m, p) for m, p in held.items()])


async def place_order_direct(request: Request) -> Response:
    """POST /orders without FastAPI's per-request dependency machinery (the hot path);
    the FastAPI route above documents it in OpenAPI and shares every line of logic."""
    return await place_order(await trader(request), request)


async def cancel_order_direct(request: Request) -> Response:
    """DELETE /orders/{order_id}, served like :func:`place_order_direct`."""
    order_id: int = request.path_params["order_id"]
    if not 1 <= order_id <= 2**63 - 1:
        raise ApiError(400, "INVALID_REQUEST", "path.order_id: must be 1..2^63-1")
    return await cancel_order(await trader(request), request, order_id)
