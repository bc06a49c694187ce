"""Weighted-average-cost folding: exact, and consistent however a position is built."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from mercato.api.portfolio import fold


@dataclass
class F:
    side: str
    base_amount: int
    quote_amount: int
    fee: int = 0


def test_average_cost_and_realised_pnl() -> None:
    position = fold([F("BUY", 100, 1000), F("BUY", 100, 3000), F("SELL", 50, 1500)])
    assert position.average_cost == Fraction(20)  # 4000 for 200
    assert position.realised == 1500 - 50 * 20
    assert (position.quantity, position.cost) == (150, Fraction(3000))
    assert position.unrealised(Fraction(30)) == 150 * 30 - 3000


def test_selling_more_than_was_bought_realises_only_the_covered_part() -> None:
    position = fold([F("BUY", 10, 100, fee=0), F("SELL", 40, 800, fee=8)])
    # 10 of the 40 sold had a known cost (100); their share of the proceeds is 792/4.
    assert position.realised == Fraction(792, 4) - 100
    assert position.quantity == 0 and position.average_cost is None


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**9)), min_size=1, max_size=20),
       st.integers(1, 10**6))  # fmt: skip
def test_round_trip_at_one_price_realises_nothing(buys: list[tuple[int, int]], price: int) -> None:
    fills = [F("BUY", qty, qty * price) for qty, _ in buys]
    total = sum(qty for qty, _ in buys)
    position = fold([*fills, F("SELL", total, total * price)])
    assert position.realised == 0 and position.quantity == 0 and position.cost == 0
