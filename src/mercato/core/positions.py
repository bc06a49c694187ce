"""Positions and P&L by the weighted average cost method, folded fill by fill.

Per user and market (base asset priced in the quote asset): a buy adds the base received
(after its fee, which is taken in base) at the quote paid; a sell removes base at the
current average cost and realises the proceeds (after the fee, taken in quote) minus that
cost. Base the user holds but did not buy on that market (deposits, the faucet, other
markets) has no known cost: it is outside the position, and selling more than the position
realises nothing on the excess.

Everything is kept in whole atoms. A sell that closes only part of the position removes
``cost * sold / held`` of the cost, rounded half-even to the quote atom (and, when it sells
more than the position holds, takes the covered share of its proceeds the same way); a sell
that closes the position removes its whole cost, so a position bought and sold out realises
exactly what it gained, to the atom. Exact fractions were tried first: their denominators
grow with every partial sell (thousands of bits after a few thousand fills) and folding
20,000 fills took 10 s.

The projector (mercato.store.projector) folds each fill as it projects it into the
``positions`` table, so reading a portfolio costs one row per market, not one per fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


def divide_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded half-even to an integer."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


@dataclass
class Position:
    """``quantity`` in base atoms; ``cost`` and ``realised`` in quote atoms."""

    quantity: int = 0
    cost: int = 0
    realised: int = 0

    @property
    def average_cost(self) -> Fraction | None:
        """Quote atoms per base atom, or None without a position."""
        return Fraction(self.cost, self.quantity) if self.quantity else None

    def unrealised(self, last_price: Fraction | None) -> Fraction | None:
        """``last_price`` in quote atoms per base atom."""
        if last_price is None:
            return None
        return self.quantity * last_price - self.cost

    def add(self, side: str, base_amount: int, quote_amount: int, fee: int) -> None:
        """One fill of the user's: the fee is in base for a buy, in quote for a sell."""
        if side == "BUY":
            self.quantity += base_amount - fee
            self.cost += quote_amount
            return
        covered = min(base_amount, self.quantity)
        if covered == 0:
            return  # base of unknown cost: nothing to realise
        proceeds = quote_amount - fee
        if covered < base_amount:
            proceeds = divide_half_even(proceeds * covered, base_amount)
        if covered == self.quantity:
            cost_out = self.cost
        else:
            cost_out = divide_half_even(self.cost * covered, self.quantity)
        self.realised += proceeds - cost_out
        self.cost -= cost_out
        self.quantity -= covered
