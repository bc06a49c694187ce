"""What an operator does about custody's alerts and withdrawal holds until the admin API
comes (docs/custody.md, "Deposits"): list the alerts and acknowledge one; list the
withdrawal holds a reversed deposit put on a user's asset and release one (2FA). Each
act is an audit-log row written in the transaction of the change."""

from __future__ import annotations

import builtins

import msgspec
from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.totp import check_second_factor
from mercato.core.errors import CodedError, ErrorKind
from mercato.custody.holds import audit, now_ms
from mercato.store.tables import custody_alerts, custody_withdrawal_holds, users


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    severity: str
    kind: str
    chain: str
    subject: str
    detail: str
    created_at: int
    acknowledged_at: int | None
    acknowledged_by: int | None


class HoldRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    user_id: int
    asset: str
    reason: str
    subject: str
    created_at: int
    released_at: int | None
    released_by: int | None


def _alert(row: Row[tuple[object, ...]]) -> AlertRecord:
    return msgspec.convert({k: getattr(row, k) for k in AlertRecord.__struct_fields__}, AlertRecord)


def _hold(row: Row[tuple[object, ...]]) -> HoldRecord:
    return msgspec.convert({k: getattr(row, k) for k in HoldRecord.__struct_fields__}, HoldRecord)


class CustodyOps:
    def __init__(self, db: AsyncEngine, master_key: bytes) -> None:
        self._db = db
        self._master_key = master_key

    async def alerts(self, open_only: bool = True, limit: int = 100) -> builtins.list[AlertRecord]:
        """Newest first; ``open_only``: those nobody acknowledged yet."""
        a = custody_alerts.c
        query = select(custody_alerts).order_by(a.id.desc()).limit(limit)
        if open_only:
            query = query.where(a.acknowledged_at.is_(None))
        async with self._db.connect() as connection:
            return [_alert(row) for row in await connection.execute(query)]

    async def acknowledge_alert(self, admin: int, alert_id: int, ip: str | None) -> AlertRecord:
        """Mark the alert seen by ``admin``; acknowledging twice is ALERT_ACKNOWLEDGED."""
        a = custody_alerts.c
        async with self._db.begin() as connection:
            moved = await connection.execute(
                update(custody_alerts)
                .where(a.id == alert_id, a.acknowledged_at.is_(None))
                .values(acknowledged_at=now_ms(), acknowledged_by=admin)
            )
            row = (
                await connection.execute(select(custody_alerts).where(a.id == alert_id))
            ).one_or_none()
            if row is None:
                raise CodedError("ALERT_NOT_FOUND", f"no alert {alert_id}", ErrorKind.NOT_FOUND)
            if not moved.rowcount:
                raise CodedError(
                    "ALERT_ACKNOWLEDGED",
                    f"alert {alert_id} was acknowledged already",
                    ErrorKind.CONFLICT,
                )
            await audit(connection, "custody.alert.acknowledge", user_id=None, actor_id=admin,
                        ip=ip, alert_id=alert_id, kind=row.kind, subject=row.subject)  # fmt: skip
        return _alert(row)

    async def holds(self, active_only: bool = True) -> builtins.list[HoldRecord]:
        h = custody_withdrawal_holds.c
        query = select(custody_withdrawal_holds).order_by(h.id.desc())
        if active_only:
            query = query.where(h.released_at.is_(None))
        async with self._db.connect() as connection:
            return [_hold(row) for row in await connection.execute(query)]

    async def release_hold(
        self, admin: int, hold_id: int, totp_code: str | None, ip: str | None
    ) -> HoldRecord:
        """Let the user withdraw the asset again: a money decision, so the admin's 2FA
        code is required (and spent only if the release happens)."""
        h = custody_withdrawal_holds.c
        async with self._db.begin() as connection:
            await _admin_second_factor(connection, self._master_key, admin, totp_code)
            moved = await connection.execute(
                update(custody_withdrawal_holds)
                .where(h.id == hold_id, h.released_at.is_(None))
                .values(released_at=now_ms(), released_by=admin)
            )
            row = (
                await connection.execute(select(custody_withdrawal_holds).where(h.id == hold_id))
            ).one_or_none()
            if row is None:
                raise CodedError("HOLD_NOT_FOUND", f"no withdrawal hold {hold_id}",
                                 ErrorKind.NOT_FOUND)  # fmt: skip
            if not moved.rowcount:
                raise CodedError("HOLD_RELEASED", f"hold {hold_id} was released already",
                                 ErrorKind.CONFLICT)  # fmt: skip
            await audit(connection, "custody.hold.release", user_id=row.user_id, actor_id=admin,
                        ip=ip, hold_id=hold_id, asset=row.asset, subject=row.subject)  # fmt: skip
        return _hold(row)


async def _admin_second_factor(
    connection: AsyncConnection, master_key: bytes, admin: int, code: str | None
) -> None:
    person = (await connection.execute(select(users).where(users.c.id == admin))).one()
    if not person.totp_enabled:
        raise CodedError(
            "ADMIN_2FA_REQUIRED",
            "enrol two-factor authentication before deciding on custody holds",
            ErrorKind.FORBIDDEN,
        )
    await check_second_factor(connection, master_key, admin, code)
