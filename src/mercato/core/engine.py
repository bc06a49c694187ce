"""The deterministic exchange engine: its state and the one entry point, ``apply``.

``Engine.apply(seq, ts, command)`` is the only way to change state. It reads no clock,
does no I/O and draws no random numbers: time and sequence come with the command, so
the same command stream always yields the same events and the same ``state_hash()``.
A command is validated completely before anything changes; a failed check raises
:class:`Rejection`, which becomes a REJECTED result with nothing applied.

The state and the queries are :class:`~mercato.core.state.EngineState`'s; the command
handlers live by family in ``handlers_trading``, ``handlers_funding`` and
``handlers_admin``, the book walk in ``matching``, balances in ``accounts``, the
canonical state in ``snapshot``: all functions over the state, so none imports this
module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core import handlers_admin as admin
from mercato.core import handlers_funding as funding
from mercato.core import handlers_trading as trading
from mercato.core.commands import CancelOrder, PlaceOrder
from mercato.core.handlers_trading import cancel, expire_due, place
from mercato.core.invariants import check_engine
from mercato.core.model import MAX_ICEBERG_PARTS, MAX_PRICE_TICKS, MAX_SUPPLY
from mercato.core.results import Rejection, Result
from mercato.core.snapshot import canonical_state as _canonical_state
from mercato.core.snapshot import restore_into
from mercato.core.snapshot import snapshot as _snapshot
from mercato.core.snapshot import state_hash as _state_hash
from mercato.core.state import EngineState

# Limits that adapters and tests read from here, as before the split.
__all__ = ["MAX_ICEBERG_PARTS", "MAX_PRICE_TICKS", "MAX_SUPPLY", "Engine"]

Handler = Callable[[EngineState, int, int, Any, list[e.Event]], Result]

# Every command but the two of almost every flow, which ``apply`` calls directly.
HANDLERS: dict[type, Handler] = {
    c.CancelAll: trading.cancel_all,
    c.AmendOrder: trading.amend,
    c.Tick: trading.tick,
    c.CreditDeposit: funding.deposit,
    c.HoldWithdrawal: funding.hold_withdrawal,
    c.SettleWithdrawal: funding.settle_withdrawal,
    c.ReleaseWithdrawal: funding.release_withdrawal,
    c.UpsertAsset: admin.upsert_asset,
    c.UpsertMarket: admin.upsert_market,
    c.SetMarketStatus: admin.set_market_status,
    c.SetFeeTier: admin.set_fee_tier,
    c.SetUserFeeTier: admin.set_user_fee_tier,
    c.FreezeUser: admin.freeze,
    c.UnfreezeUser: admin.unfreeze,
    c.SetKillSwitch: admin.set_kill_switch,
}


class Engine(EngineState):
    """One single-threaded state machine for all markets and balances."""

    def apply(self, seq: int, ts: int, command: c.Command) -> Result:
        """Apply one sequenced command. Never raises for bad input: it rejects.

        GTD orders whose time has come expire first, whatever the command; their events
        lead the result's events even when the command itself is rejected.
        """
        self.last_seq = seq
        if ts > self.last_ts:
            self.last_ts = ts
        events: list[e.Event] = []
        gtd = self.gtd
        if gtd and gtd[0][0] <= ts:
            expire_due(self, ts, events)
        try:
            # The two commands of almost every flow go straight to their handlers.
            if type(command) is PlaceOrder:
                return place(self, seq, ts, command, events)
            if type(command) is CancelOrder:
                return cancel(self, seq, ts, command, events)
        except Rejection as rejection:
            return Result(seq, "REJECTED", events, rejection.code, rejection.message)
        handler = HANDLERS.get(type(command))
        if handler is None:
            return Result(
                seq, "REJECTED", events, "UNKNOWN_COMMAND", f"{command!r} is not a command"
            )
        try:
            return handler(self, seq, ts, command, events)
        except Rejection as rejection:
            return Result(seq, "REJECTED", events, rejection.code, rejection.message)

    # Thin methods over core's functions, for the callers outside core (journal, CLI,
    # benchmarks, tests) that hold an engine.

    def check_invariants(self) -> None:
        """Raise AssertionError if any ledger or book invariant is broken."""
        check_engine(self)

    def canonical_state(self) -> dict[str, Any]:
        """Everything that defines the engine, in a canonical order (no derived indexes)."""
        return _canonical_state(self)

    def snapshot(self) -> bytes:
        return _snapshot(self)

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        return restore_into(cls(), data)

    def state_hash(self) -> str:
        """SHA-256 over the canonical state: equal hashes, equal engines."""
        return _state_hash(self)
