"""Weighted-average-cost folding: whole atoms, conserved, bounded however long it runs."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from mercato.core.positions import Position, divide_half_even


@dataclass
class F:
    side: str
    base_amount: int
    quote_amount: int
    fee: int = 0


def fold(fills: list[F]) -> Position:
    """The position after ``fills`` (oldest first), as the projector folds them."""
    position = Position()
    for fill in fills:
        position.add(fill.side, fill.base_amount, fill.quote_amount, fill.fee)
    return position


def test_average_cost_and_realised_pnl() -> None:
    position = fold([F("BUY", 100, 1000), F("BUY", 100, 3000), F("SELL", 50, 1500)])
    assert position.average_cost == Fraction(20)  # 4000 for 200
    assert position.realised == 1500 - 50 * 20
    assert (position.quantity, position.cost) == (150, 3000)
    assert position.unrealised(Fraction(30)) == 150 * 30 - 3000


def test_selling_more_than_was_bought_realises_only_the_covered_part() -> None:
    position = fold([F("BUY", 10, 100, fee=0), F("SELL", 40, 800, fee=8)])
    # 10 of the 40 sold had a known cost (100); their share of the proceeds is 792/4.
    assert position.realised == 792 // 4 - 100
    assert position.quantity == 0 and position.average_cost is None


def test_a_partial_sell_removes_its_share_of_the_cost_rounded_half_even() -> None:
    position = fold([F("BUY", 3, 10), F("SELL", 1, 5)])
    # 10/3 = 3.33.. of cost leaves with the first unit: 3 atoms; 7 stay with the other two.
    assert (position.cost, position.realised) == (7, 5 - 3)
    position.add("SELL", 2, 9, 0)  # closing the position takes all of what is left
    assert (position.quantity, position.cost, position.realised) == (0, 0, 2 + 9 - 7)


@given(st.integers(-(10**30), 10**30), st.integers(1, 10**20))
def test_divide_half_even_matches_exact_rounding(numerator: int, denominator: int) -> None:
    assert divide_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**9)), min_size=1, max_size=20),
       st.integers(1, 10**6))  # fmt: skip
def test_round_trip_at_one_price_realises_nothing(buys: list[tuple[int, int]], price: int) -> None:
    fills = [F("BUY", qty, qty * price) for qty, _ in buys]
    total = sum(qty for qty, _ in buys)
    position = fold([*fills, F("SELL", total, total * price)])
    assert position.realised == 0 and position.quantity == 0 and position.cost == 0


fill = st.tuples(
    st.booleans(), st.integers(1, 10**12), st.integers(0, 10**15), st.integers(0, 1000)
)


@given(st.lists(fill, max_size=60))
def test_cost_is_conserved_and_stays_within_rounding_of_the_exact_fold(
    steps: list[tuple[bool, int, int, int]],
) -> None:
    """Every atom paid is either still in the cost or was taken out by a sell; and the
    result is the exact (fractional) fold's, within half an atom of rounding per sell."""
    fills = []
    for buy, base, quote, fee_share in steps:
        fee = base * fee_share // 10_000 if buy else quote * fee_share // 10_000
        fills.append(F("BUY" if buy else "SELL", base, quote, fee))
    position = fold(fills)
    held, cost, realised, bought, sells = 0, Fraction(0), Fraction(0), 0, 0
    for f in fills:
        if f.side == "BUY":
            held, cost = held + f.base_amount - f.fee, cost + f.quote_amount
            bought += f.quote_amount
            continue
        covered = min(f.base_amount, held)
        if covered:
            out = cost * covered / held
            realised += Fraction(f.quote_amount - f.fee) * covered / f.base_amount - out
            cost, held, sells = cost - out, held - covered, sells + 1
    assert position.quantity == held >= 0
    assert 0 <= position.cost <= bought
    assert position.quantity > 0 or position.cost == 0  # no cost left without a position
    assert abs(position.cost - cost) <= Fraction(sells, 2)
    assert abs(position.realised - realised) <= sells
    assert isinstance(position.cost, int) and isinstance(position.realised, int)


def test_a_long_history_folds_to_whole_atoms_of_ordinary_size() -> None:
    """Exact fractions grew thousands of bits long over a few thousand partial sells."""
    fills = [
        F("BUY" if i % 3 else "SELL", 10**6 + 7919 * i % 10**5, 5 * 10**10 + 104729 * i)
        for i in range(20_000)
    ]
    position = fold(fills)
    assert position.quantity > 0
    assert position.cost.bit_length() < 96 and abs(position.realised).bit_length() < 96
