"""`/api/v1` trading: place, cancel, amend orders; balances; the development faucet.

The handlers parse, authorise, call the application services (mercato.application:
trading, portfolio) and format the answer. The order path is lean on purpose: the body
is decoded and validated by msgspec, the caller's eligibility is remembered, and the
journal is the durability point, so placing an order makes no database round trip.
Reads of history (orders, fills, ledger) come from the SQL projection, after it has
caught up with everything acknowledged so far.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import msgspec
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from mercato.api.auth_routes import Caller, caller_with, service_of
from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors, json_body, json_response
from mercato.api.ratelimit import RateLimiter
from mercato.application.errors import ServiceError
from mercato.application.history import History
from mercato.application.portfolio import BalanceFigures, HoldingFigures, Portfolio
from mercato.application.trading import Trading
from mercato.auth.sessions import Principal
from mercato.core.commands import AmendOrder, CancelOrder
from mercato.core.model import OrderStatus, OrderType, Side, StpMode, TimeInForce
from mercato.core.money import format_amount, format_units
from mercato.core.order_state import fills_of
from mercato.core.order_state import fold as fold_order
from mercato.core.results import Result
from mercato.port import ExchangeView
from mercato.service import ExchangeService
from mercato.store import queries
from mercato.wire.decimals import MarketFormat
from mercato.wire.native import (
    Balance,
    FillView,
    OrderView,
    balance,
    order_view,
    projected_fill_view,
    trade_fill_view,
)

router = APIRouter(prefix="/api/v1", tags=["trading"])

Str32 = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Decimal40 = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
# Binance's client order id alphabet (docs/trading.md), up to the engine's 64 characters.
CLIENT_ORDER_ID_CHARS = r"A-Za-z0-9._:/\-"
ClientOrderId = Annotated[str, msgspec.Meta(max_length=64, pattern=f"^[{CLIENT_ORDER_ID_CHARS}]*$")]


class OrderRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Decimal strings for every amount; integers are refused, floats never accepted."""

    market: Str32
    side: Side
    type: OrderType = "LIMIT"
    quantity: Decimal40 | None = None
    price: Decimal40 | None = None
    quote_quantity: Decimal40 | None = None
    stop_price: Decimal40 | None = None
    iceberg_quantity: Decimal40 | None = None
    time_in_force: TimeInForce = "GTC"
    expire_at: Annotated[int, msgspec.Meta(ge=0, le=2**62)] = 0
    client_order_id: ClientOrderId = ""
    stp: StpMode | None = None


class PlacedOrder(msgspec.Struct, kw_only=True):
    order: OrderView
    fills: list[FillView]
    duplicate: bool = False


class FaucetRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: Str32
    amount: Decimal40


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


def trading_of(service: ExchangeService) -> Trading:
    assert service.trading is not None, "a ready service has its application services"
    return service.trading


def history_of(service: ExchangeService) -> History:
    assert service.history is not None, "a ready service has its application services"
    return service.history


def portfolio_of(service: ExchangeService) -> Portfolio:
    assert service.portfolio is not None, "a ready service has its application services"
    return service.portfolio


async def trader(request: Request) -> Principal:
    """A verified user (session, or key with ``trade``), charged the order-entry budget."""
    caller = await caller_with(request, "trade")
    limiter: RateLimiter = request.app.state.limiter
    await limiter.check("orders", str(caller.user_id), "of order entry for this account")
    await trading_of(service_of(request)).require_trader(caller.user_id)
    return caller


Trader = Annotated[Principal, Depends(trader)]


def market_format(service: ExchangeService, market: str) -> MarketFormat:
    """The market's formatter, kept by market data (refreshed when the market changes)."""
    assert service.market_data is not None
    return service.market_data.formats[market]


def placed_view(service: ExchangeService, user: int, result: Result) -> PlacedOrder:
    state = fold_order(result.events, result.order_id, _view(service).last_ts)
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
    trading = trading_of(service)
    body: OrderRequest = await decode(request, OrderRequest)
    outcome = await trading.place(trading.order_command(caller.user_id, body))
    if isinstance(outcome, Result):
        return _json(placed_view(service, caller.user_id, outcome), 201)
    order, fills = await trading.original(caller.user_id, *outcome)
    fmt = market_format(service, order.market)
    return _json(
        PlacedOrder(
            order=order_view(fmt, order),
            fills=[projected_fill_view(fmt, f) for f in fills],
            duplicate=True,
        )
    )


def _view(service: ExchangeService) -> ExchangeView:
    assert service.port is not None
    return service.port.view


@router.get(
    "/balances",
    responses={**json_response(list[Balance], 200, "One entry per asset"), **errors(*SIGNED_IN)},
)
async def balances(request: Request, caller: Caller) -> Response:
    """Available and locked balance of every asset, live from the engine."""
    portfolio = portfolio_of(service_of(request))
    return _json([balance_view(b) for b in portfolio.balances(caller.user_id)])


def balance_view(figures: BalanceFigures) -> Balance:
    return balance(figures.asset, figures.available, figures.locked, figures.decimals)


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
    trading = trading_of(service)
    trading.require_faucet()
    body: FaucetRequest = await decode(request, FaucetRequest)
    await trading.faucet(caller.user_id, body.asset, body.amount)
    return _json(balance_view(portfolio_of(service).balance(caller.user_id, body.asset)))


# -- reads of the projection -------------------------------------------------------------


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
    assert service.projection is not None
    await service.projection.caught_up(seq)


def _order_views(service: ExchangeService, records: list[queries.OrderRecord]) -> list[OrderView]:
    return [order_view(market_format(service, r.market), r) for r in records]


def _market_filter(service: ExchangeService, market: str | None) -> str | None:
    return trading_of(service).check_market(market)


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
    records = await history_of(service).open_orders(caller.user_id, market=market)
    return _json(_order_views(service, records))


@router.get(
    "/orders/history",
    responses={**json_response(OrderPage, 200, "Newest first"), **errors(*SIGNED_IN, 404)},
)
async def order_history(
    caller: Caller,
    request: Request,
    market: MarketFilter = None,
    status: OrderStatus | None = None,
    start_time: Millis = None,
    end_time: Millis = None,
    before: Before = None,
    limit: Limit = queries.DEFAULT_LIMIT,
) -> Response:
    """All the caller's orders, newest first; pass ``next_before`` as ``before`` for the
    next page."""
    service = service_of(request)
    _market_filter(service, market)
    page = await history_of(service).orders(
        caller.user_id, market=market, status=status, start_time=start_time,
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
    record = await trading_of(service).order_record(
        user, order_id=order_id, client_order_id=client_order_id
    )
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
    await trading_of(service).why_not_open(user, order_id, client_order_id)


async def _changed_order(
    service: ExchangeService, user: int, command: CancelOrder | AmendOrder
) -> Response:
    """Submit a cancel or an amend; answer the order as it left it, from the in-memory
    order states (the projection's fold, with no wait for the projection)."""
    view = _view(service)
    order_id = command.order_id or view.order_id_of(user, command.client_order_id)
    order = view.order(order_id)
    assert service.port is not None
    result = await service.port.submit(command)
    if result.status != "ACCEPTED":
        if result.code == "UNKNOWN_ORDER":
            await _not_open(service, user, command.order_id, command.client_order_id)
        raise ServiceError.rejected(result)
    state = service.order_states.state(order_id)
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
    ids = await trading_of(service_of(request)).cancel_all(caller.user_id, market)
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
    command = await trading_of(service).amend_command(
        caller.user_id, order_id, body.price, body.quantity
    )
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
    page = await history_of(service).fills(
        caller.user_id, market=market, order_id=order_id,
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
    portfolio = portfolio_of(service_of(request))
    page = await portfolio.ledger(caller.user_id, asset, before, limit)
    items = []
    for entry in page.items:
        decimals = portfolio.decimals(entry.asset)
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


def holding_view(figures: HoldingFigures) -> Holding:
    base_decimals, quote_decimals = figures.base_decimals, figures.quote_decimals
    average, last, unrealised = figures.average_cost, figures.last_price, figures.unrealised_pnl
    return Holding(
        asset=figures.base, market=figures.market, quote_asset=figures.quote,
        balance=format_amount(figures.balance, base_decimals),
        position=format_amount(figures.position, base_decimals),
        average_cost=None if average is None else format_amount(average, quote_decimals),
        last_price=None if last is None else format_units(last, figures.tick_size),
        realised_pnl=format_amount(figures.realised_pnl, quote_decimals),
        unrealised_pnl=None if unrealised is None else format_amount(unrealised, quote_decimals),
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
    holdings = await portfolio_of(service_of(request)).holdings(caller.user_id)
    return _json([holding_view(h) for h in holdings])


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
