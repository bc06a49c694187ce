"""The engine's withdrawal hold, released or settled exactly once, and the audit log.

The engine drops a hold at the first Release or Settle and refuses any later one as
``UNKNOWN_WITHDRAWAL``: the money moves once whatever the store says. The row's
``hold_state`` records which happened, moved by compare-and-set after the engine
answered, so a crash between the two is finished by the next pass (the resubmitted
command is refused as unknown, which is taken as done).
"""

from __future__ import annotations

import json
import time

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.core.commands import Command, HoldWithdrawal, ReleaseWithdrawal, SettleWithdrawal
from mercato.port import FundingPort
from mercato.store.tables import audit_log, custody_withdrawals


def now_ms() -> int:
    return int(time.time() * 1000)


def hold_command(
    user: int, asset: str, total: int, withdrawal_id: str, fee: int, requested_at: int
) -> Command:
    """HoldWithdrawal of ``total`` (amount + fee), issued when the withdrawal was requested:
    a hold re-sent by recovery carries the same ``issued_at``, so the engine's id window
    (docs/core.md) covers every copy of it."""
    return HoldWithdrawal(user, asset, total, withdrawal_id, fee, issued_at=requested_at)


async def _finish(
    db: AsyncEngine, port: FundingPort, command: Command, withdrawal_id: str, state: str
) -> bool:
    result = await port.submit(command)
    if result.status != "ACCEPTED" and result.code != "UNKNOWN_WITHDRAWAL":
        raise RuntimeError(f"{type(command).__name__} {withdrawal_id}: {result.message}")
    async with db.begin() as connection:
        done = await connection.execute(
            update(custody_withdrawals)
            .where(
                custody_withdrawals.c.withdrawal_id == withdrawal_id,
                custody_withdrawals.c.hold_state == "HELD",
            )
            .values(hold_state=state, updated_at=now_ms())
        )
    return result.status == "ACCEPTED" and bool(done.rowcount)


async def release_hold(db: AsyncEngine, port: FundingPort, withdrawal_id: str) -> bool:
    """Give the held amount back (REJECTED, CANCELED, FAILED); True if this call did."""
    return await _finish(db, port, ReleaseWithdrawal(withdrawal_id), withdrawal_id, "RELEASED")


async def settle_hold(db: AsyncEngine, port: FundingPort, withdrawal_id: str) -> bool:
    """The withdrawal left on chain: the held amount leaves, the fee is earned."""
    return await _finish(db, port, SettleWithdrawal(withdrawal_id), withdrawal_id, "SETTLED")


async def audit(
    connection: AsyncConnection,
    action: str,
    *,
    user_id: int | None,
    actor_id: int | None,
    ip: str | None = None,
    **detail: object,
) -> None:
    """One audit_log row, in the caller's transaction (an undone action leaves none)."""
    await connection.execute(
        insert(audit_log).values(
            user_id=user_id,
            actor_id=actor_id,
            action=action,
            detail=json.dumps(detail, sort_keys=True),
            ip=ip,
            created_at=now_ms(),
        )
    )
