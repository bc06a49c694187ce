"""Portfolio P&L by the weighted average cost method, folded from a user's fills.

Per market (base asset priced in the quote asset): a buy adds the base received (after
its fee, which is taken in base) at the quote paid; a sell removes base at the current
average cost and realises the proceeds (after the fee, taken in quote) minus that cost.
Unrealised P&L values the remaining position at the market's last price. Base the user
holds but did not buy on that market (deposits, the faucet, other markets) has no known
cost: it is outside the position, and selling more than the position realises nothing on
the excess. Arithmetic is exact (fractions of atoms); results are rounded half-even to the
quote asset's atom only when formatted.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol


class Fill(Protocol):
    @property
    def side(self) -> str: ...
    @property
    def base_amount(self) -> int: ...
    @property
    def quote_amount(self) -> int: ...
    @property
    def fee(self) -> int: ...


@dataclass
class Position:
    """Atoms: ``quantity`` of base, ``cost`` and P&L of quote (fractions: exact)."""

    quantity: int = 0
    cost: Fraction = Fraction(0)
    realised: Fraction = Fraction(0)

    @property
    def average_cost(self) -> Fraction | None:
        """Quote atoms per base atom, or None without a position."""
        return self.cost / self.quantity if self.quantity else None

    def unrealised(self, last_price: Fraction | None) -> Fraction | None:
        """``last_price`` in quote atoms per base atom."""
        if last_price is None:
            return None
        return self.quantity * last_price - self.cost

    def add(self, fill: Fill) -> None:
        if fill.side == "BUY":
            self.quantity += fill.base_amount - fill.fee
            self.cost += fill.quote_amount
            return
        covered = min(fill.base_amount, self.quantity)
        if covered == 0:
            return  # base of unknown cost: nothing to realise
        cost_out = self.cost * covered / self.quantity
        proceeds = Fraction(fill.quote_amount - fill.fee) * covered / fill.base_amount
        self.realised += proceeds - cost_out
        self.cost -= cost_out
        self.quantity -= covered


def fold(fills: list[Fill]) -> Position:
    """The position after ``fills`` (oldest first)."""
    position = Position()
    for fill in fills:
        position.add(fill)
    return position
