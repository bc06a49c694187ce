"""Binance's user data stream: every change of a subscribed user's orders and balances as
Binance's events (:mod:`mercato.wire.binance_events`), from the durable batches.

A listener of the port like :class:`~mercato.marketdata.feed.MarketData`, called on the
event loop after each applied batch. Per batch and per user it queues, in the order of
the engine's events, an ``executionReport`` per order change (NEW, one TRADE per fill,
CANCELED, EXPIRED, REPLACED, TRADE_PREVENTION) and a ``balanceUpdate`` per deposit or
withdrawal, then one ``outboundAccountPosition`` with every asset the batch changed for
that user: nothing is merged away, however many changes one batch carries.

Orders are folded with :mod:`mercato.core.order_state`, the one reducer, over copies of
the open orders' states (seeded from the ``OrderStates`` read model when a user's first
subscription starts), so each report shows the order as that event left it. Delivery is
the hub's queue of each connection (bounded: a slow consumer is closed); the WebSocket
API's writer sends one event per frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from mercato.core.events import (
    AssetUpserted,
    MarketUpserted,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
    Transfer,
)
from mercato.core.model import DEPOSIT, LOCKED, TERMINAL_STATUSES, WITHDRAWAL
from mercato.core.order_state import OrderState, accepted, amended, filled, triggered, updated
from mercato.marketdata.hub import Client, Hub
from mercato.port import AppliedBatch, ExchangeView
from mercato.wire import binance_events as events
from mercato.wire.decimals import MarketFormat

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode

#: An order's final status -> Binance's execution type of that change.
_EXECUTION_OF = {"CANCELED": "CANCELED", "EXPIRED": "EXPIRED", "REJECTED": "REJECTED",
                 "EXPIRED_IN_MATCH": "TRADE_PREVENTION"}  # fmt: skip


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Subscription:
    """One user data stream subscription of one WebSocket API connection."""

    __slots__ = ("client", "on_end", "session", "subscription_id", "user")

    def __init__(self, client: Client, user: int, subscription_id: int, session: str,
                 on_end: Callable[[Subscription], None] | None = None) -> None:  # fmt: skip
        self.client = client
        self.user = user
        self.subscription_id = subscription_id
        self.session = session  # the credential it was signed with ("apikey:<id>")
        self.on_end = on_end  # told when the stream ends it (its connection forgets it)


class _Batch:
    """What one batch has for each subscribed user: events in order, assets touched."""

    def __init__(self) -> None:
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.assets: dict[int, set[str]] = {}

    def add(self, user: int, event: dict[str, Any]) -> None:
        self.events.setdefault(user, []).append(event)

    def touch(self, user: int, asset: str) -> None:
        self.assets.setdefault(user, set()).add(asset)


class UserDataStreams:
    """The subscriptions and the fold behind them. ``state_of`` reads an open order's
    folded state (the ``OrderStates`` read model)."""

    def __init__(self, view: ExchangeView, hub: Hub,
                 state_of: Callable[[int], OrderState | None]) -> None:  # fmt: skip
        self.view = view
        self.hub = hub
        self.state_of = state_of
        self.by_user: dict[int, list[Subscription]] = {}
        self.orders: dict[int, OrderState] = {}  # followed users' open orders, as reported
        self._formats: dict[str, MarketFormat] = {}

    # -- subscriptions ------------------------------------------------------------------

    def add(self, subscription: Subscription) -> None:
        user = subscription.user
        if user not in self.by_user:
            self.by_user[user] = []
            for order in self.view.open_orders(user):
                state = self.state_of(order.order_id)
                if state is not None:
                    self.orders[order.order_id] = msgspec.structs.replace(state)
        self.by_user[user].append(subscription)

    def remove(self, subscription: Subscription) -> None:
        subscriptions = self.by_user.get(subscription.user)
        if subscriptions is None or subscription not in subscriptions:
            return
        subscriptions.remove(subscription)
        if not subscriptions:
            del self.by_user[subscription.user]
            for order_id in [i for i, s in self.orders.items() if s.user == subscription.user]:
                del self.orders[order_id]

    def terminate(self, subscription: Subscription) -> None:
        """End a subscription, telling its connection (``eventStreamTerminated``)."""
        self.remove(subscription)
        if subscription.on_end is not None:
            subscription.on_end(subscription)
        event = _encode(events.stream_terminated(_now_ms())).decode()
        self.hub.send(subscription.client,
                      events.in_envelope(subscription.subscription_id, event))  # fmt: skip

    def subscriptions(self) -> list[Subscription]:
        return [s for subscriptions in self.by_user.values() for s in subscriptions]

    # -- the listener -----------------------------------------------------------------------

    def on_batch(self, batch: AppliedBatch) -> None:
        if not self.by_user:
            return
        found = _Batch()
        seq = batch.seq0 - 1
        for result in batch.results:
            seq += 1
            self._command(result.events, seq, batch.ts, found)
        self._publish(found, batch.ts)

    def _command(self, command_events: Any, seq: int, ts: int, found: _Batch) -> None:
        users = self.by_user
        last_trade: dict[int, dict[str, Any]] = {}  # order id -> its last TRADE report
        execution = seq << 20
        for event in command_events:
            kind = type(event)
            if kind is Trade:
                for order_id, user in ((event.maker_order_id, event.maker_user),
                                       (event.taker_order_id, event.taker_user)):  # fmt: skip
                    if user in users:
                        found.touch(user, event.base)
                        found.touch(user, event.quote)
                        state = self._state(order_id)
                        if state is not None:
                            filled(state, event, seq, ts)
                            execution += 1
                            report = self._report(state, "TRADE", ts, execution, event)
                            status = events.status_after_fill(state)
                            report["X"] = status
                            report["w"] = events.working(state, status)
                            last_trade[order_id] = report
                            found.add(user, report)
            elif kind is Transfer:
                self._transfer(event, found)
            elif kind in _ORDER_EVENTS and event.user in users:
                state = self._order_event(event, seq, ts)
                if state is None:
                    continue
                change = self._execution(event, state, last_trade)
                if change is not None:
                    execution += 1
                    found.add(event.user, self._report(state, change, ts, execution))
                if state.status in TERMINAL_STATUSES:
                    self.orders.pop(state.order_id, None)
            elif kind is MarketUpserted or kind is AssetUpserted:
                self._formats.clear()

    def _order_event(self, event: Any, seq: int, ts: int) -> OrderState | None:
        """Fold an order event into the order's state (a new one for OrderAccepted)."""
        if type(event) is OrderAccepted:
            new = self.orders[event.order_id] = accepted(event, seq, ts)
            return new
        state = self._state(event.order_id)
        if state is None:
            return None
        if type(event) is OrderUpdated:
            return updated(state, event, seq, ts)
        if type(event) is OrderAmended:
            return amended(state, event, seq, ts)
        return triggered(state, event, seq, ts)

    @staticmethod
    def _execution(event: Any, state: OrderState,
                   last_trade: dict[int, dict[str, Any]]) -> str | None:  # fmt: skip
        """Binance's execution type of an order event, or None when the event only
        confirms what the fill's TRADE report already said (its status)."""
        kind = type(event)
        if kind is OrderAccepted or kind is OrderTriggered:
            return "NEW"
        if kind is OrderAmended:
            return "REPLACED"
        if event.reason == "SELF_TRADE_DECREMENTED":
            return "TRADE_PREVENTION"
        if event.status in ("PARTIALLY_FILLED", "FILLED"):
            trade = last_trade.get(state.order_id)
            if trade is not None:
                trade["X"] = event.status
                trade["w"] = events.working(state, event.status)
            return None
        return _EXECUTION_OF.get(event.status, "EXPIRED")

    def _transfer(self, transfer: Transfer, found: _Batch) -> None:
        users = self.by_user
        now = _now_ms()
        for user, account, sign in ((transfer.debit_user, transfer.debit_kind, "-"),
                                    (transfer.credit_user, transfer.credit_kind, "")):  # fmt: skip
            if user not in users or account > LOCKED:
                continue
            found.touch(user, transfer.asset)
            external = (transfer.reason == DEPOSIT and sign == "") or (
                transfer.reason == WITHDRAWAL and sign == "-"
            )
            if external:
                delta = -transfer.amount if sign else transfer.amount
                decimals = self._decimals(transfer.asset)
                found.add(user, events.balance_update(now, transfer.asset, delta, decimals, now))

    def _publish(self, found: _Batch, ts: int) -> None:
        now = _now_ms()
        balance = self.view.balance
        for user in sorted(found.events.keys() | found.assets.keys()):
            subscriptions = self.by_user.get(user)
            if not subscriptions:
                continue
            texts = [_encode(e).decode() for e in found.events.get(user, ())]
            assets = sorted(found.assets.get(user, ()))
            if assets:
                rows = []
                for asset in assets:
                    free, locked = balance(user, asset)
                    rows.append((asset, free, locked, self._decimals(asset)))
                texts.append(_encode(events.account_position(now, ts, rows)).decode())
            for subscription in list(subscriptions):
                client, subscription_id = subscription.client, subscription.subscription_id
                for text in texts:
                    self.hub.send(client, events.in_envelope(subscription_id, text))

    # -- helpers --------------------------------------------------------------------------

    def _state(self, order_id: int) -> OrderState | None:
        state = self.orders.get(order_id)
        if state is None:  # not seen yet (should not happen): start from the read model
            known = self.state_of(order_id)
            if known is None:
                return None
            state = self.orders[order_id] = msgspec.structs.replace(known)
        return state

    def _report(self, state: OrderState, execution: str, ts: int, execution_id: int,
                trade: Trade | None = None) -> dict[str, Any]:  # fmt: skip
        return events.execution_report(
            self._format(state.market), state, execution, event_time=_now_ms(),
            transact_time=ts, execution_id=execution_id, trade=trade,
        )  # fmt: skip

    def _format(self, market: str) -> MarketFormat:
        fmt = self._formats.get(market)
        if fmt is None:
            spec, rules = self.view.spec(market), self.view.rules(market)
            assert spec is not None and rules is not None, f"no market {market}"
            decimals = {s: a.decimals for s, a in self.view.assets().items()}
            fmt = self._formats[market] = MarketFormat.of(spec, rules, decimals)
        return fmt

    def _decimals(self, asset: str) -> int:
        return self.view.assets()[asset].decimals


_ORDER_EVENTS = frozenset({OrderAccepted, OrderUpdated, OrderAmended, OrderTriggered})
