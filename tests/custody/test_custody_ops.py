"""The operator's custody acts before the admin API: acknowledging alerts and releasing
withdrawal holds, audited, on SQLite and PostgreSQL (two admins releasing one hold at
once: one release, one 409)."""

from __future__ import annotations

import asyncio

import pyotp
import pytest
from sqlalchemy import insert, select, text, update

from mercato.application.custody_ops import CustodyOps
from mercato.auth import totp
from mercato.auth.crypto import seal
from mercato.core.errors import CodedError
from mercato.store import create_engine
from mercato.store.tables import custody_alerts, custody_withdrawal_holds, users

MASTER_KEY = bytes(range(32))


async def _admin(db, email: str, secret: str | None) -> int:  # type: ignore[no-untyped-def]
    async with db.begin() as connection:
        result = await connection.execute(
            insert(users).values(email=email, email_skeleton=email, password_hash="-",
                                 role="admin", email_verified_at=1, created_at=1, updated_at=1)
        )  # fmt: skip
        user_id = int(result.inserted_primary_key[0])
        if secret is not None:
            sealed = seal(MASTER_KEY, secret.encode(), f"totp:{user_id}".encode())
            await connection.execute(
                update(users).where(users.c.id == user_id)
                .values(totp_secret_enc=sealed, totp_enabled=True)
            )  # fmt: skip
    return user_id


def _code(secret: str) -> str:
    return pyotp.TOTP(secret).generate_otp(int(totp._unix_time()) // totp.STEP_SECONDS)


async def _hold(db) -> int:  # type: ignore[no-untyped-def]
    async with db.begin() as connection:
        result = await connection.execute(
            insert(custody_withdrawal_holds).values(
                user_id=7, asset="ETH", reason="DEPOSIT_REVERSED", subject="anvil:0xab:0",
                created_at=1)
        )  # fmt: skip
        return int(result.inserted_primary_key[0])


def test_alerts_are_listed_and_acknowledged_once(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            ops = CustodyOps(db, MASTER_KEY)
            admin = await _admin(db, "ops@example.com", None)
            async with db.begin() as connection:
                await connection.execute(insert(custody_alerts).values(
                    severity="critical", kind="DEPOSIT_REVERSED", chain="anvil",
                    subject="anvil:0xab:0", detail="{}", created_at=5))  # fmt: skip
            [alert] = await ops.alerts()
            assert (alert.kind, alert.acknowledged_at) == ("DEPOSIT_REVERSED", None)
            done = await ops.acknowledge_alert(admin, alert.id, "10.0.0.1")
            assert done.acknowledged_by == admin and done.acknowledged_at is not None
            assert await ops.alerts() == [] and len(await ops.alerts(open_only=False)) == 1
            with pytest.raises(CodedError) as again:
                await ops.acknowledge_alert(admin, alert.id, None)
            assert again.value.code == "ALERT_ACKNOWLEDGED"
            with pytest.raises(CodedError) as missing:
                await ops.acknowledge_alert(admin, 999, None)
            assert missing.value.code == "ALERT_NOT_FOUND"
            async with db.connect() as connection:
                actions = (await connection.execute(text("SELECT action FROM audit_log"))).all()
            assert [a for (a,) in actions] == ["custody.alert.acknowledge"]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_hold_is_released_with_the_admins_second_factor_and_only_once(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            ops = CustodyOps(db, MASTER_KEY)
            secret_a, secret_b = pyotp.random_base32(), pyotp.random_base32()
            no_2fa = await _admin(db, "plain@example.com", None)
            ann = await _admin(db, "ann@example.com", secret_a)
            bob = await _admin(db, "bob@example.com", secret_b)
            hold = await _hold(db)
            with pytest.raises(CodedError) as refused:
                await ops.release_hold(no_2fa, hold, None, None)
            assert refused.value.code == "ADMIN_2FA_REQUIRED"
            with pytest.raises(CodedError) as wrong:
                await ops.release_hold(ann, hold, "000000", None)
            assert wrong.value.code == "INVALID_TOTP"
            assert [h.id for h in await ops.holds()] == [hold]  # nothing changed
            outcomes = await asyncio.gather(
                ops.release_hold(ann, hold, _code(secret_a), None),
                ops.release_hold(bob, hold, _code(secret_b), None),
                return_exceptions=True,
            )
            released = [o for o in outcomes if not isinstance(o, BaseException)]
            failed = [o for o in outcomes if isinstance(o, CodedError)]
            assert len(released) == 1 and [f.code for f in failed] == ["HOLD_RELEASED"]
            assert await ops.holds() == []
            async with db.connect() as connection:
                row = (await connection.execute(select(custody_withdrawal_holds))).one()
                audits = (await connection.execute(
                    text("SELECT action FROM audit_log WHERE action = 'custody.hold.release'")
                )).all()  # fmt: skip
            assert row.released_by in (ann, bob) and len(audits) == 1
        finally:
            await db.dispose()

    asyncio.run(scenario())
