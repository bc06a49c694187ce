"""Vocabulary shared by commands, events and the engine: enums and configuration."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from mercato.core.money import (
    EXACT,
    MoneyError,
    atoms_per_unit,
    parse_decimal,
    parse_fee_rate,
    to_units,
)

Side = Literal["BUY", "SELL"]
OrderType = Literal[
    "LIMIT",
    "MARKET",
    "LIMIT_MAKER",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
TimeInForce = Literal["GTC", "IOC", "FOK", "GTD"]
StpMode = Literal["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]
MarketStatus = Literal["TRADING", "HALTED", "CANCEL_ONLY"]
KillSwitchMode = Literal["OFF", "CANCEL_ONLY", "HALT"]
OrderStatus = Literal[
    "UNTRIGGERED",
    "NEW",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCELED",
    "REJECTED",
    "EXPIRED",
    "EXPIRED_IN_MATCH",
]

STP_MODES: tuple[StpMode, ...] = (
    "NONE",
    "EXPIRE_TAKER",
    "EXPIRE_MAKER",
    "EXPIRE_BOTH",
    "DECREMENT",
)
STOP_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
LIMIT_PRICED_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
MARKET_TYPES = frozenset({"MARKET", "STOP_LOSS", "TAKE_PROFIT"})
TERMINAL_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"})

# Ledger account kinds. A user account is (kind, user); system accounts use user 0.
AVAILABLE = 0
LOCKED = 1
FEES = 2
EXTERNAL_DEPOSITS = 3
EXTERNAL_WITHDRAWALS = 4
ACCOUNT_NAMES = ("available", "locked", "fees", "external_deposits", "external_withdrawals")

# Why a ledger entry happened.
RESERVE = 0  # available -> locked when an order or withdrawal is placed
RELEASE = 1  # locked -> available on cancel, expiry, amend down, price improvement
TRADE = 2  # locked of one user -> available of the counterparty
FEE = 3  # user available -> fee account
DEPOSIT = 4  # external deposits -> user available
WITHDRAWAL = 5  # user locked -> external withdrawals (or fee account for the withdrawal fee)
REASON_NAMES = ("reserve", "release", "trade", "fee", "deposit", "withdrawal")

# Limits the engine enforces on every command.
MAX_PRICE_TICKS = 10**15
# Every amount must fit a signed 64-bit integer (msgpack, SQL BIGINT). Bounding what
# was ever deposited of an asset bounds every balance, fee and reservation of it.
MAX_SUPPLY = 2**63 - 1
MAX_ASSET_DECIMALS = 30
# How long the engine remembers a credited deposit id (and a finished withdrawal id)
# after the command's ``issued_at``, and how far from its own clock it accepts an
# ``issued_at`` at all. Remembering every id for good would grow the state (and every
# snapshot) without bound; remembering it for a window is as safe, because the engine
# refuses (STALE_*) any command issued outside the window it remembers: a credit
# replayed after its id was forgotten is refused, not credited again. Beyond the window
# the store (deposit_credits) is the authority; 7 days covers a watcher, a sequencer
# or a projector down over a long weekend with room to spare (docs/custody.md).
DEPOSIT_ID_WINDOW_MS = 7 * 24 * 3600 * 1000
# Binance's ICEBERG_PARTS filter, fixed for every market: an iceberg shows at least
# 1/MAX_ICEBERG_PARTS of its quantity, which bounds the slices (and the fills) one
# order can produce in a single sweep.
MAX_ICEBERG_PARTS = 100


class Asset(msgspec.Struct, frozen=True, array_like=True, gc=False):
    symbol: str
    decimals: int


class MarketSpec(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A market as an operator configures it, in decimal strings.

    ``tick_size`` is in quote per one whole base unit; ``step_size``, ``min_qty`` and
    ``max_qty`` in base; ``min_notional`` in quote; fees as fractions ("0.001").
    ``protection_bps``: a market order never trades further than this many basis
    points from the best opposite price at its arrival.
    """

    symbol: str
    base: str
    quote: str
    tick_size: str
    step_size: str
    min_qty: str
    max_qty: str
    min_notional: str
    maker_fee: str = "0.001"
    taker_fee: str = "0.001"
    protection_bps: int = 500
    status: MarketStatus = "TRADING"
    default_stp: StpMode = "EXPIRE_MAKER"
    allowed_stp: tuple[StpMode, ...] = STP_MODES


class MarketRules(msgspec.Struct, frozen=True, gc=False):
    """A market's rules in engine integers, derived once from its :class:`MarketSpec`.

    The quote amount of ``lots`` at ``ticks`` is exactly ``ticks * lots * notional_unit``
    quote atoms: ``tick_size * step_size`` must be a whole number of quote atoms so
    that no trade ever needs rounding.
    """

    lot_atoms: int
    notional_unit: int
    min_lots: int
    max_lots: int
    min_notional: int
    maker_fee: int
    taker_fee: int
    tick_size: Decimal
    step_size: Decimal

    @staticmethod
    def derive(spec: MarketSpec, base: Asset, quote: Asset) -> MarketRules:
        """Check ``spec`` against its assets; raise :class:`MoneyError` if it is unusable."""
        tick = parse_decimal(spec.tick_size, "tick_size")
        step = parse_decimal(spec.step_size, "step_size")
        if tick <= 0 or step <= 0:
            raise MoneyError("INVALID_MARKET", "tick_size and step_size must be positive")
        lot_atoms = to_units(spec.step_size, atoms_per_unit(base.decimals), "step_size")
        unit = EXACT.multiply(EXACT.multiply(tick, step), EXACT.scaleb(Decimal(1), quote.decimals))
        if unit != unit.to_integral_value(context=EXACT):
            raise MoneyError(
                "INVALID_MARKET",
                f"tick_size x step_size = {EXACT.multiply(tick, step).normalize(EXACT):f} "
                f"{spec.quote} is finer "
                f"than one {spec.quote} atom; raise tick_size or step_size, or the ledger "
                f"decimals of {spec.quote}",
            )
        min_lots = to_units(spec.min_qty, step, "min_qty")
        max_lots = to_units(spec.max_qty, step, "max_qty")
        if max_lots < min_lots:
            raise MoneyError("INVALID_MARKET", "max_qty must not be below min_qty")
        if not 0 <= spec.protection_bps < 10_000:
            raise MoneyError("INVALID_MARKET", "protection_bps must be within 0..9999")
        if spec.default_stp not in spec.allowed_stp:
            raise MoneyError("INVALID_MARKET", "default_stp must be one of allowed_stp")
        return MarketRules(
            lot_atoms=lot_atoms,
            notional_unit=int(unit),
            min_lots=min_lots,
            max_lots=max_lots,
            min_notional=to_units(
                spec.min_notional, atoms_per_unit(quote.decimals), "min_notional", allow_zero=True
            ),
            maker_fee=parse_fee_rate(spec.maker_fee, "maker_fee"),
            taker_fee=parse_fee_rate(spec.taker_fee, "taker_fee"),
            tick_size=tick,
            step_size=step,
        )

    def parse_price(self, text: str, what: str = "price") -> int:
        """A limit or stop price string as ticks; off-tick prices are rejected."""
        return to_units(text, self.tick_size, what)

    def parse_quantity(self, text: str, what: str = "quantity") -> int:
        """A base quantity string as lots; off-step quantities are rejected."""
        return to_units(text, self.step_size, what)
