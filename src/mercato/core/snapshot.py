"""Canonical engine state: the snapshot format and the input of the state hash.

The canonical form lists every piece of state that defines the engine's future
behaviour, in a fixed order, and nothing derived (indexes, heaps, dead queue
entries, zero balances). Two engines with equal canonical states behave the same.
"""

from __future__ import annotations

import hashlib
from heapq import heappush
from typing import Any, TypeVar

import msgspec

from mercato.core.book import BookSide, MarketState, Order
from mercato.core.matching import add_stop
from mercato.core.model import Asset, MarketRules, MarketSpec
from mercato.core.state import EngineState, IdWindow

S = TypeVar("S", bound=EngineState)

# 2: deposit ids and finished withdrawals as (id, forget_at) windows, held withdrawals
# with their issued_at. An older snapshot is refused, so recovery replays the journal.
STATE_VERSION = 2


def _side_state(side: BookSide) -> list[Any]:
    return [
        side.queued,
        [
            [price, [o.order_id for o in side.live_orders(price)]]
            for price in side.prices_best_first()
        ],
    ]


def _nonzero(values: dict[str, int]) -> list[list[Any]]:
    return [[k, v] for k, v in sorted(values.items()) if v]


def _window_state(window: IdWindow, now: int) -> list[list[Any]]:
    return [[key, forget_at] for key, forget_at in window.live(now)]


def _restore_window(entries: list[list[Any]]) -> IdWindow:
    window = IdWindow()
    for key, forget_at in entries:
        window.remember(key, forget_at)
    return window


def canonical_state(engine: EngineState) -> dict[str, Any]:
    """Everything that defines the engine, in a canonical order (no derived indexes)."""
    return {
        "version": STATE_VERSION,
        "last_seq": engine.last_seq,
        "last_ts": engine.last_ts,
        "next_order_id": engine.next_order_id,
        "next_trade_id": engine.next_trade_id,
        "kill_switch": engine.kill_switch,
        "assets": [[a.symbol, a.decimals] for _, a in sorted(engine.assets.items())],
        "markets": [
            [m.spec, m.last_price, _side_state(m.bids), _side_state(m.asks)]
            for _, m in sorted(engine.markets.items())
        ],
        "orders": [engine.orders[oid].as_list() for oid in sorted(engine.orders)],
        "balances": [
            [user, asset, account[0], account[1]]
            for user in sorted(engine.balances)
            for asset, account in sorted(engine.balances[user].items())
            if account[0] or account[1]
        ],
        "fees": _nonzero(engine.fees),
        "external_deposits": _nonzero(engine.external_deposits),
        "external_withdrawals": _nonzero(engine.external_withdrawals),
        "fee_tiers": [[t, m, k] for t, (m, k) in sorted(engine.fee_tiers.items())],
        "user_tiers": sorted([u, t] for u, t in engine.user_tiers.items()),
        "frozen": sorted(engine.frozen),
        # Only the ids still remembered at the engine's clock: an expired one that no
        # command has pruned yet behaves as forgotten already (handlers_funding).
        "deposit_ids": _window_state(engine.deposit_ids, engine.last_ts),
        "withdrawals": [[w, *held] for w, held in sorted(engine.withdrawals.items())],
        "finished_withdrawals": _window_state(engine.finished_withdrawals, engine.last_ts),
    }


def snapshot(engine: EngineState) -> bytes:
    """The canonical state, encoded: what a snapshot file holds."""
    return msgspec.msgpack.encode(canonical_state(engine))


def state_hash(engine: EngineState) -> str:
    """SHA-256 over the canonical state: equal hashes, equal engines."""
    return hashlib.sha256(snapshot(engine)).hexdigest()


def restore_into(engine: S, data: bytes) -> S:
    """Fill a fresh ``engine`` from a snapshot; returns it."""
    return restore_state(engine, msgspec.msgpack.decode(data))


def restore_state(engine: S, state: dict[str, Any]) -> S:
    """Fill a fresh ``engine`` from a decoded canonical state."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"snapshot version {state.get('version')} is not {STATE_VERSION}")
    engine.last_seq = state["last_seq"]
    engine.last_ts = state["last_ts"]
    engine.next_order_id = state["next_order_id"]
    engine.next_trade_id = state["next_trade_id"]
    engine.kill_switch = state["kill_switch"]
    engine.assets = {s: Asset(s, d) for s, d in state["assets"]}
    orders = {o.order_id: o for o in (Order(*values) for values in state["orders"])}
    engine.orders = orders
    engine.client_ids = {
        (o.user, o.client_order_id): o.order_id for o in orders.values() if o.client_order_id
    }
    for order in orders.values():
        if order.time_in_force == "GTD":
            heappush(engine.gtd, (order.expire_at, order.order_id))
    for raw_spec, last_price, bids, asks in state["markets"]:
        spec = msgspec.convert(raw_spec, MarketSpec)
        rules = MarketRules.derive(spec, engine.assets[spec.base], engine.assets[spec.quote])
        market = MarketState(spec, rules)
        market.last_price = last_price
        for side, (counter, levels) in ((market.bids, bids), (market.asks, asks)):
            for _price, ids in levels:
                for oid in ids:
                    order = orders[oid]
                    queued = order.queued
                    side.add(order)
                    order.queued = queued  # keep the original queue positions
            side.queued = counter
        engine.markets[spec.symbol] = market
    for order in orders.values():
        if order.status == "UNTRIGGERED":
            add_stop(engine.markets[order.market], order)
    for user, asset, available, locked in state["balances"]:
        engine.balances.setdefault(user, {})[asset] = [available, locked]
    engine.fees = dict(state["fees"])
    engine.external_deposits = dict(state["external_deposits"])
    engine.external_withdrawals = dict(state["external_withdrawals"])
    engine.fee_tiers = {t: (m, k) for t, m, k in state["fee_tiers"]}
    engine.user_tiers = dict(state["user_tiers"])
    engine.frozen = set(state["frozen"])
    engine.deposit_ids = _restore_window(state["deposit_ids"])
    engine.withdrawals = {
        w: (u, a, amount, fee, issued) for w, u, a, amount, fee, issued in state["withdrawals"]
    }
    engine.finished_withdrawals = _restore_window(state["finished_withdrawals"])
    return engine
