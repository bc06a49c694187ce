"""Withdrawal requests, cancels and admin decisions against a real engine and store (SQLite
and PostgreSQL): every refusal a stable code with nothing held and no row; holds released
exactly once; the races that guard money, on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from custody.desk import MASTER_KEY, TO, USDT_ATOMS, Desk, HookedPort, open_desk
from mercato.application.withdrawals import Withdrawals
from mercato.core.commands import HoldWithdrawal
from mercato.core.errors import CodedError

FUNDS = 2000 * USDT_ATOMS


def run(url: str, tmp: Path, test: Callable[[Desk], Awaitable[None]], **asset: object) -> None:
    async def main() -> None:
        async with open_desk(url, tmp / "engine", **asset) as desk:
            await test(desk)

    asyncio.run(main())


async def refused(desk: Desk, code: str, call: Awaitable[object], user: int) -> CodedError:
    """``call`` is refused with ``code``; nothing is held and no withdrawal row exists."""
    before = desk.balance(user)
    with pytest.raises(CodedError) as caught:
        await call
    assert caught.value.code == code, caught.value.message
    assert desk.balance(user) == before
    assert await desk.rows("SELECT * FROM custody_withdrawals WHERE user_id = :u", u=user) == []
    return caught.value


@pytest.mark.parametrize(
    ("amount", "address", "code"),
    [
        ("ten", TO, "INVALID_AMOUNT"),
        ("-5", TO, "INVALID_AMOUNT"),
        ("0", TO, "INVALID_AMOUNT"),
        ("9.99", TO, "INVALID_AMOUNT"),  # below min_withdrawal 10
        ("10.0000001", TO, "INVALID_AMOUNT"),  # finer than the chain's 6 decimals
        ("10", "not-an-address", "INVALID_ADDRESS"),
        ("1999.5", TO, "INSUFFICIENT_BALANCE"),  # with the fee of 1: 2000.5 > 2000
    ],
)
def test_bad_requests_are_refused_with_nothing_held(
    migrated: str, tmp_path: Path, amount: str, address: str, code: str
) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        error = await refused(
            desk, code, desk.withdrawals.request(user, "USDT", amount, address, None), user
        )
        assert error.kind in ("INVALID",)

    run(migrated, tmp_path, test, daily_limit="")


def test_unknown_asset_and_held_withdrawals(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        await refused(
            desk, "CUSTODY_UNAVAILABLE", desk.withdrawals.request(user, "BTC", "10", TO, None), user
        )
        async with desk.db.begin() as connection:  # type: ignore[attr-defined]
            from sqlalchemy import insert

            from mercato.store.tables import custody_withdrawal_holds

            await connection.execute(
                insert(custody_withdrawal_holds).values(
                    user_id=user,
                    asset="USDT",
                    reason="a deposit was reversed",
                    subject="x",
                    created_at=0,
                )
            )
        await refused(
            desk, "WITHDRAWALS_HELD", desk.withdrawals.request(user, "USDT", "10", TO, None), user
        )

    run(migrated, tmp_path, test)


def test_without_a_cooloff_a_new_address_is_usable_at_once(migrated: str, tmp_path: Path) -> None:
    """``address_cooloff_seconds = 0``: the first request adds the address and goes on in
    the same transaction; a request refused later on rolls its addition back."""

    async def test(desk: Desk) -> None:
        desk.config.address_cooloff_seconds = 0  # the Withdrawals service's own config
        user = await desk.user(funds=FUNDS)
        record = await desk.withdrawals.request(user, "USDT", "10", "0xNEW", None)
        assert record.status == "APPROVED" and record.hold_state == "HELD"
        book = await desk.withdrawals.addresses(user)
        assert [(e.address, e.usable_at) for e in book] == [("0xnew", desk.clock.now)]
        with pytest.raises(CodedError) as caught:  # 10 + 995 over the daily 1000
            await desk.withdrawals.request(user, "USDT", "995", "0xother", None)
        assert caught.value.code == "DAILY_LIMIT_EXCEEDED"
        assert [e.address for e in await desk.withdrawals.addresses(user)] == ["0xnew"]

    run(migrated, tmp_path, test)


def test_a_new_address_cools_off_and_the_request_then_passes(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        error = await refused(
            desk,
            "ADDRESS_COOLING_OFF",
            desk.withdrawals.request(user, "USDT", "10", "0xNEW", None),
            user,
        )
        usable = desk.clock.now + 3600_000
        assert str(usable) in error.message
        book = await desk.withdrawals.addresses(user)
        assert [(e.address, e.usable_at) for e in book] == [("0xnew", usable)]
        desk.clock.now += 1000  # still cooling
        await refused(
            desk,
            "ADDRESS_COOLING_OFF",
            desk.withdrawals.request(user, "USDT", "10", "0xnew", None),
            user,
        )
        desk.clock.now = usable
        record = await desk.withdrawals.request(user, "USDT", "10", "0xnew", None)
        assert record.status == "APPROVED" and record.hold_state == "HELD"
        assert desk.balance(user) == (FUNDS - 11 * USDT_ATOMS, 11 * USDT_ATOMS)
        audit = await desk.rows(
            "SELECT action FROM audit_log WHERE user_id = :u ORDER BY id", u=user
        )
        assert audit == [("withdrawal_address.add",), ("withdrawal.request",)]

    run(migrated, tmp_path, test)


def test_daily_limit_counts_amounts_of_the_last_24_hours(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        await desk.withdrawals.request(user, "USDT", "400", TO, None)
        canceled = await desk.withdrawals.request(user, "USDT", "400", TO, None)
        await desk.withdrawals.cancel(user, canceled.withdrawal_id)  # no longer counts
        await desk.withdrawals.request(user, "USDT", "400", TO, None)
        before = desk.balance(user)
        with pytest.raises(CodedError) as caught:
            await desk.withdrawals.request(user, "USDT", "200.5", TO, None)
        assert caught.value.code == "DAILY_LIMIT_EXCEEDED"
        assert "200 left" in caught.value.message
        assert desk.balance(user) == before
        desk.clock.now += 86_400_001
        await desk.withdrawals.request(user, "USDT", "200.5", TO, None)

    run(migrated, tmp_path, test)


def test_two_factor_required_and_a_code_works_once(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS, two_factor=True)
        await desk.book(user)
        await refused(
            desk, "TOTP_REQUIRED", desk.withdrawals.request(user, "USDT", "10", TO, None), user
        )
        await refused(
            desk, "INVALID_TOTP", desk.withdrawals.request(user, "USDT", "10", TO, "000000x"), user
        )
        code = desk.code(user)
        # a refusal later in the transaction does not spend the code
        await refused(
            desk,
            "INSUFFICIENT_BALANCE",
            desk.withdrawals.request(user, "USDT", "5000", TO, code),
            user,
        )
        await desk.withdrawals.request(user, "USDT", "10", TO, code)
        before = desk.balance(user)
        with pytest.raises(CodedError) as reused:
            await desk.withdrawals.request(user, "USDT", "10", TO, code)
        assert reused.value.code == "TOTP_REUSED"
        assert desk.balance(user) == before

    run(migrated, tmp_path, test, daily_limit="")


def test_cancel_releases_the_hold_once(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        other = await desk.user()
        await desk.book(user)
        record = await desk.withdrawals.request(user, "USDT", "100", TO, None)
        assert desk.balance(user) == (FUNDS - 101 * USDT_ATOMS, 101 * USDT_ATOMS)
        with pytest.raises(CodedError) as not_yours:
            await desk.withdrawals.cancel(other, record.withdrawal_id)
        assert not_yours.value.code == "WITHDRAWAL_NOT_FOUND"
        canceled = await desk.withdrawals.cancel(user, record.withdrawal_id)
        assert (canceled.status, canceled.hold_state) == ("CANCELED", "RELEASED")
        assert desk.balance(user) == (FUNDS, 0)
        with pytest.raises(CodedError) as again:
            await desk.withdrawals.cancel(user, record.withdrawal_id)
        assert again.value.code == "WITHDRAWAL_NOT_CANCELABLE"
        await desk.withdrawals.recover()
        assert desk.balance(user) == (FUNDS, 0)

    run(migrated, tmp_path, test)


def test_cancel_after_signing_is_refused(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        record = await desk.withdrawals.request(user, "USDT", "100", TO, None)
        await desk.sender.run_once()
        with pytest.raises(CodedError) as caught:
            await desk.withdrawals.cancel(user, record.withdrawal_id)
        assert caught.value.code == "WITHDRAWAL_NOT_CANCELABLE"
        assert desk.balance(user) == (FUNDS - 101 * USDT_ATOMS, 101 * USDT_ATOMS)

    run(migrated, tmp_path, test)


async def _admins(desk: Desk, count: int) -> list[int]:
    return [await desk.user(role="admin", two_factor=True) for _ in range(count)]


def test_approvals_m_distinct_admins_never_the_requester(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        requester = await desk.user(role="admin", funds=FUNDS, two_factor=True)
        await desk.book(requester)
        first, second = await _admins(desk, 2)
        plain = await desk.user(role="admin")
        w = (
            await desk.withdrawals.request(requester, "USDT", "600", TO, desk.code(requester))
        ).withdrawal_id
        assert (await desk.withdrawals.get(requester, w)).status == "APPROVAL_REQUIRED"

        async def code_of(error_code: str, admin: int, code: str | None) -> None:
            with pytest.raises(CodedError) as caught:
                await desk.withdrawals.approve(admin, w, code)
            assert caught.value.code == error_code

        await code_of("SELF_APPROVAL", requester, desk.code(requester, 1))
        await code_of("ADMIN_2FA_REQUIRED", plain, None)
        await code_of("TOTP_REQUIRED", first, None)
        await code_of("ADMIN_REQUIRED", await desk.user(), None)
        assert (await desk.withdrawals.approve(first, w, desk.code(first))).status == (
            "APPROVAL_REQUIRED"
        )
        await code_of("ALREADY_DECIDED", first, desk.code(first, 1))
        assert (await desk.withdrawals.approve(second, w, desk.code(second))).status == "APPROVED"
        decisions = await desk.rows(
            "SELECT count(*) FROM audit_log WHERE action = 'withdrawal.approve'"
        )
        assert decisions == [(2,)]

    run(migrated, tmp_path, test)


def test_an_expired_approval_does_not_count(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        first, second = await _admins(desk, 2)
        w = (await desk.withdrawals.request(user, "USDT", "600", TO, None)).withdrawal_id
        await desk.withdrawals.approve(first, w, desk.code(first))
        desk.clock.now += 600_001  # approval_ttl 600 s
        record = await desk.withdrawals.approve(second, w, desk.code(second))
        assert record.status == "APPROVAL_REQUIRED"
        record = await desk.withdrawals.approve(first, w, desk.code(first, 1))  # renewed
        assert record.status == "APPROVED"

    run(migrated, tmp_path, test)


def test_rejection_releases_the_hold_exactly_once(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        first, second = await _admins(desk, 2)
        w = (await desk.withdrawals.request(user, "USDT", "600", TO, None)).withdrawal_id
        assert desk.balance(user) == (FUNDS - 601 * USDT_ATOMS, 601 * USDT_ATOMS)
        record = await desk.withdrawals.reject(first, w, "unknown address", desk.code(first))
        assert (record.status, record.hold_state, record.reason) == (
            "REJECTED",
            "RELEASED",
            "unknown address",
        )
        assert desk.balance(user) == (FUNDS, 0)
        with pytest.raises(CodedError) as caught:
            await desk.withdrawals.reject(second, w, "again", desk.code(second))
        assert caught.value.code == "WITHDRAWAL_NOT_PENDING"
        await desk.withdrawals.recover()
        assert desk.balance(user) == (FUNDS, 0)
        # the released funds are the user's again: a withdrawal of all of them passes
        await desk.withdrawals.request(user, "USDT", "400", TO, None)

    run(migrated, tmp_path, test)


def test_recover_finishes_an_interrupted_hold_and_release(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        record = await desk.withdrawals.request(user, "USDT", "100", TO, None)
        w = record.withdrawal_id
        # a crash after the row, before the hold was recorded: the engine has the hold
        async with desk.db.begin() as connection:  # type: ignore[attr-defined]
            from sqlalchemy import text

            await connection.execute(
                text(
                    "UPDATE custody_withdrawals SET status='REQUESTED', "
                    "hold_state='PENDING' WHERE withdrawal_id=:w"
                ),
                {"w": w},
            )
        desk.clock.now += 10_000
        await desk.withdrawals.recover()
        after = await desk.withdrawals.get(user, w)
        assert (after.status, after.hold_state) == ("APPROVED", "HELD")
        assert desk.balance(user) == (FUNDS - 101 * USDT_ATOMS, 101 * USDT_ATOMS)
        # a crash after CANCELED was committed, before the release
        async with desk.db.begin() as connection:  # type: ignore[attr-defined]
            await connection.execute(
                text("UPDATE custody_withdrawals SET status='CANCELED' WHERE withdrawal_id=:w"),
                {"w": w},
            )
        await desk.withdrawals.recover()
        await desk.withdrawals.recover()
        assert (await desk.withdrawals.get(user, w)).hold_state == "RELEASED"
        assert desk.balance(user) == (FUNDS, 0)

    run(migrated, tmp_path, test)


# -- PostgreSQL concurrency -----------------------------------------------------------------


@pytest.fixture
def pg(tmp_path: Path) -> object:
    import asyncio as _asyncio

    from mercato.store import migrate
    from store.conftest import fresh_postgres_database

    with fresh_postgres_database() as url:
        _asyncio.run(migrate(url))
        yield url


def test_two_requests_at_once_cannot_both_pass_the_daily_limit(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        results = await asyncio.gather(
            desk.withdrawals.request(user, "USDT", "600", TO, None),
            desk.withdrawals.request(user, "USDT", "600", TO, None),
            return_exceptions=True,
        )
        codes = sorted(r.code if isinstance(r, CodedError) else "OK" for r in results)  # type: ignore[union-attr]
        assert codes == ["DAILY_LIMIT_EXCEEDED", "OK"]
        assert desk.balance(user) == (FUNDS - 601 * USDT_ATOMS, 601 * USDT_ATOMS)

    run(pg, tmp_path, test, approval_threshold="")


def test_two_admins_approving_at_once_are_both_counted(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        first, second = await _admins(desk, 2)
        w = (await desk.withdrawals.request(user, "USDT", "600", TO, None)).withdrawal_id
        await asyncio.gather(
            desk.withdrawals.approve(first, w, desk.code(first)),
            desk.withdrawals.approve(second, w, desk.code(second)),
        )
        assert (await desk.withdrawals.get(user, w)).status == "APPROVED"
        audit = await desk.rows("SELECT detail FROM audit_log WHERE action='withdrawal.approve'")
        assert sorted('"approved": true' in d for (d,) in audit) == [False, True]

    run(pg, tmp_path, test)


def test_one_admin_approving_twice_at_once_counts_once(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)
        (first,) = await _admins(desk, 1)
        w = (await desk.withdrawals.request(user, "USDT", "600", TO, None)).withdrawal_id
        results = await asyncio.gather(
            desk.withdrawals.approve(first, w, desk.code(first)),
            desk.withdrawals.approve(first, w, desk.code(first, 1)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, CodedError) and r.code == "ALREADY_DECIDED" for r in results) == 1
        assert await desk.rows("SELECT count(*) FROM custody_approvals") == [(1,)]
        assert (await desk.withdrawals.get(user, w)).status == "APPROVAL_REQUIRED"

    run(pg, tmp_path, test)


def test_cancel_against_the_sender_exactly_one_wins(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS * 5)
        await desk.book(user)
        for _ in range(5):
            w = (await desk.withdrawals.request(user, "USDT", "100", TO, None)).withdrawal_id
            results = await asyncio.gather(
                desk.withdrawals.cancel(user, w), desk.sender.run_once(), return_exceptions=True
            )
            record = await desk.withdrawals.get(user, w)
            outgoing = await desk.rows("SELECT count(*) FROM custody_outgoing WHERE ref = :w", w=w)
            if record.status == "CANCELED":
                assert outgoing == [(0,)] and record.hold_state == "RELEASED"
            else:
                # the sender won: its same pass may have broadcast it already
                assert record.status in ("SIGNED", "BROADCAST") and outgoing == [(1,)]
                assert isinstance(results[0], CodedError)
                assert results[0].code == "WITHDRAWAL_NOT_CANCELABLE"
                assert record.hold_state == "HELD"
        locked = desk.balance(user)[1]
        signed = await desk.rows(
            "SELECT count(*) FROM custody_withdrawals WHERE status IN ('SIGNED', 'BROADCAST')"
        )
        assert locked == signed[0][0] * 101 * USDT_ATOMS

    run(pg, tmp_path, test, daily_limit="")


def _with_port(desk: Desk, port: object) -> Withdrawals:
    return Withdrawals(desk.db, port, desk.config, {"fake": desk.chain}, MASTER_KEY, desk.clock)  # type: ignore[arg-type]


def test_the_engine_refusing_the_hold_rejects_with_its_code(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)

        async def spend_it_meanwhile(cmd: object) -> None:
            # the balance moves between the store's pre-check and the engine's hold
            await desk.port.submit(HoldWithdrawal(user, "USDT", FUNDS, "elsewhere", 0))

        withdrawals = _with_port(desk, HookedPort(desk.port, HoldWithdrawal, spend_it_meanwhile))
        with pytest.raises(CodedError) as caught:
            await withdrawals.request(user, "USDT", "100", TO, None)
        assert (caught.value.code, caught.value.kind) == ("INSUFFICIENT_BALANCE", "INVALID")
        ((status, hold_state, reason),) = await desk.rows(
            "SELECT status, hold_state, reason FROM custody_withdrawals"
        )
        assert (status, hold_state) == ("REJECTED", "NONE") and "available" in reason
        assert desk.balance(user) == (0, FUNDS)  # only the other hold

    run(migrated, tmp_path, test)


def test_a_cancel_while_the_hold_is_placed_gives_it_back(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user = await desk.user(funds=FUNDS)
        await desk.book(user)

        async def cancel_first(cmd: object) -> None:
            assert isinstance(cmd, HoldWithdrawal)
            canceled = await desk.withdrawals.cancel(user, cmd.withdrawal_id)
            assert (canceled.status, canceled.hold_state) == ("CANCELED", "PENDING")

        withdrawals = _with_port(desk, HookedPort(desk.port, HoldWithdrawal, cancel_first))
        record = await withdrawals.request(user, "USDT", "100", TO, None)
        assert (record.status, record.hold_state) == ("CANCELED", "RELEASED")
        assert desk.balance(user) == (FUNDS, 0)

    run(migrated, tmp_path, test)
