"""Binance's market stream payloads (web-socket-streams.md), from Mercato's integers.

Stream names are Binance's: a lower-case symbol and a kind (``btcusdt@trade``,
``btcusdt@depth@100ms``, ``btcusdt@kline_1m``...) or an all-market array
(``!miniTicker@arr``). :func:`parse_stream` says whether a name is one Mercato serves; the
payload builders return the JSON text of one event, fields in Binance's order, decimals as
the REST answers write them (:class:`~mercato.wire.binance_market.BinanceFormat`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, NamedTuple, Protocol

import msgspec

from mercato.core.candles import INTERVALS, Candle
from mercato.core.events import Trade
from mercato.wire.binance_market import BinanceFormat

_encode = msgspec.json.Encoder().encode
_PERCENT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_CENT = Decimal("0.01")

PARTIAL_LEVELS = (5, 10, 20)
ALL_MARKET = ("!miniTicker@arr", "!ticker@arr")
_SYMBOL_STREAM = re.compile(
    r"^(?P<symbol>[a-z0-9]{2,20})@(?P<kind>trade|aggTrade|depth(?:5|10|20)?(?:@100ms)?"
    r"|kline_(?P<interval>[0-9a-zA-Z]+)|miniTicker|ticker|bookTicker)$"
)


class Stream(NamedTuple):
    """A parsed stream name: ``symbol`` lower case ("" for an all-market stream),
    ``kind`` (``trade``, ``aggTrade``, ``depth``, ``partial``, ``kline``, ``miniTicker``,
    ``ticker``, ``bookTicker``, ``!miniTicker@arr``, ``!ticker@arr``), ``fast`` for the
    100 ms variants, ``levels`` of a partial book, ``interval`` of a kline."""

    name: str
    symbol: str
    kind: str
    fast: bool = False
    levels: int = 0
    interval: str = ""


def parse_stream(name: str) -> Stream | None:
    """The stream ``name`` names, or None if it is not one Mercato serves."""
    if name in ALL_MARKET:
        return Stream(name, "", name)
    found = _SYMBOL_STREAM.match(name)
    if found is None:
        return None
    symbol, kind = found["symbol"], found["kind"]
    if kind.startswith("kline_"):
        if found["interval"] not in INTERVALS:
            return None
        return Stream(name, symbol, "kline", interval=found["interval"])
    if kind.startswith("depth"):
        base, _, speed = kind.partition("@")
        fast = speed == "100ms"
        if base == "depth":
            return Stream(name, symbol, "depth", fast)
        return Stream(name, symbol, "partial", fast, levels=int(base[5:]))
    return Stream(name, symbol, kind)


def stream_symbol(market: str) -> str:
    """``BTC-USDT`` -> ``btcusdt``, the symbol of its streams."""
    return market.replace("-", "").lower()


def encode(payload: Any) -> str:
    return _encode(payload).decode()


def combined(stream: str, payload: str) -> str:
    """The combined-stream envelope of one payload (already JSON)."""
    return f'{{"stream":{encode(stream)},"data":{payload}}}'


# -- depth ------------------------------------------------------------------------------------


def _levels(fmt: BinanceFormat, levels: Iterable[tuple[int, int]]) -> list[list[str]]:
    price, qty = fmt.price, fmt.qty
    return [[price(p), qty(q)] for p, q in levels]


Levels = Iterable[tuple[int, int]]


def depth_update(fmt: BinanceFormat, symbol: str, first: int, last: int, now: int,
                 bids: Levels, asks: Levels) -> str:  # fmt: skip
    """``depthUpdate``: the levels changed by the market's depth updates ``first..last``."""
    return encode({"e": "depthUpdate", "E": now, "s": symbol, "U": first, "u": last,
                   "b": _levels(fmt, bids), "a": _levels(fmt, asks)})  # fmt: skip


def partial_book(fmt: BinanceFormat, seq: int, bids: Iterable[tuple[int, int]],
                 asks: Iterable[tuple[int, int]]) -> str:  # fmt: skip
    return encode({"lastUpdateId": seq, "bids": _levels(fmt, bids), "asks": _levels(fmt, asks)})


def book_ticker(fmt: BinanceFormat, symbol: str, seq: int, bid: tuple[int, int] | None,
                ask: tuple[int, int] | None) -> str:  # fmt: skip
    """``bookTicker``; an empty side is written as zeros."""
    b, bq = _level(fmt, bid)
    a, aq = _level(fmt, ask)
    return encode({"u": seq, "s": symbol, "b": b, "B": bq, "a": a, "A": aq})


def _level(fmt: BinanceFormat, level: tuple[int, int] | None) -> tuple[str, str]:
    if level is None:
        return fmt.price(0), fmt.qty(0)
    return fmt.price(level[0]), fmt.qty(level[1])


# -- trades -----------------------------------------------------------------------------------


def trade(fmt: BinanceFormat, symbol: str, event_time: int, fill: Trade) -> str:
    """``trade``; ``m`` (the buyer is the maker) when the taker sold."""
    return encode({"e": "trade", "E": event_time, "s": symbol, "t": fill.trade_id,
                   "p": fmt.price(fill.price),
                   "q": fmt.qty(fill.quantity), "T": fill.ts,
                   "m": fill.taker_side == "SELL", "M": True})  # fmt: skip


def agg_trade(fmt: BinanceFormat, symbol: str, event_time: int, fills: list[Trade]) -> str:
    """``aggTrade`` of consecutive fills of one taker order at one price; its id ``a`` is
    its first trade id (unique and increasing, as aggregates never overlap)."""
    first, last = fills[0], fills[-1]
    lots = sum(f.quantity for f in fills)
    return encode({"e": "aggTrade", "E": event_time, "s": symbol, "a": first.trade_id,
                   "p": fmt.price(first.price),
                   "q": fmt.qty(lots), "f": first.trade_id,
                   "l": last.trade_id, "T": last.ts, "m": first.taker_side == "SELL",
                   "M": True})  # fmt: skip


# -- klines and tickers ------------------------------------------------------------------------


def kline(fmt: BinanceFormat, symbol: str, now: int, candle: Candle, taker_buy_base: int,
          taker_buy_quote: int) -> str:  # fmt: skip
    """``kline`` of the current (or just closed: ``x``) candle."""
    price = fmt.price
    return encode({"e": "kline", "E": now, "s": symbol, "k": {
        "t": candle.open_time, "T": candle.close_time, "s": symbol, "i": candle.interval,
        "f": candle.first_trade_id, "L": candle.last_trade_id,
        "o": (price(candle.open)), "c": (price(candle.close)),
        "h": (price(candle.high)), "l": (price(candle.low)),
        "v": (fmt.base(candle.volume)), "n": candle.trades,
        "x": candle.close_time < now,
        "q": (fmt.quote(candle.quote_volume)),
        "V": (fmt.base(taker_buy_base)),
        "Q": (fmt.quote(taker_buy_quote)), "B": "0"}})  # fmt: skip


class Window(Protocol):
    """The rolling 24 h statistics (``mercato.marketdata.stats.TickerStats``)."""

    @property
    def open_time(self) -> int: ...
    @property
    def close_time(self) -> int: ...
    @property
    def open(self) -> int: ...
    @property
    def high(self) -> int: ...
    @property
    def low(self) -> int: ...
    @property
    def close(self) -> int: ...
    @property
    def volume(self) -> int: ...
    @property
    def quote_volume(self) -> int: ...
    @property
    def trades(self) -> int: ...
    @property
    def first_trade_id(self) -> int: ...
    @property
    def last_trade_id(self) -> int: ...


def mini_ticker_body(fmt: BinanceFormat, symbol: str, now: int, window: Window,
                     last: int) -> dict[str, Any]:  # fmt: skip
    traded = window.trades > 0
    return {"e": "24hrMiniTicker", "E": now, "s": symbol, "c": fmt.price(last),
            "o": fmt.price(window.open if traded else 0),
            "h": fmt.price(window.high if traded else 0),
            "l": fmt.price(window.low if traded else 0),
            "v": (fmt.base(window.volume)),
            "q": (fmt.quote(window.quote_volume))}  # fmt: skip


class Top(NamedTuple):
    """What a ``24hrTicker`` adds to the window: the last trade's quantity (lots), the
    price before the window (ticks, 0 if unknown), the best bid and ask."""

    last: int
    last_qty: int
    previous: int
    bid: tuple[int, int] | None
    ask: tuple[int, int] | None


def ticker_body(fmt: BinanceFormat, symbol: str, now: int, window: Window,
                top: Top) -> dict[str, Any]:  # fmt: skip
    traded = window.trades > 0
    change = window.close - window.open if traded else 0
    bid, bid_qty = _level(fmt, top.bid)
    ask, ask_qty = _level(fmt, top.ask)
    return {
        "e": "24hrTicker", "E": now, "s": symbol,
        "p": fmt.signed_price(change),
        "P": _percent(change, window.open) if traded else "0.00",
        "w": fmt.average(window.volume, window.quote_volume),
        "x": fmt.price(top.previous), "c": fmt.price(top.last),
        "Q": fmt.qty(top.last_qty),
        "b": bid, "B": bid_qty, "a": ask, "A": ask_qty,
        "o": fmt.price(window.open if traded else 0),
        "h": fmt.price(window.high if traded else 0),
        "l": fmt.price(window.low if traded else 0),
        "v": (fmt.base(window.volume)),
        "q": (fmt.quote(window.quote_volume)),
        "O": window.open_time, "C": window.close_time,
        "F": window.first_trade_id if traded else -1,
        "L": window.last_trade_id if traded else -1, "n": window.trades,
    }  # fmt: skip


def _percent(change: int, base: int) -> str:
    """``change / base`` in percent, two places, half even (Binance's stream form)."""
    value = _PERCENT.divide(_PERCENT.multiply(Decimal(change), Decimal(100)), Decimal(base))
    return f"{value.quantize(_CENT, rounding=ROUND_HALF_EVEN):f}"


# -- the request protocol ------------------------------------------------------------------------

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def result(request_id: Any, value: Any = None) -> str:
    return encode({"result": value, "id": request_id})


def error(request_id: Any, code: int, msg: str) -> str:
    """Binance's WebSocket error: code 0 unknown property, 1 bad value type, 2 invalid
    request, 3 invalid JSON."""
    return encode({"error": {"code": code, "msg": msg}, "id": request_id})
