"""Planning a projection: the engine's events into the rows of the SQL tables, in memory.

The pure half of the projector (:mod:`mercato.store.projector`): a :class:`Planner`
keeps what the tables hold that later events change (open orders as
:class:`~mercato.core.order_state.OrderState`, the current candles, the running
balances and positions of the users it has loaded) and folds a group of commands into a
:class:`Plan`: rows to insert, update and upsert. No I/O: the state is loaded and the
rows written by :mod:`mercato.store.projector_sql`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from mercato.core.candles import INTERVALS, Candle, fold
from mercato.core.events import (
    DepositCredited,
    OrderAccepted,
    OrderAmended,
    OrderTriggered,
    OrderUpdated,
    Trade,
)
from mercato.core.ledger import postings
from mercato.core.model import ACCOUNT_NAMES, LOCKED, REASON_NAMES, TERMINAL_STATUSES
from mercato.core.order_state import OrderState, accepted, amended, filled, triggered, updated
from mercato.core.positions import Position
from mercato.port import AppliedBatch
from mercato.store.order_rows import insert_row, update_row

_TERMINAL: Final = frozenset(TERMINAL_STATUSES)
_USER_ACCOUNTS: Final = frozenset(ACCOUNT_NAMES[: LOCKED + 1])  # available, locked

BalanceKey = tuple[int, str, str]  # (user, asset, account name)


class ProjectionError(RuntimeError):
    """The event stream cannot be projected (a gap the journal cannot fill, an event for an
    order the projection does not know). Fatal: the projector stops; the tables stay as of
    the last committed cursor."""


@dataclasses.dataclass(slots=True)
class Plan:
    """The rows of a group of commands, built once and written (retried) until committed."""

    prev_seq: int
    last_seq: int = 0
    last_ts: int = 0
    commands: int = 0
    attempts: int = 0
    order_inserts: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    order_updates: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    trades: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    fills: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    entries: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    # Every balance change in stream order, (account, delta, reason, ref, seq, ts): the
    # ledger entries (user accounts) and the system totals, made in Planner.finish.
    changes: list[tuple[BalanceKey, int, str, int, int, int]] = dataclasses.field(
        default_factory=list
    )
    users: set[int] = dataclasses.field(default_factory=set)
    balances: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    positions: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    candles: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    # Every credit the engine accepted, (external_id, user, asset, amount, seq, ts): the
    # custody watcher's authority on "was this deposit credited" (docs/custody.md).
    deposit_credits: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> int:
        return (
            len(self.order_inserts)
            + len(self.order_updates)
            + len(self.trades)
            + len(self.fills)
            + len(self.entries)
            + len(self.balances)
            + len(self.positions)
            + len(self.candles)
            + len(self.deposit_credits)
        )


def _candle_row(candle: Candle) -> tuple[Any, ...]:
    """A candle in the order of the ``candles`` columns."""
    return (
        candle.market,
        candle.interval,
        candle.open_time,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        str(candle.volume),
        str(candle.quote_volume),
        candle.trades,
        candle.first_trade_id,
        candle.last_trade_id,
    )


class Planner:
    """The projection's in-memory state and the fold of events into rows. The projector
    seeds it from the tables (open orders and candles at start, balances and positions
    of each user the first time a plan names them) and plans every group with it."""

    def __init__(self) -> None:
        self.open_orders: dict[int, OrderState] = {}  # folded by core.order_state
        self.candles: dict[tuple[str, str], Candle] = {}  # current candle per (market, iv)
        self.balances: dict[BalanceKey, int] = {}  # accounts of loaded users
        self.positions: dict[tuple[int, str], Position] = {}  # (user, market), loaded users
        self.loaded_users: set[int] = set()

    def plan(self, items: Sequence[tuple[AppliedBatch, int]], prev_seq: int) -> Plan:
        """Fold the commands of ``items`` (after ``prev_seq``, the cursor) into rows.
        Updates the open orders and current candles in memory: a plan is built once and
        written until it commits."""
        plan = Plan(prev_seq=prev_seq)
        open_orders = self.open_orders
        inserted: dict[int, OrderState] = {}
        changed: dict[int, OrderState] = {}
        touched_candles: dict[tuple[str, str, int], Candle] = {}
        current_candles = self.candles
        intervals = tuple(INTERVALS)
        changes = plan.changes
        users = plan.users
        trade_rows = plan.trades
        fill_rows = plan.fills
        credit_rows = plan.deposit_credits

        def touch(order_id: int, seq: int) -> OrderState:
            """The open order an event changes (it is to be written)."""
            state = open_orders.get(order_id)
            if state is None:
                raise ProjectionError(
                    f"seq {seq}: an event for order {order_id}, which the projection "
                    "neither holds open nor saw accepted"
                )
            if order_id not in inserted:
                changed[order_id] = state
            return state

        for batch, start in items:
            ts = batch.ts
            seq = batch.seq0 + start - 1
            for result in batch.results[start:]:
                seq += 1
                # Every result counts, REJECTED ones too: GTD expiries lead their events.
                for event in result.events:
                    kind = type(event)
                    if kind is OrderAccepted:
                        state = accepted(cast(OrderAccepted, event), seq, ts)
                        open_orders[state.order_id] = state
                        inserted[state.order_id] = state
                        continue
                    legs = postings(event)
                    if legs:
                        for leg in legs:
                            asset, amount = leg.asset, leg.amount
                            reason, ref = REASON_NAMES[leg.reason], leg.ref
                            user = leg.debit_user
                            users.add(user)
                            key = (user, asset, ACCOUNT_NAMES[leg.debit_kind])
                            changes.append((key, -amount, reason, ref, seq, ts))
                            user = leg.credit_user
                            users.add(user)
                            key = (user, asset, ACCOUNT_NAMES[leg.credit_kind])
                            changes.append((key, amount, reason, ref, seq, ts))
                    if kind is Trade:
                        event = cast(Trade, event)
                        self._trade(event, seq, ts, touch, trade_rows, fill_rows)
                        for interval in intervals:
                            series = (event.market, interval)
                            candle = fold(current_candles.get(series), event, interval)
                            current_candles[series] = candle
                            touched_candles[(event.market, interval, candle.open_time)] = candle
                    elif kind is OrderUpdated:
                        event = cast(OrderUpdated, event)
                        updated(touch(event.order_id, seq), event, seq, ts)
                    elif kind is OrderAmended:
                        event = cast(OrderAmended, event)
                        amended(touch(event.order_id, seq), event, seq, ts)
                    elif kind is OrderTriggered:
                        # A stop's condition held: a live MARKET or LIMIT order now.
                        event = cast(OrderTriggered, event)
                        triggered(touch(event.order_id, seq), event, seq, ts)
                    elif kind is DepositCredited:
                        event = cast(DepositCredited, event)
                        credit_rows.append(  # in the order of the deposit_credits columns
                            (event.external_id, event.user, event.asset, event.amount, seq, ts)
                        )
            plan.last_seq = batch.last_seq
            plan.last_ts = ts
            plan.commands += len(batch.commands) - start

        plan.order_inserts = [insert_row(state) for state in inserted.values()]
        plan.order_updates = [update_row(state) for state in changed.values()]
        for order_id, state in itertools.chain(inserted.items(), changed.items()):
            if state.status in _TERMINAL:
                del open_orders[order_id]  # a finished order never changes again
        plan.candles = [_candle_row(candle) for candle in touched_candles.values()]
        return plan

    @staticmethod
    def _trade(
        event: Trade,
        seq: int,
        ts: int,
        touch: Callable[[int, int], OrderState],
        trade_rows: list[tuple[Any, ...]],
        fill_rows: list[tuple[Any, ...]],
    ) -> None:
        taker_buys = event.taker_side == "BUY"
        maker_side = "SELL" if taker_buys else "BUY"
        # Each side pays its fee in the asset it receives: the buyer base, the seller quote.
        taker_fee_asset = event.base if taker_buys else event.quote
        maker_fee_asset = event.quote if taker_buys else event.base
        trade_rows.append(  # in the order of TRADE_COLUMNS
            (event.trade_id, event.market, event.price, event.quantity, event.base_amount,
             event.quote_amount, event.taker_side, event.maker_order_id, event.taker_order_id,
             event.ts, seq)
        )  # fmt: skip
        for role, user, order_id, side, fee, fee_asset in (
            ("MAKER", event.maker_user, event.maker_order_id, maker_side, event.maker_fee,
             maker_fee_asset),
            ("TAKER", event.taker_user, event.taker_order_id, event.taker_side, event.taker_fee,
             taker_fee_asset),
        ):  # fmt: skip
            fill_rows.append(  # in the order of FILL_COLUMNS
                (user, event.trade_id, order_id, event.market, side, role, event.price,
                 event.quantity, event.base_amount, event.quote_amount, fee, fee_asset, event.ts,
                 seq)
            )  # fmt: skip
            filled(touch(order_id, seq), event, seq, ts)

    def finish(self, plan: Plan) -> None:
        """Running balances (the plan's users are loaded): ``balance_after`` of every entry
        and the new balance of every account touched."""
        balances = self.balances
        touched: dict[BalanceKey, tuple[int, int]] = {}
        entries = plan.entries
        for key, delta, reason, ref, seq, ts in plan.changes:
            balance = balances.get(key, 0) + delta
            balances[key] = balance
            touched[key] = (balance, seq)
            user, asset, account = key
            if account in _USER_ACCOUNTS:  # fees and external accounts: totals only
                entries.append((user, asset, account, delta, balance, reason, ref, seq, ts))
        plan.balances = [(u, a, k, b, s) for (u, a, k), (b, s) in touched.items()]
        plan.changes = []
        plan.positions = self._fold_positions(plan.fills)

    def _fold_positions(self, fill_rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Fold the plan's fills (their users are loaded) into the users' positions."""
        held = self.positions
        touched: dict[tuple[int, str], int] = {}
        for user, _, _, market, side, _, _, _, base, quote, fee, _, _, seq in fill_rows:
            key = (user, market)
            position = held.get(key)
            if position is None:
                position = held[key] = Position()
            position.add(side, base, quote, fee)
            touched[key] = seq
        rows = []
        for (user, market), seq in touched.items():
            position = held[(user, market)]
            cost, realised = str(position.cost), str(position.realised)
            rows.append((user, market, position.quantity, cost, realised, seq))
        return rows
