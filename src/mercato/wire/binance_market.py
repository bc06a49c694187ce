"""Binance's public market data shapes (``/api/v3``) from Mercato's engine integers.

Binance sends decimals as fixed-point strings ("4.00000200"): prices with the market's
price places (the quote asset's ledger decimals, or the tick's if finer), quantities with
the base asset's, quote amounts with the quote asset's; always exact, through
:mod:`mercato.core.money`. Keys follow the order of Binance's documented examples
(rest-api.md). docs/binance.md, "Market data REST", records where Mercato differs.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from mercato.core.candles import Candle
from mercato.core.events import Trade
from mercato.core.model import (
    MAX_ICEBERG_PARTS,
    MAX_PRICE_TICKS,
    MarketRules,
    MarketSpec,
    MarketStatus,
)
from mercato.core.money import EXACT

#: Binance's request weight of each endpoint api/binance/market_routes.py answers, by
#: path (for the weight accounting); depth and the tickers vary: depth_weight,
#: ticker_weight.
WEIGHTS: Final[dict[str, int]] = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/aggTrades": 4,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    "/api/v3/avgPrice": 2,
    "/api/v3/ticker/24hr": 2,  # one symbol; see ticker_weight for the rest
    "/api/v3/ticker/price": 2,  # one symbol; 4 for several or all
    "/api/v3/ticker/bookTicker": 2,  # one symbol; 4 for several or all
    "/api/v3/ticker": 4,  # per symbol, at most 200
    "/api/v3/depth": 5,  # limit 1..100; see depth_weight
    "/fapi/v1/exchangeInfo": 1,
    "/dapi/v1/exchangeInfo": 1,
    "/sapi/v1/capital/config/getall": 10,
    "/sapi/v1/margin/allPairs": 1,
    "/sapi/v1/margin/isolated/allPairs": 10,
}


def depth_weight(limit: int) -> int:
    """``GET /api/v3/depth``'s weight for ``limit`` (rest-api.md's table)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def ticker_weight(path: str, symbols: int | None) -> int:
    """Weight of the ticker endpoints for ``symbols`` named (None: all symbols)."""
    if path == "/api/v3/ticker/24hr":
        if symbols is None or symbols > 100:
            return 80
        return 2 if symbols <= 20 else 40
    if path == "/api/v3/ticker":
        return min(200, 4 * (symbols or 1))
    return 2 if symbols == 1 else 4


#: Mercato's market status -> Binance's (enums.md has CANCEL_ONLY too).
STATUS: Final[dict[MarketStatus, str]] = {
    "TRADING": "TRADING",
    "CANCEL_ONLY": "CANCEL_ONLY",
    "HALTED": "HALT",
}
ORDER_TYPES: Final = (
    "LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)  # fmt: skip
# Binance's self-trade prevention modes carry Mercato's names unchanged.
STP_NAMES: Final[dict[str, str]] = {
    m: m for m in ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT")
}
AVG_PRICE_MINS: Final = 5

_AVERAGE = Context(prec=60, rounding=ROUND_HALF_EVEN)


def _places(step: Decimal) -> int:
    exponent = step.normalize(EXACT).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals (exact: ``value`` has no more)."""
    return f"{value.quantize(Decimal(1).scaleb(-places), context=EXACT):f}"


def amount(atoms: int, decimals: int) -> str:
    """An amount in atoms with all of its asset's decimals ("1.50000000")."""
    return fixed(EXACT.scaleb(Decimal(atoms), -decimals), decimals)


class BinanceFormat:
    """The fixed-point strings of one market's integers, as Binance writes them."""

    __slots__ = ("base_decimals", "price_places", "quote_decimals", "step", "tick")

    def __init__(self, rules: MarketRules, base_decimals: int, quote_decimals: int) -> None:
        self.tick = rules.tick_size
        self.step = rules.step_size
        self.base_decimals = base_decimals
        self.quote_decimals = quote_decimals
        self.price_places = max(quote_decimals, _places(rules.tick_size))

    def price(self, ticks: int) -> str:
        return fixed(EXACT.multiply(Decimal(ticks), self.tick), self.price_places)

    def price_value(self, value: Decimal) -> str:
        """A price given as a Decimal (a division's result), rounded half-even."""
        return f"{value.quantize(Decimal(1).scaleb(-self.price_places), context=_AVERAGE):f}"

    def qty(self, lots: int) -> str:
        return fixed(EXACT.multiply(Decimal(lots), self.step), self.base_decimals)

    def base(self, atoms: int) -> str:
        return fixed(EXACT.scaleb(Decimal(atoms), -self.base_decimals), self.base_decimals)

    def quote(self, atoms: int) -> str:
        return fixed(EXACT.scaleb(Decimal(atoms), -self.quote_decimals), self.quote_decimals)

    def average(self, base_atoms: int, quote_atoms: int) -> str:
        """Quote per base over volumes in atoms (``"0"`` padded when nothing traded)."""
        if base_atoms == 0:
            return self.price(0)
        quote = EXACT.scaleb(Decimal(quote_atoms), -self.quote_decimals)
        base = EXACT.scaleb(Decimal(base_atoms), -self.base_decimals)
        return self.price_value(_AVERAGE.divide(quote, base))

    def signed_price(self, ticks: int) -> str:
        return ("-" if ticks < 0 else "") + self.price(abs(ticks))


def _filters(spec: MarketSpec, fmt: BinanceFormat, rules: MarketRules) -> list[dict[str, Any]]:
    max_qty = fmt.qty(rules.max_lots)
    min_qty = fmt.qty(rules.min_lots)
    step = fmt.qty(1)
    return [
        {"filterType": "PRICE_FILTER", "minPrice": fmt.price(1),
         "maxPrice": fmt.price(MAX_PRICE_TICKS), "tickSize": fmt.price(1)},
        {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": max_qty, "stepSize": step},
        {"filterType": "ICEBERG_PARTS", "limit": MAX_ICEBERG_PARTS},
        # Market orders take the same quantity bounds as limit orders in Mercato.
        {"filterType": "MARKET_LOT_SIZE", "minQty": min_qty, "maxQty": max_qty,
         "stepSize": step},
        # The engine checks the notional of priced orders and of market buys by quote
        # amount, never a market order by quantity against an average price.
        {"filterType": "MIN_NOTIONAL", "minNotional": fmt.quote(rules.min_notional),
         "applyToMarket": False, "avgPriceMins": AVG_PRICE_MINS},
    ]  # fmt: skip


def symbol_info(symbol: str, spec: MarketSpec, rules: MarketRules, status: MarketStatus,
                fmt: BinanceFormat) -> dict[str, Any]:  # fmt: skip
    """One entry of ``exchangeInfo``'s ``symbols``, in Binance's key order."""
    base, quote = fmt.base_decimals, fmt.quote_decimals
    return {
        "symbol": symbol, "status": STATUS[status],
        "baseAsset": spec.base, "baseAssetPrecision": base,
        "quoteAsset": spec.quote, "quotePrecision": quote, "quoteAssetPrecision": quote,
        "baseCommissionPrecision": base, "quoteCommissionPrecision": quote,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": True, "ocoAllowed": False, "otoAllowed": False,
        "opoAllowed": False, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
        "cancelReplaceAllowed": True, "amendAllowed": True,
        "pegInstructionsAllowed": False, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _filters(spec, fmt, rules),
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": STP_NAMES[spec.default_stp],
        "allowedSelfTradePreventionModes": [STP_NAMES[m] for m in spec.allowed_stp],
    }  # fmt: skip


def rate_limits(ip_per_second: float | None, orders_per_second: float | None) -> list[
    dict[str, Any]
]:  # fmt: skip
    """``exchangeInfo``'s ``rateLimits`` from Mercato's token buckets (None: that budget
    is off): the per-IP budget as REQUEST_WEIGHT per minute, the per-account order
    budget as ORDERS per 10 s and per day, at their refill rates."""
    limits: list[dict[str, Any]] = []
    if ip_per_second is not None:
        limits.append({"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                       "intervalNum": 1, "limit": int(ip_per_second * 60)})  # fmt: skip
    if orders_per_second is not None:
        limits.append({"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                       "limit": int(orders_per_second * 10)})  # fmt: skip
        limits.append({"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                       "limit": int(orders_per_second * 86_400)})  # fmt: skip
    return limits


def exchange_info(server_time: int, limits: list[dict[str, Any]],
                  symbols: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    return {"timezone": "UTC", "serverTime": server_time, "rateLimits": limits,
            "exchangeFilters": [], "symbols": symbols}  # fmt: skip


def trade_row(fmt: BinanceFormat, trade: Trade) -> dict[str, Any]:
    """``/api/v3/trades`` and ``historicalTrades``: the buyer is the maker when the taker
    sold; every Mercato trade is at the best price."""
    return {
        "id": trade.trade_id, "price": fmt.price(trade.price), "qty": fmt.qty(trade.quantity),
        "quoteQty": fmt.quote(trade.quote_amount), "time": trade.ts,
        "isBuyerMaker": trade.taker_side == "SELL", "isBestMatch": True,
    }  # fmt: skip


def aggregate_trades(fmt: BinanceFormat, trades: list[Trade]) -> list[dict[str, Any]]:
    """Binance's aggregate trades: consecutive trades of one taker order at one price are
    one aggregate, numbered by its first trade id (so ``a`` is unique and grows)."""
    out: list[dict[str, Any]] = []
    group: list[Trade] = []

    def close() -> None:
        first, last = group[0], group[-1]
        out.append({
            "a": first.trade_id, "p": fmt.price(first.price),
            "q": fmt.qty(sum(t.quantity for t in group)), "f": first.trade_id,
            "l": last.trade_id, "T": first.ts, "m": first.taker_side == "SELL", "M": True,
        })  # fmt: skip

    for trade in trades:
        if group and (trade.taker_order_id != group[0].taker_order_id
                      or trade.price != group[0].price):  # fmt: skip
            close()
            group = []
        group.append(trade)
    if group:
        close()
    return out


def kline(fmt: BinanceFormat, candle: Candle, close_time: int) -> list[Any]:
    """The 12-element kline array. Mercato's candles do not split volume by taker side,
    so the taker-buy volumes are sent as zero (docs/binance.md)."""
    return [
        candle.open_time, fmt.price(candle.open), fmt.price(candle.high), fmt.price(candle.low),
        fmt.price(candle.close), fmt.base(candle.volume), close_time,
        fmt.quote(candle.quote_volume), candle.trades, fmt.base(0), fmt.quote(0), "0",
    ]  # fmt: skip


def window_stats(fmt: BinanceFormat, symbol: str, window: Candle | None, last_price: int,
                 open_time: int, close_time: int, full: bool) -> dict[str, Any]:  # fmt: skip
    """A rolling-window ticker (``ticker``, and ``ticker/24hr`` MINI) in Binance's FULL or
    MINI shape, from the window's trades rolled into one candle (None: none traded in
    it; then the prices are the last price and the volumes zero)."""
    if window is None:
        opened = high = low = close = last_price
        volume = quote_volume = count = 0
        first_id = last_id = -1  # Binance's ids when the window is empty
    else:
        opened, high, low, close = window.open, window.high, window.low, window.close
        volume, quote_volume, count = window.volume, window.quote_volume, window.trades
        first_id, last_id = window.first_trade_id, window.last_trade_id
    stats: dict[str, Any] = {"symbol": symbol}
    if full:
        stats["priceChange"] = fmt.signed_price(close - opened)
        stats["priceChangePercent"] = _percent(close - opened, opened)
        stats["weightedAvgPrice"] = fmt.average(volume, quote_volume)
    stats.update({
        "openPrice": fmt.price(opened), "highPrice": fmt.price(high), "lowPrice": fmt.price(low),
        "lastPrice": fmt.price(close), "volume": fmt.base(volume),
        "quoteVolume": fmt.quote(quote_volume), "openTime": open_time, "closeTime": close_time,
        "firstId": first_id, "lastId": last_id, "count": count,
    })  # fmt: skip
    return stats


Level = tuple[int, int] | None


def full_24hr(stats: dict[str, Any], fmt: BinanceFormat, prev_close: int, last_qty: int,
              bid: Level, ask: Level) -> dict[str, Any]:  # fmt: skip
    """``ticker/24hr`` FULL: the FULL rolling stats with Binance's extra fields, in the
    order of its example."""
    return {
        "symbol": stats["symbol"], "priceChange": stats["priceChange"],
        "priceChangePercent": stats["priceChangePercent"],
        "weightedAvgPrice": stats["weightedAvgPrice"], "prevClosePrice": fmt.price(prev_close),
        "lastPrice": stats["lastPrice"], "lastQty": fmt.qty(last_qty),
        **book_ticker(fmt, bid, ask, with_symbol=None),
        "openPrice": stats["openPrice"], "highPrice": stats["highPrice"],
        "lowPrice": stats["lowPrice"], "volume": stats["volume"],
        "quoteVolume": stats["quoteVolume"], "openTime": stats["openTime"],
        "closeTime": stats["closeTime"], "firstId": stats["firstId"],
        "lastId": stats["lastId"], "count": stats["count"],
    }  # fmt: skip


def book_ticker(fmt: BinanceFormat, bid: tuple[int, int] | None, ask: tuple[int, int] | None,
                with_symbol: str | None) -> dict[str, Any]:  # fmt: skip
    """The best bid and ask (zeros for an empty side, as Binance sends)."""
    out: dict[str, Any] = {} if with_symbol is None else {"symbol": with_symbol}
    out["bidPrice"] = fmt.price(bid[0] if bid else 0)
    out["bidQty"] = fmt.qty(bid[1] if bid else 0)
    out["askPrice"] = fmt.price(ask[0] if ask else 0)
    out["askQty"] = fmt.qty(ask[1] if ask else 0)
    return out


def _percent(change: int, base: int) -> str:
    """``change / base`` in percent to 3 places, as Binance ("-95.960"); 0 without a base."""
    if base == 0:
        return "0.000"
    value = _AVERAGE.divide(_AVERAGE.multiply(Decimal(change), Decimal(100)), Decimal(base))
    return f"{value.quantize(Decimal('0.001'), rounding=ROUND_HALF_EVEN):f}"


def capital_coin(coin: str, decimals: int, free: str, locked: str,
                 networks: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One entry of ``/sapi/v1/capital/config/getall`` (Binance's wallet API)."""
    deposit = any(n["depositEnable"] for n in networks)
    withdraw = any(n["withdrawEnable"] for n in networks)
    zero = fixed(Decimal(0), decimals)
    return {
        "coin": coin, "depositAllEnable": deposit, "free": free, "freeze": zero,
        "ipoable": zero, "ipoing": zero, "isLegalMoney": False, "locked": locked,
        "name": coin, "networkList": networks, "storage": zero, "trading": True,
        "withdrawAllEnable": withdraw, "withdrawing": zero,
    }  # fmt: skip


def derivatives_exchange_info(server_time: int) -> dict[str, Any]:
    """``/fapi/v1/exchangeInfo`` and ``/dapi/v1/exchangeInfo``: Binance's shape with no
    symbols (Mercato has no derivatives), so clients that load every market type work."""
    return {"timezone": "UTC", "serverTime": server_time, "futuresType": "", "rateLimits": [],
            "exchangeFilters": [], "assets": [], "symbols": []}  # fmt: skip
