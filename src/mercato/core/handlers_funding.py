"""Funding commands: deposits credited, and withdrawals held, settled or released.

A withdrawal is held (its amount locked) while custody sends it; settling pays it out
to the external withdrawals account (its fee to the fee account), releasing returns it.

Exactly once, in bounded memory: a credited deposit id (a finished withdrawal id) is
remembered until its command's ``issued_at`` + ``DEPOSIT_ID_WINDOW_MS``, and a command
whose ``issued_at`` is further than the window from the engine's clock is refused
(``STALE_DEPOSIT``, ``STALE_WITHDRAWAL``). So every command the engine would accept is
one whose id it still remembers if it was applied before: a repeat inside the window is
a ``DUPLICATE`` (``DUPLICATE_WITHDRAWAL``), a replay after it is stale. Beyond the window
the store is the authority (docs/custody.md, "Exactly-once credits").
"""

from __future__ import annotations

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core.accounts import account
from mercato.core.events import Transfer
from mercato.core.messages import amount_text, time_text, window_text
from mercato.core.model import (
    AVAILABLE,
    DEPOSIT,
    DEPOSIT_ID_WINDOW_MS,
    EXTERNAL_DEPOSITS,
    EXTERNAL_WITHDRAWALS,
    FEE,
    FEES,
    LOCKED,
    MAX_SUPPLY,
    RELEASE,
    RESERVE,
    WITHDRAWAL,
)
from mercato.core.results import Rejection, Result
from mercato.core.state import EngineState, known_asset


def engine_clock(state: EngineState, ts: int) -> int:
    """The latest timestamp the engine has applied, ``ts`` included. The windows follow
    it rather than the command's own ``ts``: were the sequencer's clock to step back,
    an id forgotten at the later time must not come back to life as creditable."""
    return ts if ts > state.last_ts else state.last_ts


def check_issued(issued: int, now: int, code: str, what: str, fix: str) -> None:
    """Refuse a command issued outside the window around the engine's clock ``now``:
    too old, its id may have been forgotten since; too far ahead, it would stay valid
    longer than the engine remembers ids (and grow the window without bound)."""
    if now > issued + DEPOSIT_ID_WINDOW_MS:
        raise Rejection(
            code,
            f"{what} was issued at {time_text(issued)}, more than {window_text()} before "
            f"the engine's clock ({time_text(now)}): {fix}",
        )
    if issued > now + DEPOSIT_ID_WINDOW_MS:
        raise Rejection(
            code,
            f"{what} is issued at {time_text(issued)}, more than {window_text()} after the "
            f"engine's clock ({time_text(now)}): issued_at is in milliseconds since the "
            "epoch; fix the submitter's clock",
        )


def deposit(
    state: EngineState, seq: int, ts: int, cmd: c.CreditDeposit, events: list[e.Event]
) -> Result:
    now = engine_clock(state, ts)
    # Forget first: an expired id must answer as forgotten (then the command is stale
    # or freshly issued), never as a duplicate, or replays would depend on pruning.
    state.deposit_ids.forget_expired(now)
    known_asset(state, cmd.asset)
    if cmd.amount <= 0:
        raise Rejection("INVALID_AMOUNT", "deposit amount must be positive")
    if not cmd.external_id:
        raise Rejection("INVALID_DEPOSIT", "a deposit needs its external_id")
    if cmd.external_id in state.deposit_ids:
        return Result(seq, "DUPLICATE", events, "DUPLICATE_DEPOSIT", "already credited")
    issued = cmd.issued_at or ts
    check_issued(
        issued,
        now,
        "STALE_DEPOSIT",
        f"deposit {cmd.external_id!r}",
        "the engine may have forgotten whether it credited it; credit it again only if "
        "the store has no credit for it, with issued_at set to now",
    )
    if cmd.amount - state.external_deposits.get(cmd.asset, 0) > MAX_SUPPLY:
        most = amount_text(state, MAX_SUPPLY, cmd.asset)
        raise Rejection("SUPPLY_LIMIT", f"total {cmd.asset} deposits would exceed {most}")
    state.deposit_ids.remember(cmd.external_id, issued + DEPOSIT_ID_WINDOW_MS)
    account(state, cmd.user, cmd.asset)[0] += cmd.amount
    state.external_deposits[cmd.asset] = state.external_deposits.get(cmd.asset, 0) - cmd.amount
    events.append(e.DepositCredited(cmd.user, cmd.asset, cmd.amount, cmd.external_id))
    events.append(
        Transfer(cmd.asset, cmd.amount, EXTERNAL_DEPOSITS, 0, AVAILABLE, cmd.user, DEPOSIT, 0)
    )
    return Result(seq, "ACCEPTED", events)


def hold_withdrawal(
    state: EngineState, seq: int, ts: int, cmd: c.HoldWithdrawal, events: list[e.Event]
) -> Result:
    now = engine_clock(state, ts)
    state.finished_withdrawals.forget_expired(now)  # first, as for deposits
    known_asset(state, cmd.asset)
    wid = cmd.withdrawal_id
    if not wid:
        raise Rejection("INVALID_WITHDRAWAL", "a withdrawal needs its withdrawal_id")
    if wid in state.withdrawals or wid in state.finished_withdrawals:
        raise Rejection("DUPLICATE_WITHDRAWAL", f"withdrawal {wid!r} exists already")
    issued = cmd.issued_at or ts
    check_issued(
        issued,
        now,
        "STALE_WITHDRAWAL",
        f"withdrawal {wid!r}",
        "the engine may have forgotten whether it held it; hold it again only if the "
        "store shows it never held, with issued_at set to now",
    )
    if cmd.amount <= 0 or not 0 <= cmd.fee < cmd.amount:
        raise Rejection("INVALID_AMOUNT", "amount must be positive and above the fee")
    if cmd.user in state.frozen:
        raise Rejection("USER_FROZEN", f"user {cmd.user} is frozen")
    funds = account(state, cmd.user, cmd.asset)
    if cmd.amount > funds[0]:
        raise Rejection(
            "INSUFFICIENT_BALANCE",
            f"withdrawal needs {amount_text(state, cmd.amount, cmd.asset)}, "
            f"{amount_text(state, funds[0], cmd.asset)} available",
        )
    funds[0] -= cmd.amount
    funds[1] += cmd.amount
    state.withdrawals[wid] = (cmd.user, cmd.asset, cmd.amount, cmd.fee, issued)
    events.append(e.WithdrawalHeld(wid, cmd.user, cmd.asset, cmd.amount, cmd.fee))
    events.append(
        Transfer(cmd.asset, cmd.amount, AVAILABLE, cmd.user, LOCKED, cmd.user, RESERVE, 0)
    )
    return Result(seq, "ACCEPTED", events)


def _take_held(state: EngineState, withdrawal_id: str) -> tuple[int, str, int, int]:
    held = state.withdrawals.pop(withdrawal_id, None)
    if held is None:
        raise Rejection("UNKNOWN_WITHDRAWAL", f"no held withdrawal {withdrawal_id!r}")
    user, asset, amount, fee, issued = held
    # Remembered as long as its hold command could still be accepted: until then a
    # replayed hold is a DUPLICATE_WITHDRAWAL, after it a STALE_WITHDRAWAL.
    state.finished_withdrawals.remember(withdrawal_id, issued + DEPOSIT_ID_WINDOW_MS)
    return user, asset, amount, fee


def settle_withdrawal(
    state: EngineState, seq: int, ts: int, cmd: c.SettleWithdrawal, events: list[e.Event]
) -> Result:
    user, asset, amount, fee = _take_held(state, cmd.withdrawal_id)
    account(state, user, asset)[1] -= amount
    sent = amount - fee
    state.external_withdrawals[asset] = state.external_withdrawals.get(asset, 0) + sent
    events.append(e.WithdrawalSettled(cmd.withdrawal_id, user, asset, amount, fee))
    events.append(Transfer(asset, sent, LOCKED, user, EXTERNAL_WITHDRAWALS, 0, WITHDRAWAL, 0))
    if fee:
        state.fees[asset] = state.fees.get(asset, 0) + fee
        events.append(Transfer(asset, fee, LOCKED, user, FEES, 0, FEE, 0))
    return Result(seq, "ACCEPTED", events)


def release_withdrawal(
    state: EngineState, seq: int, ts: int, cmd: c.ReleaseWithdrawal, events: list[e.Event]
) -> Result:
    user, asset, amount, _fee = _take_held(state, cmd.withdrawal_id)
    funds = account(state, user, asset)
    funds[1] -= amount
    funds[0] += amount
    events.append(e.WithdrawalReleased(cmd.withdrawal_id, user, asset, amount))
    events.append(Transfer(asset, amount, LOCKED, user, AVAILABLE, user, RELEASE, 0))
    return Result(seq, "ACCEPTED", events)
