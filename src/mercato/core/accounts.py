"""Balances and reservations: which account an order locks, how much, and giving it back.

An account is ``[available, locked]`` atoms of one asset for one user. An open order
reserves quote (buys) or base (sells) from available into locked; every move between
the two is a :class:`Transfer` event.
"""

from __future__ import annotations

from mercato.core import events as e
from mercato.core.book import MarketState, Order
from mercato.core.events import Transfer
from mercato.core.model import AVAILABLE, LOCKED, RELEASE
from mercato.core.state import EngineState


def account(state: EngineState, user: int, asset: str) -> list[int]:
    """The user's account of ``asset``, created empty if it does not exist."""
    try:
        return state.balances[user][asset]
    except KeyError:
        return state.balances.setdefault(user, {}).setdefault(asset, [0, 0])


def reserve_asset(market: MarketState, side: str) -> str:
    return market.quote if side == "BUY" else market.base


def required_reserve(market: MarketState, order: Order, lots: int) -> int:
    """What a resting limit order must lock for ``lots`` unfilled lots."""
    if order.side == "BUY":
        return order.price * lots * market.notional_unit
    return lots * market.lot_atoms


def release(
    state: EngineState, market: MarketState, order: Order, amount: int, events: list[e.Event]
) -> None:
    """Move ``amount`` of the order's reservation back to available."""
    if amount <= 0:
        return
    asset = market.quote if order.side == "BUY" else market.base
    held = state.balances[order.user][asset]  # exists: it holds the reservation
    held[0] += amount
    held[1] -= amount
    order.reserved -= amount
    events.append(
        Transfer(asset, amount, LOCKED, order.user, AVAILABLE, order.user, RELEASE, order.order_id)
    )


def protection_limit(market: MarketState, side: str, reference: int) -> int:
    """The worst price a market order may trade at, from ``reference`` (ticks)."""
    bps = market.protection_bps
    if side == "BUY":
        return reference * (10_000 + bps) // 10_000
    return -(-reference * (10_000 - bps) // 10_000)


def market_buy_reserve(state: EngineState, market: MarketState, order: Order) -> int:
    """What a market buy locks: its quote amount, or its quantity at the worst price
    the protection band allows (capped at what the user has, which placement checked
    covers the fill against the book; a stop reserves it in full at the band above its
    stop price, as the book at trigger time is unknown)."""
    if order.quote_quantity:
        return order.quote_quantity
    unit = market.notional_unit
    if order.type != "MARKET":
        return protection_limit(market, "BUY", order.stop_price) * order.quantity * unit
    best = market.asks.best()
    if not best:
        return 0  # nothing to buy: the order expires unfilled
    worst = protection_limit(market, "BUY", best) * order.quantity * unit
    return min(worst, account(state, order.user, market.quote)[0])
