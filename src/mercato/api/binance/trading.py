"""Binance's spot order operations over Mercato's application services, shared by the
REST routes (``/api/v3``) and the WebSocket API (``/ws-api/v3``).

Each operation takes the caller (already authenticated, its permission checked) and the
request's parameters as plain strings, exactly as Binance names them, and answers the
JSON object (or list) Binance answers, or raises :class:`BinanceError`. They parse and
check Binance's parameters, build Mercato's ticket or command and call the application
services (``Trading``, ``History``, ``Portfolio``); no trading rule lives here.
"""

from __future__ import annotations

import base64
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from mercato.api.binance import symbols_of
from mercato.api.trading_routes import history_of, market_format, portfolio_of, trading_of
from mercato.auth.sessions import Principal
from mercato.core.commands import AmendOrder, CancelOrder
from mercato.core.errors import CodedError
from mercato.core.model import OrderType, Side, StpMode, TimeInForce
from mercato.core.order_state import fills_of
from mercato.core.order_state import fold as fold_order
from mercato.core.results import Result
from mercato.service import ExchangeService
from mercato.store import queries
from mercato.wire import binance_orders as shapes
from mercato.wire.binance import BinanceError, binance_symbol
from mercato.wire.binance_errors import (
    CANCEL_REFUSALS,
    QUERY_REFUSALS,
    from_coded,
    illegal_characters,
    invalid_parameter,
    mandatory_parameter,
    not_required,
    order_refusal,
)

Params = Mapping[str, str]
Answer = dict[str, object]

ORDER_TYPES: tuple[OrderType, ...] = (
    "LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)  # fmt: skip
SIDES: tuple[Side, ...] = ("BUY", "SELL")
# Binance's spot offers GTC, IOC and FOK; GTD (with goodTillDate, in ms, named as on
# Binance's futures API) is Mercato's own, accepted here too.
TIMES_IN_FORCE: tuple[TimeInForce, ...] = ("GTC", "IOC", "FOK", "GTD")
STP_MODES: tuple[StpMode, ...] = (
    "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT",
)  # fmt: skip
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")
CANCEL_RESTRICTIONS = {"ONLY_NEW": "NEW", "ONLY_PARTIALLY_FILLED": "PARTIALLY_FILLED"}

# Binance's parameters per order type ("Additional mandatory parameters based on type").
NEEDS: dict[str, tuple[str, ...]] = {
    "LIMIT": ("timeInForce", "quantity", "price"),
    "LIMIT_MAKER": ("quantity", "price"),
    "MARKET": (),
    "STOP_LOSS": ("quantity", "stopPrice"),
    "STOP_LOSS_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
    "TAKE_PROFIT": ("quantity", "stopPrice"),
    "TAKE_PROFIT_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
}
# ... and those a type does not take (Binance: -1106 "Parameter '%s' sent when not required.")
REFUSES: dict[str, tuple[str, ...]] = {
    "LIMIT": ("stopPrice",),
    "LIMIT_MAKER": ("timeInForce", "stopPrice"),
    "MARKET": ("timeInForce", "price", "stopPrice", "icebergQty"),
    "STOP_LOSS": ("timeInForce", "price", "icebergQty"),
    "STOP_LOSS_LIMIT": (),
    "TAKE_PROFIT": ("timeInForce", "price", "icebergQty"),
    "TAKE_PROFIT_LIMIT": (),
}
DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
CLIENT_ID = re.compile(r"^[a-zA-Z0-9\-_.:/]{1,36}$")  # Binance's newClientOrderId
CLIENT_ID_RANGE = "^[a-zA-Z0-9-_]{1,36}$"
INTEGER = re.compile(r"^-?[0-9]{1,19}$")
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000


# -- the services ---------------------------------------------------------------------------


# -- parameters -----------------------------------------------------------------------------


def text(params: Params, name: str) -> str | None:
    """A parameter's value; an empty one counts as not sent, as on Binance."""
    value = params.get(name)
    return value if value else None


def required(params: Params, name: str) -> str:
    value = text(params, name)
    if value is None:
        raise mandatory_parameter(name)
    return value


def decimal(params: Params, name: str) -> str | None:
    value = text(params, name)
    if value is not None and not DECIMAL.match(value):
        raise illegal_characters(name, DECIMAL_RANGE)
    return value


def integer(params: Params, name: str, low: int = 0, high: int = 2**63 - 1) -> int | None:
    value = text(params, name)
    if value is None:
        return None
    if not INTEGER.match(value):
        raise illegal_characters(name, "^-?[0-9]{1,19}$")
    number = int(value)
    if not low <= number <= high:
        raise invalid_parameter(name)
    return number


def boolean(params: Params, name: str) -> bool:
    value = text(params, name)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise invalid_parameter(name)
    return value.lower() == "true"


def choice(params: Params, name: str, allowed: Sequence[str], error: BinanceError) -> str | None:
    value = text(params, name)
    if value is not None and value not in allowed:
        raise error
    return value


def market_of(service: ExchangeService, params: Params) -> tuple[str, str]:
    """(Binance symbol, Mercato market) of the ``symbol`` parameter."""
    symbol = required(params, "symbol").upper()
    return symbol, symbols_of(service).market(symbol)


def client_id(params: Params, name: str) -> str | None:
    value = text(params, name)
    if value is not None and not CLIENT_ID.match(value):
        raise illegal_characters(name, CLIENT_ID_RANGE)
    return value


# Client order ids need to be unique, not secret (the key is the user's own): a PRNG
# seeded once from the OS draws them without a system call per order.
_CLIENT_IDS = random.Random(secrets.randbits(128))


def new_client_id() -> str:
    """A client order id like those Binance generates: 22 characters (URL-safe base64
    of 128 random bits, in Binance's newClientOrderId alphabet)."""
    raw = _CLIENT_IDS.getrandbits(128).to_bytes(16, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def limit_of(params: Params) -> int:
    return integer(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT


# -- placing --------------------------------------------------------------------------------


@dataclass(slots=True)
class Ticket:
    """An order as Binance's parameters describe it, in the application's terms
    (:class:`mercato.application.trading.OrderTicket`)."""

    market: str
    side: Side
    type: OrderType
    quantity: str | None
    price: str | None
    quote_quantity: str | None
    stop_price: str | None
    iceberg_quantity: str | None
    time_in_force: TimeInForce
    expire_at: int
    client_order_id: str
    stp: StpMode | None


@dataclass(slots=True)
class OrderRequest:
    symbol: str
    ticket: Ticket
    response_type: str
    fresh_client_id: bool  # generated here: no idempotency check needed


def _order_type(params: Params) -> OrderType:
    value = required(params, "type")
    for known in ORDER_TYPES:
        if value == known:
            return known
    raise BinanceError(400, -1116, "Invalid orderType.")


def _side(params: Params) -> Side:
    value = required(params, "side")
    for known in SIDES:
        if value == known:
            return known
    raise BinanceError(400, -1117, "Invalid side.")


def _time_in_force(params: Params) -> TimeInForce:
    value = text(params, "timeInForce") or "GTC"
    for known in TIMES_IN_FORCE:
        if value == known:
            return known
    raise BinanceError(400, -1115, "Invalid timeInForce.")


def _stp(params: Params) -> StpMode | None:
    value = text(params, "selfTradePreventionMode")
    if value is None:
        return None
    for known in STP_MODES:
        if value == known:
            return known
    raise invalid_parameter("selfTradePreventionMode")


def _check_parameters(params: Params, order_type: str) -> None:
    for name in NEEDS[order_type]:
        required(params, name)
    for name in REFUSES[order_type]:
        if text(params, name) is not None:
            raise not_required(name)
    if order_type == "MARKET":
        given = [n for n in ("quantity", "quoteOrderQty") if text(params, n) is not None]
        if not given:
            raise BinanceError(
                400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were "
                "empty/null!",
            )  # fmt: skip
        if len(given) == 2:
            raise not_required("quoteOrderQty")
    elif text(params, "quoteOrderQty") is not None:
        raise not_required("quoteOrderQty")


def order_request(service: ExchangeService, params: Params) -> OrderRequest:
    """Binance's new-order parameters, checked as Binance checks them, as a ticket."""
    symbol, market = market_of(service, params)
    side = _side(params)
    order_type = _order_type(params)
    time_in_force = _time_in_force(params)
    _check_parameters(params, order_type)
    expire_at = integer(params, "goodTillDate", 1) or 0
    if (time_in_force == "GTD") != bool(expire_at):
        raise mandatory_parameter("goodTillDate") if not expire_at else not_required("goodTillDate")
    default_response = "FULL" if order_type in ("LIMIT", "MARKET") else "ACK"
    response_type = choice(
        params, "newOrderRespType", RESPONSE_TYPES, invalid_parameter("newOrderRespType")
    )
    ticket = Ticket(
        market, side, order_type, decimal(params, "quantity"), decimal(params, "price"),
        decimal(params, "quoteOrderQty"), decimal(params, "stopPrice"),
        decimal(params, "icebergQty"), time_in_force, expire_at,
        client_id(params, "newClientOrderId") or new_client_id(), _stp(params),
    )  # fmt: skip
    fresh = text(params, "newClientOrderId") is None
    return OrderRequest(symbol, ticket, response_type or default_response, fresh)


async def _placed(service: ExchangeService, principal: Principal, request: OrderRequest
                  ) -> Result:  # fmt: skip
    trading = trading_of(service)
    ticket = request.ticket
    try:
        await trading.require_trader(principal.user_id)
        command = trading.order_command(principal.user_id, ticket)
        outcome = await trading.place(command, fresh_client_id=request.fresh_client_id)
    except CodedError as error:
        raise order_refusal(error, ticket) from None
    if not isinstance(outcome, Result):
        # The client order id names an order already: never a second one (Binance refuses
        # a newClientOrderId in use; Mercato's id is an idempotency key for ever).
        raise BinanceError(400, -2010, "Duplicate order sent.")
    return outcome


def placement_answer(service: ExchangeService, user: int, symbol: str, result: Result,
                     response_type: str) -> Answer:  # fmt: skip
    assert service.port is not None
    state = fold_order(result.events, result.order_id, service.port.view.last_ts)
    assert state is not None, "an accepted order always has its OrderAccepted event"
    if response_type == "ACK":
        return shapes.ack(symbol, state)
    fmt = market_format(service, state.market)
    if response_type == "RESULT":
        return shapes.result(fmt, symbol, state)
    fills = [shapes.placement_fill(fmt, t, user) for t in fills_of(result.events, state.order_id)]
    return shapes.full(fmt, symbol, state, fills)


async def place_order(service: ExchangeService, principal: Principal, params: Params) -> Answer:
    """``POST /api/v3/order`` / ``order.place``."""
    request = order_request(service, params)
    result = await _placed(service, principal, request)
    return placement_answer(service, principal.user_id, request.symbol, result,
                            request.response_type)  # fmt: skip


async def test_order(service: ExchangeService, principal: Principal, params: Params) -> Answer:
    """``POST /api/v3/order/test``: every check of the parameters and of the market's
    filters that needs no book (the engine's own checks against the book and the balance
    happen only when placing), and nothing placed. With ``computeCommissionRates`` the
    market's rates."""
    request = order_request(service, params)
    trading = trading_of(service)
    try:
        await trading.require_trader(principal.user_id)
        trading.order_command(principal.user_id, request.ticket)
    except CodedError as error:
        raise order_refusal(error, request.ticket) from None
    if not boolean(params, "computeCommissionRates"):
        return {}
    maker, taker = fee_rates(service, request.ticket.market)
    rates = {"maker": shapes.rate(maker), "taker": shapes.rate(taker)}
    zero = {"maker": shapes.ZERO, "taker": shapes.ZERO}
    return {
        "standardCommissionForOrder": rates, "specialCommissionForOrder": zero,
        "taxCommissionForOrder": zero,
        "discount": {"enabledForAccount": False, "enabledForSymbol": False,
                     "discountAsset": "BNB", "discount": shapes.ZERO},
    }  # fmt: skip


def fee_rates(service: ExchangeService, market: str) -> tuple[Decimal, Decimal]:
    assert service.port is not None
    spec = service.port.view.spec(market)
    assert spec is not None
    return Decimal(spec.maker_fee), Decimal(spec.taker_fee)


# -- one order ------------------------------------------------------------------------------


def _order_ids(params: Params) -> tuple[int, str]:
    """(orderId or 0, origClientOrderId or "") of a request about one order."""
    order_id = integer(params, "orderId", 1) or 0
    original = client_id(params, "origClientOrderId") or ""
    if not order_id and not original:
        raise BinanceError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                           "but both were empty/null!")  # fmt: skip
    return order_id, original


async def _record(service: ExchangeService, user: int, market: str, order_id: int,
                  original: str) -> queries.OrderRecord:  # fmt: skip
    """The user's order on ``market`` by id (then checked against its client id, as
    Binance does: CLIENT_ORDER_ID_MISMATCH), or UNKNOWN_ORDER."""
    assert service.projection is not None
    await service.projection.caught_up()
    record = await trading_of(service).order_record(
        user, order_id=order_id or None, client_order_id=None if order_id else original
    )
    if record.market != market:
        raise from_coded(CodedError("UNKNOWN_ORDER", "no such order"), QUERY_REFUSALS)
    if order_id and original and record.client_order_id != original:
        mismatch = CodedError("CLIENT_ORDER_ID_MISMATCH", "another order has that client id")
        raise from_coded(mismatch, QUERY_REFUSALS)
    return record


async def query_order(service: ExchangeService, principal: Principal, params: Params) -> Answer:
    """``GET /api/v3/order`` / ``order.status``."""
    symbol, market = market_of(service, params)
    order_id, original = _order_ids(params)
    try:
        record = await _record(service, principal.user_id, market, order_id, original)
    except CodedError as error:
        raise from_coded(error, QUERY_REFUSALS) from None
    return shapes.queried(market_format(service, market), symbol, record)


async def _changed(service: ExchangeService, user: int, command: CancelOrder | AmendOrder
                   ) -> shapes.SequencedRow:  # fmt: skip
    """Submit a cancel or an amend; the order as it left it (the in-memory order states,
    else the projection)."""
    assert service.port is not None
    view = service.port.view
    order_id = command.order_id or view.order_id_of(user, command.client_order_id)
    order = view.order(order_id)
    result = await service.port.submit(command)
    trading = trading_of(service)
    if result.status != "ACCEPTED":
        if result.code == "UNKNOWN_ORDER":
            await trading.why_not_open(user, command.order_id, command.client_order_id)
        raise CodedError(result.code, result.message)
    state = service.order_states.state(order_id)
    if order is None or order.order_id != result.order_id or state is None:
        assert service.projection is not None
        await service.projection.caught_up(result.seq)
        return await trading.order_record(user, order_id=result.order_id)
    return state


def _check_restrictions(service: ExchangeService, user: int, params: Params, order_id: int,
                        original: str) -> None:  # fmt: skip
    """``cancelRestrictions``: cancel only an order in the status named (read before the
    cancel, from the engine's view; a fill in between is the race Binance has too)."""
    restriction = text(params, "cancelRestrictions")
    if restriction is None:
        return
    wanted = CANCEL_RESTRICTIONS.get(restriction)
    if wanted is None:
        raise BinanceError(400, -1145, "Invalid cancelRestrictions")
    assert service.port is not None
    view = service.port.view
    order = view.order(order_id or view.order_id_of(user, original))
    if order is not None and order.user == user:
        current = "PARTIALLY_FILLED" if order.filled else "NEW"
        if current != wanted:
            raise BinanceError(400, -2011, "Order was not canceled due to cancel restrictions.")


async def cancel_order(service: ExchangeService, principal: Principal, params: Params) -> Answer:
    """``DELETE /api/v3/order`` / ``order.cancel``."""
    symbol, market = market_of(service, params)
    order_id, original = _order_ids(params)
    cancel_id = client_id(params, "newClientOrderId") or new_client_id()
    user = principal.user_id
    assert service.port is not None
    view = service.port.view
    open_order = view.order(order_id or view.order_id_of(user, original))
    if (
        open_order is not None
        and open_order.user == user
        and (open_order.market != market or (original and open_order.client_order_id != original))
    ):
        raise from_coded(CodedError("UNKNOWN_ORDER", "no such order"), CANCEL_REFUSALS)
    _check_restrictions(service, user, params, order_id, original)
    try:
        row = await _changed(service, user, CancelOrder(user, order_id, original if not order_id
                                                        else ""))  # fmt: skip
    except CodedError as error:
        raise from_coded(error, CANCEL_REFUSALS) from None
    return shapes.canceled(market_format(service, market), symbol, row, cancel_id,
                           row.updated_at)  # fmt: skip


# -- many orders ----------------------------------------------------------------------------


async def open_orders(service: ExchangeService, principal: Principal, params: Params
                      ) -> list[Answer]:  # fmt: skip
    """``GET /api/v3/openOrders`` / ``openOrders.status``: of one symbol, or all."""
    market = market_of(service, params)[1] if text(params, "symbol") else None
    records = await history_of(service).open_orders(principal.user_id, market=market)
    return [_queried(service, r) for r in records]


def _queried(service: ExchangeService, record: queries.OrderRecord) -> Answer:
    fmt = market_format(service, record.market)
    return shapes.queried(fmt, binance_symbol(record.market), record)


async def cancel_open_orders(service: ExchangeService, principal: Principal, params: Params
                             ) -> list[Answer]:  # fmt: skip
    """``DELETE /api/v3/openOrders`` / ``openOrders.cancelAll``: every open order of the
    symbol, each as a cancel answers it. With none open, Binance's -2011."""
    symbol, market = market_of(service, params)
    user = principal.user_id
    try:
        cancelled = await trading_of(service).cancel_all(user, market)
    except CodedError as error:
        raise from_coded(error, CANCEL_REFUSALS) from None
    if not cancelled:
        raise BinanceError(400, -2011, "Unknown order sent.")
    assert service.projection is not None
    await service.projection.caught_up()
    fmt = market_format(service, market)
    answers = []
    for order_id in cancelled:
        record = await trading_of(service).order_record(user, order_id=order_id)
        answers.append(shapes.canceled(fmt, symbol, record, new_client_id(), record.updated_at))
    return answers


Row = TypeVar("Row")


async def _ascending(
    fetch: Callable[[int | None, int], Awaitable[queries.Page[Row]]],
    key: Callable[[Row], int],
    first: int | None,
    limit: int,
) -> list[Row]:
    """Up to ``limit`` rows, oldest first: the most recent ones, or with ``first`` those
    whose key is ``first`` or later (the projection pages newest first, so pages are read
    back until one starts before ``first``)."""
    if first is None:
        page = await fetch(None, limit)
        return list(reversed(page.items))
    rows: list[Row] = []
    before: int | None = None
    while True:
        page = await fetch(before, queries.MAX_LIMIT)
        rows.extend(r for r in page.items if key(r) >= first)
        if page.next_before is None or not page.items or key(page.items[-1]) < first:
            break
        before = page.next_before
    rows.reverse()
    return rows[:limit]


def _window(params: Params) -> tuple[int | None, int | None]:
    return integer(params, "startTime"), integer(params, "endTime")


async def all_orders(service: ExchangeService, principal: Principal, params: Params
                     ) -> list[Answer]:  # fmt: skip
    """``GET /api/v3/allOrders`` / ``allOrders``: orders of every status, oldest first."""
    symbol, market = market_of(service, params)
    start, end = _window(params)
    first = integer(params, "orderId", 1)
    history = history_of(service)

    def fetch(before: int | None, limit: int) -> Awaitable[queries.Page[queries.OrderRecord]]:
        return history.orders(principal.user_id, market=market, start_time=start,
                              end_time=end, before=before, limit=limit)  # fmt: skip

    records = await _ascending(fetch, lambda r: r.order_id, first, limit_of(params))
    fmt = market_format(service, market)
    return [shapes.queried(fmt, symbol, r) for r in records]


async def my_trades(service: ExchangeService, principal: Principal, params: Params
                    ) -> list[Answer]:  # fmt: skip
    """``GET /api/v3/myTrades`` / ``myTrades``: the user's trades, oldest first."""
    symbol, market = market_of(service, params)
    start, end = _window(params)
    order_id = integer(params, "orderId", 1)
    first = integer(params, "fromId", 0)
    history = history_of(service)

    def fetch(before: int | None, limit: int) -> Awaitable[queries.Page[queries.FillRecord]]:
        return history.fills(
            principal.user_id,
            market=market,
            order_id=order_id,
            start_time=start,
            end_time=end,
            before=before,
            limit=limit,
        )

    fills = await _ascending(fetch, lambda f: f.trade_id, first, limit_of(params))
    fmt = market_format(service, market)
    return [shapes.my_trade(fmt, symbol, f) for f in fills]


# -- the account ----------------------------------------------------------------------------


def account_rates(service: ExchangeService) -> tuple[Decimal, Decimal]:
    """The account's commission: Mercato's fees are per market, so the highest of the
    markets' rates (what no trade exceeds)."""
    assert service.port is not None
    view = service.port.view
    specs = [s for s in (view.spec(m) for m in view.market_symbols()) if s is not None]
    if not specs:
        return Decimal(0), Decimal(0)
    return (max(Decimal(s.maker_fee) for s in specs), max(Decimal(s.taker_fee) for s in specs))


async def account(service: ExchangeService, principal: Principal, params: Params) -> Answer:
    """``GET /api/v3/account`` / ``account.status``: balances live from the engine."""
    omit_zero = boolean(params, "omitZeroBalances")
    figures = portfolio_of(service).balances(principal.user_id)
    balances = [
        shapes.balance(f.asset, f.decimals, f.available, f.locked)
        for f in figures
        if not (omit_zero and f.available == 0 and f.locked == 0)
    ]
    maker, taker = account_rates(service)
    assert service.port is not None
    return shapes.account(
        maker=maker, taker=taker, can_trade="trade" in principal.permissions,
        can_withdraw="withdraw" in principal.permissions,
        update_time=service.port.view.last_ts or int(time.time() * 1000), balances=balances,
        uid=principal.user_id,
    )  # fmt: skip


# -- cancel-replace, amend, prevented matches -----------------------------------------------

REPLACE_MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")


def _renamed(params: Params, names: dict[str, str]) -> dict[str, str]:
    """``params`` with cancel-replace's cancel parameters under a cancel's names."""
    renamed = {k: v for k, v in params.items() if k not in names}
    renamed.update({new: params[old] for old, new in names.items() if old in params})
    return renamed


class ReplaceFailure(BinanceError):
    """A cancel-replace that failed in part (-2021, HTTP 409) or in full (-2022, HTTP
    400), with Binance's ``data``: what each half answered."""

    def __init__(self, code: int, data: dict[str, object]) -> None:
        if code == -2021:
            super().__init__(409, -2021, "Order cancel-replace partially failed.")
        else:
            super().__init__(400, -2022, "Order cancel-replace failed.")
        self.data = data

    def body(self) -> dict[str, object]:
        return {**super().body(), "data": self.data}


async def cancel_replace(service: ExchangeService, principal: Principal, params: Params
                         ) -> Answer:  # fmt: skip
    """``POST /api/v3/order/cancelReplace`` / ``order.cancelReplace``: cancel an order,
    then place a new one on the same symbol (two engine commands, in that order). Every
    parameter of both halves is checked before either is attempted, as Binance does."""
    mode = required(params, "cancelReplaceMode")
    if mode not in REPLACE_MODES:
        raise invalid_parameter("cancelReplaceMode")
    cancel_params = {
        "symbol": required(params, "symbol"),
        **_renamed({k: v for k, v in params.items() if k.startswith("cancel")},
                   {"cancelOrderId": "orderId", "cancelOrigClientOrderId": "origClientOrderId",
                    "cancelNewClientOrderId": "newClientOrderId"}),
    }  # fmt: skip
    if not text(cancel_params, "orderId") and not text(cancel_params, "origClientOrderId"):
        raise BinanceError(400, -1102, "Param 'cancelOrigClientOrderId' or 'cancelOrderId' "
                           "must be sent, but both were empty/null!")  # fmt: skip
    request = order_request(service, params)
    cancelled: Answer | None = None
    cancel_error: BinanceError | None = None
    try:
        cancelled = await cancel_order(service, principal, cancel_params)
    except BinanceError as error:
        cancel_error = error
    if cancel_error is not None and mode == "STOP_ON_FAILURE":
        raise ReplaceFailure(-2022, {
            "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
            "cancelResponse": cancel_error.body(), "newOrderResponse": None,
        })  # fmt: skip
    placed: Answer | None = None
    place_error: BinanceError | None = None
    try:
        result = await _placed(service, principal, request)
        placed = placement_answer(service, principal.user_id, request.symbol, result,
                                  request.response_type)  # fmt: skip
    except BinanceError as error:
        place_error = error
    data: dict[str, object] = {
        "cancelResult": "FAILURE" if cancel_error else "SUCCESS",
        "newOrderResult": "FAILURE" if place_error else "SUCCESS",
        "cancelResponse": cancel_error.body() if cancel_error else cancelled,
        "newOrderResponse": place_error.body() if place_error else placed,
    }
    if cancel_error and place_error:
        raise ReplaceFailure(-2022, data)
    if cancel_error or place_error:
        raise ReplaceFailure(-2021, data)
    return data


async def amend_keep_priority(service: ExchangeService, principal: Principal, params: Params
                              ) -> Answer:  # fmt: skip
    """``PUT /api/v3/order/amend/keepPriority`` / ``order.amend.keepPriority``: lower an
    open order's quantity (``newQty``, the new total), keeping its place in the queue.
    Mercato keeps the order's client order id: ``newClientOrderId`` is not applied."""
    symbol, market = market_of(service, params)
    order_id, original = _order_ids(params)
    new_qty = decimal(params, "newQty")
    if new_qty is None:
        raise mandatory_parameter("newQty")
    user = principal.user_id
    assert service.port is not None
    view = service.port.view
    order = view.order(order_id or view.order_id_of(user, original))
    if order is None or order.user != user or order.market != market:
        raise BinanceError(400, -2011, "Unknown order sent.")
    trading = trading_of(service)
    try:
        # The engine refuses a larger quantity (AMEND_QUANTITY_INCREASE) or the same one
        # (INVALID_AMEND), and allows the reduction on a CANCEL_ONLY market, as Binance.
        command = await trading.amend_command(
            user, order.order_id, None, new_qty, keep_priority=True
        )
    except CodedError as error:
        raise from_coded(error) from None
    try:
        row = await _changed(service, user, command)
    except CodedError as error:
        raise from_coded(error, CANCEL_REFUSALS) from None
    fmt = market_format(service, market)
    return {
        "transactTime": row.updated_at, "executionId": row.updated_seq,
        "amendedOrder": shapes.amended(fmt, symbol, row),
    }  # fmt: skip


async def prevented_matches(service: ExchangeService, principal: Principal, params: Params
                            ) -> list[Answer]:  # fmt: skip
    """``GET /api/v3/myPreventedMatches``, derived from the orders self-trade prevention
    expired (Mercato records no match events): one entry per such order, its id as
    ``preventedMatchId``, as the taker when it expired in the batch that placed it, else
    as the maker; the other side's order is not recorded (0)."""
    symbol, market = market_of(service, params)
    order_id = integer(params, "orderId", 1)
    match_id = integer(params, "preventedMatchId", 1)
    first = integer(params, "fromPreventedMatchId", 0)
    if order_id is None and match_id is None and first is None:
        raise BinanceError(400, -1102, "Param 'preventedMatchId' or 'orderId' must be sent, "
                           "but both were empty/null!")  # fmt: skip
    page = await history_of(service).orders(
        principal.user_id, market=market, status="EXPIRED_IN_MATCH", limit=queries.MAX_LIMIT
    )
    fmt = market_format(service, market)
    entries = []
    for record in reversed(page.items):
        if record.reason != "SELF_TRADE_PREVENTED":
            continue
        wanted = order_id or match_id
        if (wanted and record.order_id != wanted) or (first and record.order_id < first):
            continue
        entries.append(shapes.prevented_match(fmt, symbol, record))
    return entries[: limit_of(params)]
