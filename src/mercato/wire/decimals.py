"""Engine integers to the decimal strings clients see, per market.

Prices are ticks x ``tick_size``, quantities lots x ``step_size``, amounts (volumes, fees,
balances) atoms of the asset at its ledger decimals: always through
:mod:`mercato.core.money`, which is exact (no floats, no rounding). The one division,
an average price, rounds half-even to the quote asset's precision.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

from mercato.core.model import MarketRules, MarketSpec
from mercato.core.money import EXACT, format_amount, format_units

PRICE_CACHE_LIMIT = 65_536
# Averages are the one division here: rounded, never trapping as EXACT would.
AVERAGE = Context(prec=60, rounding=ROUND_HALF_EVEN)


class MarketFormat:
    """The string forms of one market's integers. Price strings are cached: a book's
    prices repeat all day long, and the cache is simply emptied when it grows too big."""

    __slots__ = ("_prices", "base", "base_decimals", "quote", "quote_decimals", "step", "tick")

    def __init__(self, tick: Decimal, step: Decimal, base: str, base_decimals: int,
                 quote: str, quote_decimals: int) -> None:  # fmt: skip
        self.tick = tick
        self.step = step
        self.base = base
        self.base_decimals = base_decimals
        self.quote = quote
        self.quote_decimals = quote_decimals
        self._prices: dict[int, str] = {}

    @classmethod
    def of(cls, spec: MarketSpec, rules: MarketRules,
           asset_decimals: dict[str, int]) -> MarketFormat:  # fmt: skip
        base, quote = spec.base, spec.quote
        return cls(rules.tick_size, rules.step_size, base, asset_decimals[base],
                   quote, asset_decimals[quote])  # fmt: skip

    def price(self, ticks: int) -> str:
        text = self._prices.get(ticks)
        if text is None:
            if len(self._prices) >= PRICE_CACHE_LIMIT:
                self._prices.clear()
            text = self._prices[ticks] = format_units(ticks, self.tick)
        return text

    def qty(self, lots: int) -> str:
        return format_units(lots, self.step)

    def base_amount(self, atoms: int) -> str:
        return format_amount(atoms, self.base_decimals)

    def quote_amount(self, atoms: int) -> str:
        return format_amount(atoms, self.quote_decimals)

    def amount(self, atoms: int, asset: str) -> str:
        decimals = self.base_decimals if asset == self.base else self.quote_decimals
        return format_amount(atoms, decimals)


def fee_asset(fmt: MarketFormat, side: str) -> str:
    """Fees are taken from what a side receives: base for buys, quote for sells."""
    return fmt.base if side == "BUY" else fmt.quote


def fee_amount(fmt: MarketFormat, side: str, atoms: int) -> str:
    return fmt.base_amount(atoms) if side == "BUY" else fmt.quote_amount(atoms)


def average_price(fmt: MarketFormat, base_atoms: int, quote_atoms: int) -> str | None:
    """Quote per base of the fills so far, to the quote asset's precision (half even)."""
    if base_atoms == 0:
        return None
    quote = EXACT.scaleb(Decimal(quote_atoms), -fmt.quote_decimals)
    base = EXACT.scaleb(Decimal(base_atoms), -fmt.base_decimals)
    exponent = Decimal(1).scaleb(-fmt.quote_decimals)
    average = AVERAGE.divide(quote, base).quantize(exponent, context=AVERAGE)
    return f"{average.normalize(AVERAGE):f}"
