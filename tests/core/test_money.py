"""Decimal strings <-> engine integers: exact or rejected, never rounded."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from conftest import BTC_USDT, Exchange
from hypothesis import given
from hypothesis import strategies as st

from mercato.core import commands as c
from mercato.core.model import Asset, MarketRules, MarketSpec
from mercato.core.money import (
    MoneyError,
    format_amount,
    parse_amount,
    parse_decimal,
    parse_fee_rate,
    to_units,
)
from mercato.core.money import fee_for as engine_fee_for

BTC8 = Asset("BTC", 8)
USDT6 = Asset("USDT", 6)


def btc_rules() -> MarketRules:
    return MarketRules.derive(BTC_USDT, BTC8, USDT6)


# ---------------------------------------------------------------------------- exact parsing


@pytest.mark.parametrize(
    ("text", "decimals", "atoms"),
    [
        ("1.5", 8, 150_000_000),
        ("0.00000001", 8, 1),
        ("1", 0, 1),
        ("1.", 8, 100_000_000),
        (".5", 2, 50),
        ("000123.4500", 4, 1_234_500),
        ("92233720368.54775807", 8, 2**63 - 1),
        ("0.000000000000000000000000000001", 30, 1),
    ],
)
def test_parse_amount_is_exact(text: str, decimals: int, atoms: int) -> None:
    assert parse_amount(text, decimals) == atoms


def test_parse_price_and_quantity_in_market_units() -> None:
    rules = btc_rules()
    assert rules.parse_price("30000") == 3_000_000
    assert rules.parse_price("30000.01") == 3_000_001
    assert rules.parse_price("0.01") == 1
    assert rules.parse_quantity("0.5") == 500
    assert rules.parse_quantity("0.001") == 1
    assert rules.parse_quantity("100") == 100_000


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("30000.001", "PRECISION"),  # off-tick (tick 0.01)
        ("30000.005", "PRECISION"),  # would round to 30000.01 or 30000.00: never
        ("0", "NON_POSITIVE"),
        ("0.00", "NON_POSITIVE"),
        ("-0", "NON_POSITIVE"),
        ("-1", "NON_POSITIVE"),
        ("-30000", "NON_POSITIVE"),
        ("1e5", "INVALID_DECIMAL"),
        ("1E5", "INVALID_DECIMAL"),
        ("3e4", "INVALID_DECIMAL"),
        ("NaN", "INVALID_DECIMAL"),
        ("nan", "INVALID_DECIMAL"),
        ("sNaN", "INVALID_DECIMAL"),
        ("Infinity", "INVALID_DECIMAL"),
        ("inf", "INVALID_DECIMAL"),
        ("-inf", "INVALID_DECIMAL"),
        ("", "INVALID_DECIMAL"),
        (" ", "INVALID_DECIMAL"),
        (" 1", "INVALID_DECIMAL"),
        ("1 ", "INVALID_DECIMAL"),
        ("1 000", "INVALID_DECIMAL"),
        ("1\n", "INVALID_DECIMAL"),
        ("+1", "INVALID_DECIMAL"),
        ("--1", "INVALID_DECIMAL"),
        ("1,5", "INVALID_DECIMAL"),
        ("1_000", "INVALID_DECIMAL"),
        ("1.2.3", "INVALID_DECIMAL"),
        (".", "INVALID_DECIMAL"),
        ("-", "INVALID_DECIMAL"),
        ("-.", "INVALID_DECIMAL"),
        ("0x10", "INVALID_DECIMAL"),
        ("\u0661\u0662", "INVALID_DECIMAL"),  # Arabic-Indic digits: isdigit() but not ASCII
        ("\uff11", "INVALID_DECIMAL"),  # fullwidth 1
        ("1" * 65, "INVALID_DECIMAL"),  # longer than any sane amount
    ],
)
def test_parse_price_rejects(text: str, code: str) -> None:
    with pytest.raises(MoneyError) as error:
        btc_rules().parse_price(text)
    assert error.value.code == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("0.0005", "PRECISION"),  # off-step (step 0.001)
        ("0.0011", "PRECISION"),
        ("0.000000001", "PRECISION"),  # finer than a BTC atom, too
        ("0", "NON_POSITIVE"),
        ("-0.001", "NON_POSITIVE"),
        ("1e-3", "INVALID_DECIMAL"),
        ("NaN", "INVALID_DECIMAL"),
        ("", "INVALID_DECIMAL"),
        ("0.5 ", "INVALID_DECIMAL"),
    ],
)
def test_parse_quantity_rejects(text: str, code: str) -> None:
    with pytest.raises(MoneyError) as error:
        btc_rules().parse_quantity(text)
    assert error.value.code == code


def test_parse_amount_rejects_more_decimals_than_the_asset_has() -> None:
    with pytest.raises(MoneyError) as error:
        parse_amount("1.000000001", 8)
    assert error.value.code == "PRECISION"
    with pytest.raises(MoneyError) as error:
        parse_amount("0.5", 0)
    assert error.value.code == "PRECISION"


def test_parse_decimal_rejects_non_strings() -> None:
    for value in (1, 1.5, None, b"1", Decimal("1")):
        with pytest.raises(MoneyError) as error:
            parse_decimal(value)  # type: ignore[arg-type]
        assert error.value.code == "INVALID_DECIMAL"


@given(
    atoms=st.integers(min_value=1, max_value=2**63 - 1),
    decimals=st.integers(min_value=0, max_value=30),
)
def test_amount_round_trips_exactly(atoms: int, decimals: int) -> None:
    text = format_amount(atoms, decimals)
    assert "e" not in text.lower()
    assert parse_amount(text, decimals) == atoms
    # The same amount written with one more (non-zero) digit than the asset has: rejected.
    whole, fraction = divmod(atoms, 10**decimals)
    digits = f"{fraction:0{decimals}d}" if decimals else ""
    with pytest.raises(MoneyError) as error:
        parse_amount(f"{whole}.{digits}1", decimals)
    assert error.value.code == "PRECISION"


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("1" + "0" * 40, Decimal("0.00000001"), 10**48),
        ("12345678901234567890123456789.5", Decimal("0.5"), 24691357802469135780246913579),
        ("0." + "0" * 29 + "1", Decimal("1E-30"), 1),
    ],
)
def test_long_values_are_exact_or_a_money_error(text: str, unit: Decimal, expected: int) -> None:
    """Up to 64 characters are accepted as input: a long value must come back exact or be
    refused with a MoneyError, never escape as decimal.InvalidOperation."""
    try:
        value = to_units(text, unit, "quantity")
    except MoneyError:
        return
    assert value == expected


# ---------------------------------------------------------------------------- fees


@pytest.mark.parametrize(
    ("text", "ppm"),
    [("0", 0), ("0.001", 1000), ("0.000001", 1), ("0.0025", 2500), ("0.999999", 999_999)],
)
def test_parse_fee_rate(text: str, ppm: int) -> None:
    assert parse_fee_rate(text) == ppm


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("0.0000001", "PRECISION"),
        ("1", "FEE_RATE_TOO_HIGH"),
        ("1.5", "FEE_RATE_TOO_HIGH"),
        ("-0.001", "NON_POSITIVE"),
        ("1e-3", "INVALID_DECIMAL"),
        ("1" + "0" * 25, "FEE_RATE_TOO_HIGH"),
    ],
)
def test_parse_fee_rate_rejects(text: str, code: str) -> None:
    try:
        parse_fee_rate(text)
    except MoneyError as error:
        assert error.code == code
    else:
        pytest.fail(f"{text!r} accepted as a fee rate")


@pytest.mark.parametrize(
    ("received", "ppm", "fee"),
    [
        (0, 1000, 0),
        (1_000_000, 1000, 1000),  # exactly 0.1 %
        (1_000_001, 1000, 1001),  # 1000.001 -> 1001
        (999, 1000, 1),  # 0.999 -> 1
        (1, 1, 1),  # 0.000001 -> 1
        (123_456_789, 0, 0),
        (100_000, 2000, 200),
        (300_000, 7, 3),  # 2.1 -> 3
    ],
)
def test_fee_for_rounds_up_to_the_atom(received: int, ppm: int, fee: int) -> None:
    assert engine_fee_for(received, ppm) == fee


@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=999_999))
def test_fee_for_is_the_exact_ceiling(received: int, ppm: int) -> None:
    exact = Fraction(received * ppm, 1_000_000)
    fee = engine_fee_for(received, ppm)
    assert fee >= exact > fee - 1


# ---------------------------------------------------------------------------- market rules


def spec(**changes: object) -> MarketSpec:
    fields = {
        "symbol": "BTC-USDT", "base": "BTC", "quote": "USDT", "tick_size": "0.01",
        "step_size": "0.001", "min_qty": "0.001", "max_qty": "100", "min_notional": "10",
    }  # fmt: skip
    fields.update(changes)
    return MarketSpec(**fields)  # type: ignore[arg-type]


def test_derive_gives_exact_integer_rules() -> None:
    rules = btc_rules()
    assert rules.lot_atoms == 100_000  # 0.001 BTC
    assert rules.notional_unit == 10  # 0.01 USDT x 0.001 = 0.00001 USDT
    assert (rules.min_lots, rules.max_lots) == (1, 100_000)
    assert rules.min_notional == 10_000_000  # 10 USDT
    assert (rules.maker_fee, rules.taker_fee) == (1000, 2000)


def test_derive_accepts_tick_times_step_of_exactly_one_quote_atom() -> None:
    rules = MarketRules.derive(spec(tick_size="0.001", step_size="0.001"), BTC8, USDT6)
    assert rules.notional_unit == 1


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"tick_size": "0.0001"}, "INVALID_MARKET"),  # 0.0001 x 0.001 = 1e-7 USDT < 1 atom
        ({"tick_size": "0.01", "step_size": "0.00001"}, "INVALID_MARKET"),  # 1e-7 USDT
        ({"tick_size": "0.015", "step_size": "0.0001"}, "INVALID_MARKET"),  # 1.5e-6 USDT
        ({"step_size": "0.000000001"}, "PRECISION"),  # finer than a BTC atom
        ({"tick_size": "0"}, "INVALID_MARKET"),
        ({"tick_size": "-0.01"}, "INVALID_MARKET"),
        ({"tick_size": "1e-2"}, "INVALID_DECIMAL"),
        ({"min_qty": "0.0015"}, "PRECISION"),
        ({"max_qty": "0.0005", "min_qty": "0.001"}, "PRECISION"),
        ({"min_qty": "2", "max_qty": "1"}, "INVALID_MARKET"),
        ({"min_notional": "0.0000001"}, "PRECISION"),
        ({"maker_fee": "1"}, "FEE_RATE_TOO_HIGH"),
        ({"protection_bps": 10_000}, "INVALID_MARKET"),
        ({"protection_bps": -1}, "INVALID_MARKET"),
        ({"default_stp": "NONE", "allowed_stp": ("EXPIRE_MAKER",)}, "INVALID_MARKET"),
    ],
)
def test_derive_rejects_unusable_specs(changes: dict[str, object], code: str) -> None:
    try:
        MarketRules.derive(spec(**changes), BTC8, USDT6)
    except MoneyError as error:
        assert error.code == code
    else:
        pytest.fail(f"{changes} accepted")


def test_derive_rejects_tick_times_step_that_only_rounds_to_a_whole_atom() -> None:
    """0.99999999999999999999999999999 x 1 is not a whole number of atoms of a
    0-decimal quote; the check must not be fooled by the 28-digit decimal context."""
    tick = "0." + "9" * 29
    market = MarketSpec("A-B", "A", "B", tick, "1", "1", "10", "0")
    with pytest.raises(MoneyError) as error:
        MarketRules.derive(market, Asset("A", 0), Asset("B", 0))
    assert error.value.code == "INVALID_MARKET"


def test_engine_rejects_a_market_finer_than_a_quote_atom(ex: Exchange) -> None:
    ex.reject(c.UpsertMarket(spec(symbol="FINE", tick_size="0.0001")), "INVALID_MARKET")
    assert "FINE" not in ex.engine.markets


def test_engine_never_raises_on_a_very_long_market_quantity(ex: Exchange) -> None:
    """``Engine.apply`` never raises for bad input: a 41-digit max_qty is exact (10**43
    lots) or refused, but it must not escape as an exception."""
    result = ex.apply(c.UpsertMarket(spec(symbol="HUGE", max_qty="1" + "0" * 40)))
    if result.status == "REJECTED":
        assert result.code == "INVALID_MARKET"
        assert "HUGE" not in ex.engine.markets
    else:
        assert result.status == "ACCEPTED"
        assert ex.engine.markets["HUGE"].rules.max_lots == 10**43


def test_engine_never_raises_on_a_very_long_fee_rate(ex: Exchange) -> None:
    ex.reject(c.SetFeeTier(1, "1" + "0" * 25, "0.001"), "INVALID_FEE_TIER")
