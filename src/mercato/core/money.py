"""Exact conversion between decimal strings (the edges) and integers (the engine).

Inside the engine every amount is an ``int``: ledger atoms of an asset, price ticks
of a market, quantity lots of a market, fee rates in parts per million. These
helpers are the only place where decimal strings become integers, and they never
round: a value that is not an exact multiple of its unit is rejected with a
:class:`MoneyError` that says what to fix.
"""

from __future__ import annotations

from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

from mercato.core.errors import CodedError

FEE_RATE_DENOMINATOR = 1_000_000
"""Fee rates are integers in parts per million: 1000 means 0.1 %."""

MAX_DECIMAL_CHARS = 64

# Decimal's default context rounds at 28 digits. Every computation here runs in this
# one instead: inputs have at most 64 digits, so 200 digits never round, and any
# inexact result would raise rather than round silently.
EXACT = Context(prec=200, traps=[InvalidOperation, Inexact, DivisionByZero, Overflow])


class MoneyError(CodedError, ValueError):
    """A decimal string that cannot be represented exactly; ``code`` is stable."""


def parse_decimal(text: str, what: str = "value") -> Decimal:
    """Parse a plain decimal string (digits, one optional point, optional sign).

    Exponents, NaN, infinities, whitespace and empty strings are rejected so that
    what a client sends is exactly what it means.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_DECIMAL_CHARS:
        raise MoneyError("INVALID_DECIMAL", f"{what} must be a decimal string such as '1.25'")
    body = text[1:] if text[0] == "-" else text
    integer, _, fraction = body.partition(".")
    if not (integer or fraction) or not (integer + fraction).isdigit() or not body.isascii():
        raise MoneyError("INVALID_DECIMAL", f"{what} must be a decimal string such as '1.25'")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - guarded by the checks above
        raise MoneyError("INVALID_DECIMAL", f"{what} is not a decimal: {text!r}") from exc


def to_units(text: str, unit: Decimal, what: str, *, allow_zero: bool = False) -> int:
    """Return ``text / unit`` as an int, rejecting negatives and non-multiples."""
    value = parse_decimal(text, what)
    if value < 0 or (value == 0 and not allow_zero):
        raise MoneyError("NON_POSITIVE", f"{what} must be greater than zero, got {text}")
    units, remainder = EXACT.divmod(value, unit)
    if remainder != 0:
        raise MoneyError(
            "PRECISION",
            f"{what} {text} is not a multiple of {unit.normalize():f}; round it yourself",
        )
    return int(units)


def atoms_per_unit(decimals: int) -> Decimal:
    """The size of one ledger atom of an asset with ``decimals`` decimals."""
    return EXACT.scaleb(Decimal(1), -decimals)


def parse_amount(text: str, decimals: int, what: str = "amount") -> int:
    """A positive asset amount in atoms, e.g. ``parse_amount("1.5", 8) == 150000000``."""
    return to_units(text, atoms_per_unit(decimals), what)


def format_units(units: int, unit: Decimal) -> str:
    """The exact decimal string of ``units * unit`` without exponent or trailing zeros."""
    return f"{EXACT.multiply(Decimal(units), unit).normalize(EXACT):f}"


def format_amount(atoms: int, decimals: int) -> str:
    """The decimal string of an amount in atoms, e.g. ``format_amount(150000000, 8) == "1.5"``."""
    return format_units(atoms, atoms_per_unit(decimals))


def parse_fee_rate(text: str, what: str = "fee rate") -> int:
    """A fee rate such as ``"0.001"`` as parts per million (``1000``); zero allowed."""
    rate = to_units(text, EXACT.scaleb(Decimal(1), -6), what, allow_zero=True)
    if rate >= FEE_RATE_DENOMINATOR:
        raise MoneyError("FEE_RATE_TOO_HIGH", f"{what} must be below 1, got {text}")
    return rate


def fee_for(received: int, rate_ppm: int) -> int:
    """The fee on ``received`` atoms, rounded up to the atom (in the exchange's favour)."""
    return -((-received * rate_ppm) // FEE_RATE_DENOMINATOR)
