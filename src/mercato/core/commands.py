"""Commands: the only way to change engine state.

Every command is a tagged, array-encoded msgspec struct; the journal stores them as
msgpack. Evolution rule: new fields are appended at the end with a default, so old
journals still decode; a field is never removed or reordered (see docs/core.md).
Amounts are integers: quantities in lots, prices in ticks, amounts in asset atoms,
times in milliseconds since the epoch.
"""

from __future__ import annotations

import msgspec

from mercato.core.model import (
    KillSwitchMode,
    MarketSpec,
    MarketStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)

COMMAND_SCHEMA_VERSION = 1


class _Command(msgspec.Struct, tag=True, tag_field="command", array_like=True, gc=False):
    pass


class UpsertAsset(_Command):
    symbol: str
    decimals: int


class UpsertMarket(_Command):
    spec: MarketSpec


class SetMarketStatus(_Command):
    market: str
    status: MarketStatus


class SetFeeTier(_Command):
    """Define or change fee tier ``tier`` (>= 1); rates as fractions, e.g. "0.0008"."""

    tier: int
    maker_fee: str
    taker_fee: str


class SetUserFeeTier(_Command):
    """Put ``user`` on ``tier``; tier 0 means the market's own fee rates."""

    user: int
    tier: int


class CreditDeposit(_Command):
    """Credit a confirmed deposit once: a repeated ``external_id`` is a no-op (answered
    ``DUPLICATE``) within ``DEPOSIT_ID_WINDOW_MS`` of ``issued_at``, and the command is
    refused (``STALE_DEPOSIT``) outside it. ``issued_at`` (ms, the submitter's clock): 0
    means the command's own timestamp (journals written before the field, internal
    callers)."""

    user: int
    asset: str
    amount: int
    external_id: str
    issued_at: int = 0


class HoldWithdrawal(_Command):
    """Lock ``amount`` (which includes ``fee``) for a withdrawal being processed.
    ``issued_at`` as for :class:`CreditDeposit`: a finished withdrawal's id is remembered
    until ``issued_at`` + the window, and a hold outside the window is ``STALE_WITHDRAWAL``."""

    user: int
    asset: str
    amount: int
    withdrawal_id: str
    fee: int = 0
    issued_at: int = 0


class SettleWithdrawal(_Command):
    """The withdrawal was sent: the held amount leaves the exchange, the fee is earned."""

    withdrawal_id: str


class ReleaseWithdrawal(_Command):
    """The withdrawal was rejected or failed: the held amount returns to available."""

    withdrawal_id: str


class PlaceOrder(_Command):
    """Place an order. ``quantity`` in lots; ``price``/``stop_price`` in ticks;
    ``quote_quantity`` (quote atoms) instead of ``quantity`` for a market buy by amount;
    ``expire_at`` (ms) with GTD; ``iceberg_quantity`` (lots) is the visible slice;
    ``stp`` defaults to the market's default mode."""

    user: int
    market: str
    side: Side
    type: OrderType = "LIMIT"
    quantity: int = 0
    price: int = 0
    time_in_force: TimeInForce = "GTC"
    client_order_id: str = ""
    quote_quantity: int = 0
    stop_price: int = 0
    expire_at: int = 0
    iceberg_quantity: int = 0
    stp: StpMode | None = None


class CancelOrder(_Command):
    """Cancel one of ``user``'s open orders by ``order_id`` or by ``client_order_id``."""

    user: int
    order_id: int = 0
    client_order_id: str = ""


class CancelAll(_Command):
    """Cancel every open order of ``user``, or only those in ``market`` if given."""

    user: int
    market: str = ""


class AmendOrder(_Command):
    """Change an open limit order. ``quantity`` is the new total quantity (lots, more than
    already filled) and ``price`` the new price (ticks); 0 keeps the current value. Only a
    quantity decrease at the same price keeps time priority; anything else re-queues.
    ``keep_priority`` asks for that decrease only (Binance's order amend keep priority):
    a larger quantity is refused (``AMEND_QUANTITY_INCREASE``), and so is a price."""

    user: int
    order_id: int = 0
    client_order_id: str = ""
    quantity: int = 0
    price: int = 0
    keep_priority: bool = False


class FreezeUser(_Command):
    """Block ``user`` from placing/amending orders and withdrawing; optionally cancel."""

    user: int
    cancel_orders: bool = False


class UnfreezeUser(_Command):
    user: int


class SetKillSwitch(_Command):
    """Global override: CANCEL_ONLY or HALT every market at once; OFF restores them."""

    mode: KillSwitchMode


class Tick(_Command):
    """Carries only the sequencer's timestamp: lets GTD orders expire when no one trades."""


Command = (
    UpsertAsset
    | UpsertMarket
    | SetMarketStatus
    | SetFeeTier
    | SetUserFeeTier
    | CreditDeposit
    | HoldWithdrawal
    | SettleWithdrawal
    | ReleaseWithdrawal
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | AmendOrder
    | FreezeUser
    | UnfreezeUser
    | SetKillSwitch
    | Tick
)
