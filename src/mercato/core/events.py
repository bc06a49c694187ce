"""Events: what the engine says happened, in order, for consumers to project.

Every balance change is a double-entry posting from a debit account to a credit account
(the account the amount leaves and the one it arrives in): a :class:`Transfer` event, or
one of the four legs a :class:`Trade` carries. ``mercato.core.ledger.postings`` lists
them for any event, so the ledger can be rebuilt from events alone. An order's status
changes are :class:`OrderUpdated` events; its fills are the :class:`Trade` events that
name it.
"""

from __future__ import annotations

import msgspec

from mercato.core.model import (
    KillSwitchMode,
    MarketSpec,
    MarketStatus,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)


class _Event(msgspec.Struct, tag=True, tag_field="event", array_like=True, gc=False):
    pass


class AssetUpserted(_Event):
    symbol: str
    decimals: int


class MarketUpserted(_Event):
    spec: MarketSpec


class MarketStatusChanged(_Event):
    market: str
    status: MarketStatus


class FeeTierSet(_Event):
    tier: int
    maker_fee: int
    taker_fee: int


class UserFeeTierSet(_Event):
    user: int
    tier: int


class UserFrozen(_Event):
    user: int
    frozen: bool


class KillSwitchSet(_Event):
    mode: KillSwitchMode


class OrderAccepted(_Event):
    """A new order, as accepted; ``status`` is NEW or UNTRIGGERED (stop orders)."""

    order_id: int
    user: int
    market: str
    side: Side
    type: OrderType
    quantity: int
    price: int
    time_in_force: TimeInForce
    client_order_id: str
    quote_quantity: int
    stop_price: int
    expire_at: int
    iceberg_quantity: int
    stp: StpMode
    status: OrderStatus
    ts: int


class OrderTriggered(_Event):
    """A stop order's condition held: it is now a live MARKET or LIMIT order."""

    order_id: int
    user: int
    market: str
    last_price: int


class OrderUpdated(_Event):
    """An order's status changed (fills themselves are in :class:`Trade`), or self-trade
    prevention (``DECREMENT``) shrank a resting order: ``quantity`` is then the new one,
    the status unchanged and the reason ``SELF_TRADE_DECREMENTED``."""

    order_id: int
    user: int
    market: str
    status: OrderStatus
    filled: int
    quantity: int
    reason: str


class OrderAmended(_Event):
    order_id: int
    user: int
    market: str
    price: int
    quantity: int
    kept_priority: bool


class Trade(_Event):
    """One fill, at the maker's price; also the fill's four ledger legs (double entry).

    The buyer's locked ``quote`` pays ``quote_amount`` to the seller's available; the
    seller's locked ``base`` delivers ``base_amount`` (``quantity`` lots) to the buyer's
    available; each side then pays its fee, in the asset it received, from available to
    the fee account (``maker_fee`` / ``taker_fee``, already rounded up to the atom).
    :func:`mercato.core.ledger.postings` spells the legs out as :class:`Transfer` s.
    """

    trade_id: int
    market: str
    base: str
    quote: str
    price: int
    quantity: int
    base_amount: int
    quote_amount: int
    taker_side: Side
    maker_order_id: int
    taker_order_id: int
    maker_user: int
    taker_user: int
    maker_fee: int
    taker_fee: int
    ts: int


class Transfer(_Event):
    """``amount`` atoms of ``asset`` leave (debit) one account and reach (credit) another.

    Accounts are (kind, user) with kinds from :mod:`mercato.core.model` (AVAILABLE,
    LOCKED, FEES, EXTERNAL_DEPOSITS, EXTERNAL_WITHDRAWALS; user 0 for system accounts).
    ``reason`` says why (RESERVE, RELEASE, TRADE, FEE, DEPOSIT, WITHDRAWAL) and ``ref``
    is the order id, trade id or 0.
    """

    asset: str
    amount: int
    debit_kind: int
    debit_user: int
    credit_kind: int
    credit_user: int
    reason: int
    ref: int


class DepositCredited(_Event):
    user: int
    asset: str
    amount: int
    external_id: str


class WithdrawalHeld(_Event):
    withdrawal_id: str
    user: int
    asset: str
    amount: int
    fee: int


class WithdrawalSettled(_Event):
    withdrawal_id: str
    user: int
    asset: str
    amount: int
    fee: int


class WithdrawalReleased(_Event):
    withdrawal_id: str
    user: int
    asset: str
    amount: int


Event = (
    AssetUpserted
    | MarketUpserted
    | MarketStatusChanged
    | FeeTierSet
    | UserFeeTierSet
    | UserFrozen
    | KillSwitchSet
    | OrderAccepted
    | OrderTriggered
    | OrderUpdated
    | OrderAmended
    | Trade
    | Transfer
    | DepositCredited
    | WithdrawalHeld
    | WithdrawalSettled
    | WithdrawalReleased
)
