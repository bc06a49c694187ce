"""Binance's public spot market data over REST (``/api/v3``), and what CCXT asks for when
it loads markets from a Binance client whose URLs point here (``/fapi``/``/dapi``
exchangeInfo, ``/sapi/v1/capital/config/getall``).

Everything comes from :class:`mercato.marketdata.feed.MarketData` (memory, exact from the
engine's events) and, for what memory no longer holds (older trades, candles), from the
SQL projection, as the native market routes do. Parameters are parsed here, not by
FastAPI, so a bad one gets Binance's exact error (errors.md). docs/binance.md, "Market
data REST", has the decisions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mercato.api.auth_routes import caller_with
from mercato.api.binance import BinanceRoute, symbols_of
from mercato.config import Config
from mercato.core.candles import INTERVALS, MINUTE_MS, Candle
from mercato.core.events import Trade
from mercato.marketdata.feed import MAX_DEPTH, MarketData
from mercato.marketdata.history import merge_candles, stored_candles
from mercato.service import ExchangeService
from mercato.store.tables import trades as trades_table
from mercato.wire.binance import BinanceError, Symbols, binance_symbol
from mercato.wire.binance_errors import OVERLOADED, mandatory_parameter
from mercato.wire.binance_market import (
    AVG_PRICE_MINS,
    STATUS,
    BinanceFormat,
    aggregate_trades,
    amount,
    book_ticker,
    capital_coin,
    derivatives_exchange_info,
    exchange_info,
    full_24hr,
    kline,
    rate_limits,
    symbol_info,
    trade_row,
    window_stats,
)

router = APIRouter(route_class=BinanceRoute, tags=["binance market data"])

MAX_TRADES = 1000
DEFAULT_TRADES = 500
MAX_KLINES = 1000
DEFAULT_KLINES = 500
AGG_TRADES_HOUR_MS = 3_600_000
DAY_MINUTES = 1440
# Source trades read per aggTrades request from SQL (aggregates are fewer).
AGG_SOURCE_ROWS = 5000
_LONG = re.compile(r"^[0-9]{1,20}$")
_LONG_MAX = 2**63 - 1  # a LONG, and what SQL BIGINT holds
_TIME_ZONE = re.compile(r"^([+-]?)([0-9]{1,2})(?::([0-9]{2}))?$")
_WINDOW = re.compile(r"^([0-9]{1,2})([mhd])$")
_SYMBOLS_RANGE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'

# Binance's kline intervals Mercato can build, in ms; 1s and 1M are not among them.
KLINE_MS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": 60 * MINUTE_MS, "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS, "6h": 360 * MINUTE_MS, "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS, "1d": DAY_MINUTES * MINUTE_MS, "3d": 3 * DAY_MINUTES * MINUTE_MS,
    "1w": 7 * DAY_MINUTES * MINUTE_MS,
}  # fmt: skip
# Binance's weeks open on Monday 00:00; the Unix epoch was a Thursday.
WEEK_SHIFT_MS = 4 * DAY_MINUTES * MINUTE_MS
# Binance's withdrawMax when no daily limit is configured.
NO_WITHDRAWAL_MAX = "9999999999"
_NATIVE_BY_SIZE = sorted(INTERVALS, key=INTERVALS.__getitem__, reverse=True)


def _json(value: object) -> Response:
    return Response(msgspec.json.encode(value), media_type="application/json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _service(request: Request) -> ExchangeService:
    service: ExchangeService = request.app.state.service
    if not service.ready or service.market_data is None:
        raise BinanceError(503, -1008, OVERLOADED)
    return service


def _market_data(request: Request) -> MarketData:
    market_data = _service(request).market_data
    assert market_data is not None
    return market_data


def _format(market_data: MarketData, market: str) -> BinanceFormat:
    rules = market_data.view.rules(market)
    assert rules is not None
    fmt = market_data.formats[market]
    return BinanceFormat(rules, fmt.base_decimals, fmt.quote_decimals)


# -- parameters, with Binance's refusals --------------------------------------------------


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value == "":
        raise BinanceError(400, -1105, f"Parameter '{name}' was empty.")
    return value


def _long(request: Request, name: str) -> int | None:
    value = _text(request, name)
    if value is None:
        return None
    if not _LONG.match(value):
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                           "legal range is '^[0-9]{1,20}$'.")  # fmt: skip
    number = int(value)
    if number > _LONG_MAX:
        raise BinanceError(400, -1108, f"Parameter '{name}' overflowed.")
    return number


def _limit(request: Request, default: int, most: int) -> int:
    """``limit``: at least 1; above ``most`` it is cut to ``most``, as Binance does."""
    limit = _long(request, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, most)


def _symbol(request: Request, symbols: Symbols) -> str:
    """The market of the mandatory ``symbol`` parameter."""
    value = request.query_params.get("symbol")
    if not value:
        raise mandatory_parameter("symbol")
    return symbols.market(value)


def _symbol_list(request: Request, symbols: Symbols) -> list[str] | None:
    """The markets of ``symbols`` (a JSON array), or None when it is not sent."""
    value = _text(request, "symbols")
    if value is None:
        return None
    try:
        names = json.loads(value)
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'; "
                           f"legal range is '{_SYMBOLS_RANGE}'.")  # fmt: skip
    if not names:
        raise BinanceError(400, -1102, "Mandatory parameter 'symbols' was not sent, was "
                           "empty/null, or malformed.")  # fmt: skip
    if len({n.upper() for n in names}) != len(names):
        raise BinanceError(400, -1151, "Symbol is present multiple times in the list.")
    return [symbols.market(n) for n in names]


def _one_or_many(request: Request, symbols: Symbols) -> tuple[list[str], bool]:
    """(markets, one): ``symbol`` (one), ``symbols``, or neither (every market)."""
    if request.query_params.get("symbol") is not None:
        if request.query_params.get("symbols") is not None:
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        return [_symbol(request, symbols)], True
    many = _symbol_list(request, symbols)
    if many is None:
        return sorted(_binance_markets(request)), False
    return many, False


def _matching_status(request: Request, markets: list[str], one: bool) -> list[str]:
    """``markets`` whose status is ``symbolStatus`` (when sent): one symbol that does not
    match is refused (-1220), several are filtered, as Binance does."""
    status = _symbol_status(request)
    if status is None:
        return markets
    view = _market_data(request).view
    kept = [m for m in markets if STATUS[view.trading_status(m)] == status]
    if one and not kept:
        raise BinanceError(400, -1220, "The symbol's status does not match the requested "
                           "symbolStatus.")  # fmt: skip
    return kept


def _binance_markets(request: Request) -> list[str]:
    """Every market that has a Binance symbol."""
    view = _market_data(request).view
    symbols = symbols_of(_service(request))
    return [m for m in view.market_symbols() if symbols.get(binance_symbol(m)) == m]


def _one_or_list(items: list[Any], one: bool) -> Response:
    return _json(items[0] if one else items)


def _ticker_type(request: Request) -> bool:
    """True for ``type=FULL`` (the default), False for MINI."""
    kind = _text(request, "type") or "FULL"
    if kind not in ("FULL", "MINI"):
        raise BinanceError(400, -1130, "Data sent for parameter 'type' is not valid.")
    return kind == "FULL"


# -- general endpoints --------------------------------------------------------------------


@router.get("/api/v3/ping")
async def ping() -> Response:
    """Binance's connectivity test: ``{}``."""
    return _json({})


@router.get("/api/v3/time")
async def server_time() -> Response:
    """``{"serverTime": ms}``, the clock that stamps orders and trades."""
    return _json({"serverTime": _now_ms()})


def _permissions(request: Request) -> bool:
    """Whether the ``permissions`` asked for include SPOT, the only one Mercato's symbols
    have (not sent: SPOT, MARGIN and LEVERAGED, as on Binance)."""
    value = _text(request, "permissions")
    if value is None:
        return True
    try:
        wanted = json.loads(value) if value.startswith("[") else [value]
    except ValueError:
        wanted = None
    if not isinstance(wanted, list):
        raise BinanceError(400, -1130, "Data sent for parameter 'permissions' is not valid.")
    return "SPOT" in wanted


def _symbol_status(request: Request) -> str | None:
    status = _text(request, "symbolStatus")
    if status is not None and status not in ("TRADING", "HALT", "BREAK"):
        raise BinanceError(400, -1122, "Invalid symbolStatus.")
    return status


def _rate_limits(config: Config) -> list[dict[str, Any]]:
    budgets = config.rate_limits.budgets()
    ip, orders = budgets.get("ip"), budgets.get("orders")
    return rate_limits(ip.per_second if ip else None, orders.per_second if orders else None)


@router.get("/api/v3/exchangeInfo")
async def exchange_information(request: Request) -> Response:
    """Trading rules of ``symbol``, ``symbols`` or every market (``permissions``,
    ``symbolStatus`` filter the last)."""
    service = _service(request)
    market_data = _market_data(request)
    symbols = symbols_of(service)
    status = _symbol_status(request)
    explicit = "symbol" in request.query_params or "symbols" in request.query_params
    if explicit and (status is not None or "permissions" in request.query_params):
        raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
    markets, _ = _one_or_many(request, symbols)
    if not _permissions(request):
        markets = []
    view = market_data.view
    rows = []
    for market in markets:
        spec, rules = view.spec(market), view.rules(market)
        assert spec is not None and rules is not None
        info = symbol_info(binance_symbol(market), spec, rules, view.trading_status(market),
                           _format(market_data, market))  # fmt: skip
        if status is None or info["status"] == status:
            rows.append(info)
    return _json(exchange_info(_now_ms(), _rate_limits(service.config), rows))


# -- market data --------------------------------------------------------------------------


@router.get("/api/v3/depth")
async def depth(request: Request) -> Response:
    """The book's best ``limit`` levels per side (default 100, at most 5000).
    ``lastUpdateId`` is the market's depth sequence (the diff depth stream's ``u``)."""
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(_service(request)))
    _matching_status(request, [market], one=True)
    limit = _limit(request, 100, MAX_DEPTH)
    book = market_data.depth.books[market]
    fmt = _format(market_data, market)
    bids, asks = book.top(limit)
    return _json({
        "lastUpdateId": book.seq,
        "bids": [[fmt.price(p), fmt.qty(q)] for p, q in bids],
        "asks": [[fmt.price(p), fmt.qty(q)] for p, q in asks],
    })  # fmt: skip


def _memory_trades(market_data: MarketData, market: str) -> list[Trade]:
    return list(market_data.stats[market].trades)


async def _stored_trades(service: ExchangeService, market: str, before_id: int | None,
                         from_id: int | None, start: int | None, end: int | None,
                         limit: int) -> list[Trade]:  # fmt: skip
    """Trades of the SQL projection older than ``before_id`` (what memory no longer
    holds) within the bounds, oldest first, at most ``limit``."""
    db = service.reads or service.database
    if db is None:
        return []
    t = trades_table.c
    query = sa.select(trades_table).where(t.market == market)
    if before_id is not None:
        query = query.where(t.trade_id < before_id)
    if from_id is not None:
        query = query.where(t.trade_id >= from_id)
    if start is not None:
        query = query.where(t.ts >= start)
    if end is not None:
        query = query.where(t.ts <= end)
    ascending = from_id is not None or start is not None
    query = query.order_by(t.trade_id.asc() if ascending else t.trade_id.desc()).limit(limit)
    async with db.connect() as connection:
        rows = (await connection.execute(query)).all()
    trades = [
        Trade(int(r.trade_id), market, "", "", int(r.price), int(r.quantity),
              int(r.base_amount), int(r.quote_amount), r.taker_side, int(r.maker_order_id),
              int(r.taker_order_id), 0, 0, 0, 0, int(r.ts))
        for r in rows
    ]  # fmt: skip
    return trades if ascending else trades[::-1]


async def _trades_in(request: Request, market: str, from_id: int | None, start: int | None,
                     end: int | None, limit: int) -> list[Trade]:  # fmt: skip
    """Trades with ``trade_id >= from_id`` and ``start <= ts <= end``, oldest first: the
    first ``limit`` from a lower bound, else the newest ``limit``. Memory first; the SQL
    projection for the older part memory no longer holds."""
    market_data = _market_data(request)
    memory = [
        t for t in _memory_trades(market_data, market)
        if (from_id is None or t.trade_id >= from_id) and (start is None or t.ts >= start)
        and (end is None or t.ts <= end)
    ]  # fmt: skip
    lower = from_id is not None or start is not None
    held = market_data.stats[market].trades
    first_held = held[0].trade_id if held else None
    reaches_back = (
        first_held is not None and len(held) == held.maxlen
        and (from_id is None or from_id < first_held)
        and (start is None or start < held[0].ts)
    )  # fmt: skip
    older: list[Trade] = []
    if reaches_back and (lower or len(memory) < limit):
        older = await _stored_trades(_service(request), market, first_held, from_id, start,
                                     end, limit)  # fmt: skip
    trades = older + memory
    return trades[:limit] if lower else trades[-limit:]


@router.get("/api/v3/trades")
async def recent_trades(request: Request) -> Response:
    """The newest ``limit`` trades (default 500, at most 1000), oldest first."""
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(_service(request)))
    limit = _limit(request, DEFAULT_TRADES, MAX_TRADES)
    fmt = _format(market_data, market)
    trades = _memory_trades(market_data, market)[-limit:]
    return _json([trade_row(fmt, t) for t in trades])


@router.get("/api/v3/historicalTrades")
async def historical_trades(request: Request) -> Response:
    """Trades from ``fromId`` on (default: the newest), memory then the SQL projection."""
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(_service(request)))
    limit = _limit(request, DEFAULT_TRADES, MAX_TRADES)
    from_id = _long(request, "fromId")
    trades = await _trades_in(request, market, from_id, None, None, limit)
    fmt = _format(market_data, market)
    return _json([trade_row(fmt, t) for t in trades])


@router.get("/api/v3/aggTrades")
async def agg_trades(request: Request) -> Response:
    """Aggregate trades (one taker order at one price), by ``fromId`` (an aggregate id is
    its first trade id), ``startTime``/``endTime`` (at most an hour apart), newest
    without them."""
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(_service(request)))
    limit = _limit(request, DEFAULT_TRADES, MAX_TRADES)
    from_id = _long(request, "fromId")
    start, end = _long(request, "startTime"), _long(request, "endTime")
    if start is not None and end is not None and end - start > AGG_TRADES_HOUR_MS:
        raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
    if from_id is not None and (start is not None or end is not None):
        raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
    fmt = _format(market_data, market)
    if from_id is None and start is None:
        # The newest: memory alone answers when it holds more aggregates than asked (the
        # oldest of them may have begun before memory's first trade).
        held = [t for t in _memory_trades(market_data, market) if end is None or t.ts <= end]
        aggregates = aggregate_trades(fmt, held)
        if len(aggregates) > limit:
            return _json(aggregates[-limit:])
    trades = await _trades_in(request, market, from_id, start, end, AGG_SOURCE_ROWS)
    aggregates = aggregate_trades(fmt, trades)
    cut = len(trades) == AGG_SOURCE_ROWS and len(aggregates) > 1
    if from_id is not None or start is not None:
        if cut:
            aggregates.pop()  # it may continue past the trades read
        return _json(aggregates[:limit])
    if cut:
        aggregates.pop(0)  # it may have begun before the trades read
    return _json(aggregates[-limit:])


# -- klines -------------------------------------------------------------------------------


def _time_zone(request: Request) -> int:
    """``timeZone`` as an offset in ms (``-1:00``, ``05:45``, ``8``), within -12:00..+14:00."""
    value = _text(request, "timeZone")
    if value is None:
        return 0
    found = _TIME_ZONE.match(value)
    invalid = BinanceError(400, -1130, "Data sent for parameter 'timeZone' is not valid.")
    if not found:
        raise invalid
    sign, hours, minutes = found.group(1), int(found.group(2)), int(found.group(3) or 0)
    if minutes >= 60:
        raise invalid
    offset = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
    if not -12 * 60 <= offset <= 14 * 60:
        raise invalid
    return offset * MINUTE_MS


def _shift(interval: str, offset: int) -> int:
    """Where ``interval``'s candles open relative to the epoch, in ms (mod its length)."""
    return (WEEK_SHIFT_MS if interval == "1w" else 0) - offset


def _source_interval(interval: str, shift: int) -> str:
    """The coarsest of Mercato's candle intervals whose candles each fall within one
    ``interval`` candle opening at ``shift`` (1m always does)."""
    length = KLINE_MS[interval]
    for native in _NATIVE_BY_SIZE:
        size = INTERVALS[native]
        if length % size == 0 and shift % size == 0:
            return native
    raise AssertionError("1m divides every interval")


def _roll_up(candles: Iterable[Candle], length: int, shift: int) -> list[Candle]:
    """Candles of a finer interval (time order) as ``length`` candles opening at
    ``shift`` modulo ``length``."""
    out: list[Candle] = []
    for c in candles:
        start = c.open_time - (c.open_time - shift) % length
        last = out[-1] if out else None
        if last is None or last.open_time != start:
            out.append(msgspec.structs.replace(c, open_time=start))
            continue
        out[-1] = Candle(
            last.market, last.interval, start, last.open, max(last.high, c.high),
            min(last.low, c.low), c.close, last.volume + c.volume,
            last.quote_volume + c.quote_volume, last.trades + c.trades, last.first_trade_id,
            c.last_trade_id,
        )  # fmt: skip
    return out


async def _candles(service: ExchangeService, market: str, interval: str, start: int | None,
                   end: int | None, limit: int) -> list[Candle]:  # fmt: skip
    market_data = service.market_data
    assert market_data is not None
    stored: list[Candle] = []
    if service.database is not None:
        stored = await stored_candles(service.database, market, interval, start, end, limit)
    return merge_candles(stored, market_data.memory_candles(market, interval), start, end, limit)


async def _klines(request: Request) -> Response:
    service = _service(request)
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(service))
    interval = request.query_params.get("interval")
    if not interval:
        raise mandatory_parameter("interval")
    if interval not in KLINE_MS:
        raise BinanceError(400, -1120, "Invalid interval.")
    start, end = _long(request, "startTime"), _long(request, "endTime")
    limit = _limit(request, DEFAULT_KLINES, MAX_KLINES)
    length = KLINE_MS[interval]
    shift = _shift(interval, _time_zone(request))
    source = _source_interval(interval, shift)
    ratio = length // INTERVALS[source]
    source_end = None if end is None else end - (end - shift) % length + length - 1
    wanted = limit * ratio
    candles = await _candles(service, market, source, start, source_end, wanted)
    rolled = _roll_up(candles, length, shift) if ratio > 1 else candles
    if start is not None and ratio > 1:
        rolled = [c for c in rolled if c.open_time >= start]
    truncated = len(candles) == wanted
    if start is not None:
        if truncated and len(rolled) > 1 and ratio > 1:
            rolled.pop()  # its later part was not read
        rolled = rolled[:limit]
    else:
        if truncated and len(rolled) > 1 and ratio > 1:
            rolled.pop(0)  # its earlier part was not read
        rolled = rolled[-limit:]
    fmt = _format(market_data, market)
    return _json([kline(fmt, c, c.open_time + length - 1) for c in rolled])


@router.get("/api/v3/klines")
async def klines(request: Request) -> Response:
    """Candles of ``interval`` (1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, 1d, 3d, 1w)
    by open time, ``timeZone`` honoured; only periods with trades have a candle."""
    return await _klines(request)


@router.get("/api/v3/uiKlines")
async def ui_klines(request: Request) -> Response:
    """As ``klines``: Mercato's candles need no presentation changes."""
    return await _klines(request)


# -- averages and tickers -----------------------------------------------------------------


def _minute_candles(market_data: MarketData, market: str, since: int) -> list[Candle]:
    return [c for c in market_data.memory_candles(market, "1m") if c.open_time >= since]


def _window(candles: list[Candle]) -> Candle | None:
    rolled = _roll_up(candles, 2**62, 0)
    return rolled[0] if rolled else None


@router.get("/api/v3/avgPrice")
async def avg_price(request: Request) -> Response:
    """The volume-weighted price of the last 5 minutes (the last price if nothing traded
    in them) and the time of the last trade."""
    market_data = _market_data(request)
    market = _symbol(request, symbols_of(_service(request)))
    fmt = _format(market_data, market)
    now = _now_ms()
    since = now - now % MINUTE_MS - (AVG_PRICE_MINS - 1) * MINUTE_MS
    window = _window(_minute_candles(market_data, market, since))
    trades = market_data.stats[market].trades
    if window is None:
        price = fmt.price(market_data.view.last_price(market))
    else:
        price = fmt.average(window.volume, window.quote_volume)
    return _json({"mins": AVG_PRICE_MINS, "price": price,
                  "closeTime": trades[-1].ts if trades else 0})  # fmt: skip


async def _rolling(service: ExchangeService, market: str, minutes: int,
                   now: int) -> tuple[Candle | None, int, int]:  # fmt: skip
    """(the window's trades as one candle, its open time, the last price before it): the
    window opens on the minute ``minutes`` before ``now``'s, as Binance's ``ticker``."""
    market_data = service.market_data
    assert market_data is not None
    open_time = now - now % MINUTE_MS - minutes * MINUTE_MS
    memory = market_data.memory_candles(market, "1m")
    if minutes > DAY_MINUTES:  # beyond what memory keeps: the projection's minutes too
        memory = await _candles(service, market, "1m", open_time, None, minutes + 1)
    inside = [c for c in memory if c.open_time >= open_time]
    before = [c for c in memory if c.open_time < open_time]
    return _window(inside), open_time, before[-1].close if before else 0


@router.get("/api/v3/ticker/24hr")
async def ticker_24hr(request: Request) -> Response:
    """The rolling 24 h statistics (one-minute precision), FULL or MINI."""
    service = _service(request)
    market_data = _market_data(request)
    markets, one = _one_or_many(request, symbols_of(service))
    markets = _matching_status(request, markets, one)
    full = _ticker_type(request)
    now = _now_ms()
    out: list[dict[str, Any]] = []
    for market in markets:
        fmt = _format(market_data, market)
        window, opened, prev_close = await _rolling(service, market, DAY_MINUTES, now)
        stats = window_stats(fmt, binance_symbol(market), window,
                             market_data.view.last_price(market), opened, now, full)  # fmt: skip
        if full:
            trades = market_data.stats[market].trades
            book = market_data.depth.books[market]
            stats = full_24hr(stats, fmt, prev_close, trades[-1].quantity if trades else 0,
                              book.best_bid(), book.best_ask())  # fmt: skip
        out.append(stats)
    return _one_or_list(out, one)


def _window_minutes(request: Request) -> int:
    value = _text(request, "windowSize") or "1d"
    found = _WINDOW.match(value)
    most = {"m": 59, "h": 23, "d": 7}
    if not found or not 1 <= int(found.group(1)) <= most[found.group(2)]:
        raise BinanceError(400, -1130, "Data sent for parameter 'windowSize' is not valid.")
    return int(found.group(1)) * {"m": 1, "h": 60, "d": DAY_MINUTES}[found.group(2)]


@router.get("/api/v3/ticker")
async def rolling_ticker(request: Request) -> Response:
    """Rolling window statistics over ``windowSize`` (1m..59m, 1h..23h, 1d..7d) for
    ``symbol`` or ``symbols`` (at most 100), FULL or MINI."""
    service = _service(request)
    market_data = _market_data(request)
    symbols = symbols_of(service)
    if "symbol" not in request.query_params and "symbols" not in request.query_params:
        raise BinanceError(400, -1102, "Param 'symbol' or 'symbols' must be sent, but both "
                           "were empty/null!")  # fmt: skip
    markets, one = _one_or_many(request, symbols)
    markets = _matching_status(request, markets, one)
    if len(markets) > 100:
        raise BinanceError(400, -1101, "Too many values sent for parameter 'symbols', "
                           "maximum allowed up to 100.")  # fmt: skip
    minutes = _window_minutes(request)
    full = _ticker_type(request)
    now = _now_ms()
    out: list[dict[str, Any]] = []
    for market in markets:
        window, opened, _ = await _rolling(service, market, minutes, now)
        last = market_data.view.last_price(market)
        fmt = _format(market_data, market)
        out.append(window_stats(fmt, binance_symbol(market), window, last, opened, now, full))
    return _one_or_list(out, one)


@router.get("/api/v3/ticker/price")
async def ticker_price(request: Request) -> Response:
    """The last trade price of ``symbol``, ``symbols`` or every market."""
    market_data = _market_data(request)
    markets, one = _one_or_many(request, symbols_of(_service(request)))
    markets = _matching_status(request, markets, one)
    out = [{"symbol": binance_symbol(m),
            "price": _format(market_data, m).price(market_data.view.last_price(m))}
           for m in markets]  # fmt: skip
    return _one_or_list(out, one)


@router.get("/api/v3/ticker/bookTicker")
async def ticker_book(request: Request) -> Response:
    """The best bid and ask of ``symbol``, ``symbols`` or every market."""
    market_data = _market_data(request)
    markets, one = _one_or_many(request, symbols_of(_service(request)))
    markets = _matching_status(request, markets, one)
    out: list[dict[str, Any]] = []
    for market in markets:
        book = market_data.depth.books[market]
        out.append(book_ticker(_format(market_data, market), book.best_bid(),
                               book.best_ask(), binance_symbol(market)))  # fmt: skip
    return _one_or_list(out, one)


# -- what CCXT loads besides spot ---------------------------------------------------------


@router.get("/fapi/v1/exchangeInfo")
async def usdm_exchange_info() -> Response:
    """USD-M futures: Binance's shape, no symbols (Mercato trades spot only)."""
    return _json(derivatives_exchange_info(_now_ms()))


@router.get("/dapi/v1/exchangeInfo")
async def coinm_exchange_info() -> Response:
    """COIN-M futures: Binance's shape, no symbols."""
    return _json(derivatives_exchange_info(_now_ms()))


@router.get("/sapi/v1/margin/allPairs")
async def cross_margin_pairs() -> Response:
    """No cross margin pairs (CCXT asks when it holds keys)."""
    return _json([])


@router.get("/sapi/v1/margin/isolated/allPairs")
async def isolated_margin_pairs() -> Response:
    """No isolated margin pairs."""
    return _json([])


def _networks(config: Config, asset: str) -> list[dict[str, Any]]:
    """The asset's chain from custody's configuration, in Binance's ``networkList``."""
    confirmations = {c.name: c.confirmations for c in config.custody.chains}
    out: list[dict[str, Any]] = []
    for custody in config.custody.assets:
        if custody.symbol != asset:
            continue
        out.append({
            "coin": asset, "depositDust": custody.min_deposit, "depositEnable": True,
            "isDefault": not out, "minConfirm": confirmations[custody.chain],
            "name": custody.chain, "network": custody.chain.upper(), "withdrawEnable": True,
            "withdrawFee": custody.withdrawal_fee,
            "withdrawMax": custody.daily_limit or NO_WITHDRAWAL_MAX,
            "withdrawMin": custody.min_withdrawal, "contractAddress": custody.contract,
        })  # fmt: skip
    return out


@router.get("/sapi/v1/capital/config/getall")
async def capital_config(request: Request) -> Response:
    """Every asset with the caller's free and locked balance and its custody network
    (signed, an API key with ``read``)."""
    if not request.headers.get("x-mbx-apikey"):
        raise BinanceError(401, -2014, "API-key format invalid.")
    caller = await caller_with(request, "read")
    service = _service(request)
    view = _market_data(request).view
    out: list[dict[str, Any]] = []
    for asset, info in sorted(view.assets().items()):
        free, locked = view.balance(caller.user_id, asset)
        out.append(capital_coin(
            asset, info.decimals, amount(free, info.decimals),
            amount(locked, info.decimals), _networks(service.config, asset),
        ))  # fmt: skip
    return _json(out)
