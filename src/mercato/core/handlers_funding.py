"""Funding commands: deposits credited, and withdrawals held, settled or released.

A withdrawal is held (its amount locked) while custody sends it; settling pays it out
to the external withdrawals account (its fee to the fee account), releasing returns it.
Deposit and withdrawal ids are remembered for good, so a repeated command is harmless.
"""

from __future__ import annotations

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core.accounts import account
from mercato.core.events import Transfer
from mercato.core.messages import amount_text
from mercato.core.model import (
    AVAILABLE,
    DEPOSIT,
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


def deposit(
    state: EngineState, seq: int, ts: int, cmd: c.CreditDeposit, events: list[e.Event]
) -> Result:
    known_asset(state, cmd.asset)
    if cmd.amount <= 0:
        raise Rejection("INVALID_AMOUNT", "deposit amount must be positive")
    if not cmd.external_id:
        raise Rejection("INVALID_DEPOSIT", "a deposit needs its external_id")
    if cmd.external_id in state.deposit_ids:
        return Result(seq, "DUPLICATE", events, "DUPLICATE_DEPOSIT", "already credited")
    if cmd.amount - state.external_deposits.get(cmd.asset, 0) > MAX_SUPPLY:
        most = amount_text(state, MAX_SUPPLY, cmd.asset)
        raise Rejection("SUPPLY_LIMIT", f"total {cmd.asset} deposits would exceed {most}")
    state.deposit_ids.add(cmd.external_id)
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
    known_asset(state, cmd.asset)
    wid = cmd.withdrawal_id
    if not wid:
        raise Rejection("INVALID_WITHDRAWAL", "a withdrawal needs its withdrawal_id")
    if wid in state.withdrawals or wid in state.finished_withdrawals:
        raise Rejection("DUPLICATE_WITHDRAWAL", f"withdrawal {wid!r} exists already")
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
    state.withdrawals[wid] = (cmd.user, cmd.asset, cmd.amount, cmd.fee)
    events.append(e.WithdrawalHeld(wid, cmd.user, cmd.asset, cmd.amount, cmd.fee))
    events.append(
        Transfer(cmd.asset, cmd.amount, AVAILABLE, cmd.user, LOCKED, cmd.user, RESERVE, 0)
    )
    return Result(seq, "ACCEPTED", events)


def _take_held(state: EngineState, withdrawal_id: str) -> tuple[int, str, int, int]:
    held = state.withdrawals.pop(withdrawal_id, None)
    if held is None:
        raise Rejection("UNKNOWN_WITHDRAWAL", f"no held withdrawal {withdrawal_id!r}")
    state.finished_withdrawals.add(withdrawal_id)
    return held


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
