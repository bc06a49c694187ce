"""Binance's spot dialect, the parts every Binance-compatible endpoint shares: symbols and
the error body.

Binance names a market by its assets run together (``BTCUSDT``); Mercato by ``BTC-USDT``.
:class:`Symbols` maps both ways from the markets the engine knows. A refusal in this
dialect is ``{"code": <negative int>, "msg": <text>}`` with Binance's HTTP status
(docs/binance.md has the table from Mercato's codes to these triples).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Where the dialect answers (its refusals are Binance's body, not the native one).
PATH_PREFIXES = ("/api/v3/", "/sapi/", "/fapi/", "/dapi/")

#: Binance's error body, for the OpenAPI document.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "msg"],
    "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}},
    "additionalProperties": False,
}

#: The statuses Binance answers refusals with (rest-api.md, "HTTP Return Codes").
ERROR_STATUSES = (400, 401, 403, 404, 409, 418, 429, 500, 503)


class BinanceError(Exception):
    """A refusal in Binance's terms: HTTP ``status``, numeric ``code`` and the exact
    ``msg`` Binance sends (CCXT matches the text before the code)."""

    def __init__(self, status: int, code: int, msg: str,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def invalid_symbol() -> BinanceError:
    return BinanceError(400, -1121, "Invalid symbol.")


def binance_symbol(market: str) -> str:
    """``BTC-USDT`` -> ``BTCUSDT``."""
    return market.replace("-", "")


class Symbols:
    """Binance symbols <-> Mercato markets, for the markets given (rebuild it when the set
    of markets changes). Two markets that would run together into one Binance symbol
    (``AB-C`` and ``A-BC``) cannot both be named: the first listed keeps the name."""

    def __init__(self, markets: Iterable[str]) -> None:
        self._market_of: dict[str, str] = {}
        for market in markets:
            self._market_of.setdefault(binance_symbol(market), market)

    def market(self, symbol: str) -> str:
        """The market ``symbol`` names (Binance accepts lower case too), or -1121."""
        market = self._market_of.get(symbol.upper())
        if market is None:
            raise invalid_symbol()
        return market

    def get(self, symbol: str) -> str | None:
        return self._market_of.get(symbol.upper())

    def __len__(self) -> int:
        return len(self._market_of)
