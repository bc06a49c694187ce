"""Public market data over REST (`/api/v1`): server time, assets, markets and their
trading rules, order book snapshots, recent trades, 24 h tickers and candles.

Everything is answered from :class:`mercato.marketdata.feed.MarketData` (memory, kept
exact from the engine's events), except candles older than memory holds, which come
from the SQL projection (docs/marketdata.md). No authentication; the per-IP budget
applies. Amounts are decimal strings.
"""

from __future__ import annotations

import time
from typing import Annotated, get_args

import msgspec
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from mercato.api.errors import ApiError
from mercato.api.openapi import json_response
from mercato.core.candles import INTERVALS
from mercato.core.model import OrderType, TimeInForce
from mercato.marketdata.feed import MAX_DEPTH, MarketData
from mercato.marketdata.history import merge_candles, stored_candles
from mercato.marketdata.stats import RECENT_TRADES
from mercato.service import ExchangeService

router = APIRouter(prefix="/api/v1", tags=["market data"])

MAX_CANDLES = 1000
Symbol = Annotated[str, Path(min_length=1, max_length=32, description="e.g. BTC-USDT")]


class ServerTime(msgspec.Struct):
    server_time: int


class AssetInfo(msgspec.Struct):
    symbol: str
    decimals: int


class MarketInfo(msgspec.Struct):
    symbol: str
    base: str
    quote: str
    status: str
    base_decimals: int
    quote_decimals: int
    tick_size: str
    step_size: str
    min_qty: str
    max_qty: str
    min_notional: str
    maker_fee: str
    taker_fee: str
    protection_bps: int
    default_stp: str
    allowed_stp: list[str]
    order_types: list[str]
    time_in_force: list[str]


class OrderBook(msgspec.Struct):
    market: str
    seq: int
    ts: int
    bids: list[list[str]]
    asks: list[list[str]]


class TradeRow(msgspec.Struct):
    trade_id: int
    price: str
    quantity: str
    quote_amount: str
    taker_side: str
    time: int


class Ticker(msgspec.Struct):
    market: str
    open_time: int
    close_time: int
    open: str | None
    high: str | None
    low: str | None
    last: str | None
    change: str | None
    change_percent: str | None
    volume: str
    quote_volume: str
    trades: int
    first_trade_id: int | None
    last_trade_id: int | None
    best_bid: str | None
    best_bid_qty: str | None
    best_ask: str | None
    best_ask_qty: str | None


class CandleRow(msgspec.Struct):
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int


def _json(value: object) -> Response:
    return Response(msgspec.json.encode(value), media_type="application/json")


def market_data_of(request: Request) -> MarketData:
    service: ExchangeService = request.app.state.service
    market_data = getattr(service, "market_data", None)
    if not service.ready or market_data is None:
        raise ApiError(503, "NOT_READY", "the exchange is starting or stopping; retry shortly")
    assert isinstance(market_data, MarketData)
    return market_data


def _known(market_data: MarketData, symbol: str) -> str:
    if not market_data.view.has_market(symbol):
        raise ApiError(
            404, "UNKNOWN_MARKET", f"market {symbol!r} does not exist; see GET /api/v1/markets"
        )
    return symbol


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@router.get("/time", responses=json_response(ServerTime, 200, "Milliseconds since the Unix epoch"))
async def server_time() -> Response:
    """The server's clock (the clock that stamps orders and trades), in ms."""
    return _json(ServerTime(_now_ms()))


@router.get("/assets", responses=json_response(list[AssetInfo], 200, "Every asset"))
async def assets(request: Request) -> Response:
    """Assets and their ledger decimals (the precision of every amount in that asset)."""
    view = market_data_of(request).view
    return _json([AssetInfo(a.symbol, a.decimals) for _, a in sorted(view.assets().items())])


@router.get(
    "/markets", responses=json_response(list[MarketInfo], 200, "Every market and its rules")
)
async def markets(request: Request) -> Response:
    """Every market with its trading rules: tick and step sizes, quantity bounds, minimum
    notional, fees, price protection, self-trade prevention, order types, and its status
    (TRADING, CANCEL_ONLY or HALTED, the global kill switch included)."""
    view = market_data_of(request).view
    assets = view.assets()
    out = []
    for symbol in sorted(view.market_symbols()):
        spec = view.spec(symbol)
        assert spec is not None
        out.append(MarketInfo(
            symbol=symbol, base=spec.base, quote=spec.quote, status=view.trading_status(symbol),
            base_decimals=assets[spec.base].decimals,
            quote_decimals=assets[spec.quote].decimals,
            tick_size=spec.tick_size, step_size=spec.step_size, min_qty=spec.min_qty,
            max_qty=spec.max_qty, min_notional=spec.min_notional, maker_fee=spec.maker_fee,
            taker_fee=spec.taker_fee, protection_bps=spec.protection_bps,
            default_stp=spec.default_stp, allowed_stp=list(spec.allowed_stp),
            order_types=list(get_args(OrderType)), time_in_force=list(get_args(TimeInForce)),
        ))  # fmt: skip
    return _json(out)


@router.get(
    "/markets/{symbol}/orderbook", responses=json_response(OrderBook, 200, "Best levels first")
)
async def orderbook(
    request: Request,
    symbol: Symbol,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH, description="levels per side")] = 100,
) -> Response:
    """The order book's best ``depth`` price levels per side, as ``[price, quantity]``,
    and ``seq``: the market's depth sequence this snapshot is at (the WebSocket
    ``depth.<market>`` updates continue from it; docs/websocket.md)."""
    market_data = market_data_of(request)
    return _json(market_data.snapshot(_known(market_data, symbol), depth))


@router.get(
    "/markets/{symbol}/trades", responses=json_response(list[TradeRow], 200, "Oldest first")
)
async def recent_trades(
    request: Request,
    symbol: Symbol,
    limit: Annotated[int, Query(ge=1, le=RECENT_TRADES)] = 100,
) -> Response:
    """The market's most recent ``limit`` trades, oldest first."""
    market_data = market_data_of(request)
    return _json(market_data.recent_trades(_known(market_data, symbol), limit))


@router.get(
    "/markets/{symbol}/ticker", responses=json_response(Ticker, 200, "Rolling 24 h statistics")
)
async def ticker(request: Request, symbol: Symbol) -> Response:
    """Rolling 24-hour statistics (one-minute precision: the current minute and the 1439
    before it), the last price and the best bid and ask. ``open``, ``high``, ``low``,
    ``change`` and ``change_percent`` are null when nothing traded in the window."""
    market_data = market_data_of(request)
    return _json(market_data.ticker(_known(market_data, symbol), _now_ms()))


@router.get("/tickers", responses=json_response(list[Ticker], 200, "One per market"))
async def tickers(request: Request) -> Response:
    """The 24-hour ticker of every market."""
    market_data = market_data_of(request)
    now = _now_ms()
    return _json([market_data.ticker(s, now) for s in sorted(market_data.view.market_symbols())])


@router.get(
    "/markets/{symbol}/candles", responses=json_response(list[CandleRow], 200, "Oldest first")
)
async def candles(
    request: Request,
    symbol: Symbol,
    interval: Annotated[str, Query(json_schema_extra={"enum": list(INTERVALS)})] = "1m",
    start: Annotated[int | None, Query(ge=0, le=2**62, description="ms, inclusive")] = None,
    end: Annotated[int | None, Query(ge=0, le=2**62, description="ms, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES)] = 500,
) -> Response:
    """OHLCV candles by open time: the first ``limit`` from ``start`` if it is given, else
    the last ``limit`` up to ``end`` (or now). A candle exists only for periods with
    trades. The newest candles come from memory, so the current one is never behind."""
    market_data = market_data_of(request)
    _known(market_data, symbol)
    if interval not in INTERVALS:
        choices = ", ".join(INTERVALS)
        raise ApiError(
            400, "INVALID_REQUEST", f"query.interval: must be one of {choices}, got {interval!r}"
        )
    if start is not None and end is not None and start > end:
        raise ApiError(400, "INVALID_REQUEST", "query.start: must not be after end")
    service: ExchangeService = request.app.state.service
    stored = []
    if service.database is not None:
        stored = await stored_candles(service.database, symbol, interval, start, end, limit)
    memory = market_data.memory_candles(symbol, interval)
    merged = merge_candles(stored, memory, start, end, limit)
    return _json([market_data.candle_row(c) for c in merged])
