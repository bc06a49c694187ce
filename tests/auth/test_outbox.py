"""The mail outbox (both backends) against a real SMTP server (aiosmtpd) and a closed
port: a failed delivery is retried with exponential backoff and given up after
MAX_ATTEMPTS; a message is only ever attempted by one process at a time.

The mailers run on a fake clock, so the schedule is checked to the millisecond without
waiting; the expected delays are written out here, not computed with the code's own
function.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.smtp_server import free_port, smtp_server, wait_until
from mercato.auth import mail
from mercato.auth.mail import Mailer, RetryPass, retry_delay_ms
from mercato.config import SmtpConfig
from mercato.store import create_engine, migrate
from mercato.store.tables import email_outbox

T0 = 1_900_000_000_000
SECOND = 1000
# After the n-th failed attempt: 30 s, 1, 2, 4, 8, 16, 32 min, then capped at an hour.
EXPECTED_DELAYS_S = [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def smtp(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="Desk <d@m.test>")


async def outbox(db: AsyncEngine) -> list[Any]:
    async with db.connect() as connection:
        return list(await connection.execute(select(email_outbox).order_by(email_outbox.c.id)))


def run(database_url: str, scenario: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            await scenario(db)
        finally:
            await db.dispose()

    asyncio.run(main())


def test_the_backoff_schedule() -> None:
    delays = [retry_delay_ms(n) // SECOND for n in range(1, len(EXPECTED_DELAYS_S) + 4)]
    assert delays == EXPECTED_DELAYS_S + [3600] * 3
    assert len(EXPECTED_DELAYS_S) + 1 == mail.MAX_ATTEMPTS


def test_a_failed_mail_is_retried_with_backoff_then_given_up(database_url: str) -> None:
    async def scenario(db: AsyncEngine) -> None:
        clock = Clock()
        mailer = Mailer(db, smtp(free_port()), clock=clock)  # nothing listens there
        await mailer.send("ann@example.com", "Verify", "token")
        (row,) = await outbox(db)
        assert (row.attempts, row.sent_at, row.failed_at) == (1, None, None)
        assert "ConnectError" in row.last_error or "Connection" in row.last_error

        attempted_at = T0
        for failed, delay in enumerate(EXPECTED_DELAYS_S, start=1):
            # ``failed`` attempts so far, the last one at ``attempted_at``.
            assert row.next_attempt_at == attempted_at + delay * SECOND, failed
            clock.now = row.next_attempt_at - 1  # not yet: nothing happens
            assert await mailer.retry_due() == RetryPass()
            assert (await outbox(db))[0] == row
            clock.now = attempted_at = row.next_attempt_at
            last = failed + 1 == mail.MAX_ATTEMPTS
            expected = RetryPass(given_up=1) if last else RetryPass(retry=1)
            assert await mailer.retry_due() == expected
            (row,) = await outbox(db)
            assert (row.attempts, row.sent_at) == (failed + 1, None) and row.last_error
            assert row.failed_at == (attempted_at if last else None)

        assert row.next_attempt_at is None
        assert row.attempts == mail.MAX_ATTEMPTS
        clock.now += 365 * 24 * 3600 * SECOND  # given up is given up
        assert await mailer.retry_due() == RetryPass()

    run(database_url, scenario)


def test_a_failed_mail_is_delivered_once_smtp_is_back(database_url: str) -> None:
    async def scenario(db: AsyncEngine) -> None:
        clock, port = Clock(), free_port()
        mailer = Mailer(db, smtp(port), clock=clock)
        await mailer.send("ann@example.com", "Verify", "token 1")
        with smtp_server(port) as inbox:
            await mailer.send("bob@example.com", "Reset", "token 2")  # delivered at once
            assert inbox.subjects == ["Reset"]
            clock.now = T0 + 30 * SECOND
            assert await mailer.retry_due() == RetryPass(sent=1)
            assert await mailer.retry_due() == RetryPass()
            clock.now += 3600 * SECOND
            assert await mailer.retry_due() == RetryPass()
            assert inbox.subjects == ["Reset", "Verify"]
            assert inbox.messages[1]["To"] == "ann@example.com"
            assert "token 1" in inbox.messages[1].get_payload()
        first, second = await outbox(db)
        assert (first.attempts, first.sent_at, first.last_error) == (2, T0 + 30 * SECOND, None)
        assert (first.next_attempt_at, first.failed_at) == (None, None)
        assert (second.attempts, second.sent_at, second.next_attempt_at) == (1, T0, None)

    run(database_url, scenario)


def test_without_smtp_mail_is_only_logged_and_never_retried(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(db: AsyncEngine) -> None:
        clock = Clock()
        caplog.set_level("INFO", logger="mercato.auth.mail")
        await Mailer(db, SmtpConfig(), clock=clock).send("ann@example.com", "Verify", "tok-1")
        assert "tok-1" in caplog.text
        (row,) = await outbox(db)
        assert (row.attempts, row.sent_at, row.next_attempt_at) == (0, None, None)
        clock.now += 3600 * SECOND
        assert await Mailer(db, SmtpConfig(), clock=clock).retry_due() == RetryPass()
        with smtp_server() as inbox:  # configured later: old logged mail stays logged only
            assert await Mailer(db, smtp(inbox.port), clock=clock).retry_due() == RetryPass()
            assert inbox.messages == []

    run(database_url, scenario)


def test_a_message_being_attempted_is_left_alone_by_other_passes(database_url: str) -> None:
    """Two processes (two engines) retrying at once: the one that claimed a message holds
    it while delivering; the other finds nothing due. The message arrives once."""

    async def scenario(db: AsyncEngine) -> None:
        clock = Clock()
        await Mailer(db, smtp(free_port()), clock=clock).send("ann@example.com", "Verify", "t")
        clock.now = T0 + 30 * SECOND
        other_db = create_engine(str(db.url.render_as_string(hide_password=False)))
        try:
            with smtp_server() as inbox:
                one = Mailer(db, smtp(inbox.port), clock=clock)
                two = Mailer(other_db, smtp(inbox.port), clock=clock)
                inbox.gate.clear()
                first = asyncio.create_task(one.retry_due())
                await wait_until(inbox.waiting.is_set)  # one is mid-delivery
                assert await two.retry_due() == RetryPass()
                clock.now += mail.CLAIM_MS - 1  # still within the claim
                assert await two.retry_due() == RetryPass()
                inbox.gate.set()
                assert await first == RetryPass(sent=1)
                assert await two.retry_due() == RetryPass()
                assert inbox.subjects == ["Verify"]
        finally:
            await other_db.dispose()

    run(database_url, scenario)


def test_an_attempt_cut_short_is_retried_when_its_claim_lapses(database_url: str) -> None:
    """A process that dies while delivering (here: the send is cancelled mid-SMTP) leaves
    the message claimed; once the claim lapses, another pass delivers it."""

    async def scenario(db: AsyncEngine) -> None:
        clock = Clock()
        with smtp_server() as inbox:
            mailer = Mailer(db, smtp(inbox.port), clock=clock)
            inbox.gate.clear()
            sending = asyncio.create_task(mailer.send("ann@example.com", "Verify", "t"))
            await wait_until(inbox.waiting.is_set)
            sending.cancel()
            inbox.gate.set()  # lets the cancelled client's polite QUIT through at once
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            (row,) = await outbox(db)
            assert (row.attempts, row.sent_at, row.next_attempt_at) == (0, None, T0 + mail.CLAIM_MS)
            clock.now = T0 + mail.CLAIM_MS - 1
            assert await mailer.retry_due() == RetryPass()
            clock.now = T0 + mail.CLAIM_MS
            assert await mailer.retry_due() == RetryPass(sent=1)
            assert inbox.subjects == ["Verify"]
        (row,) = await outbox(db)
        assert (row.attempts, row.sent_at) == (1, T0 + mail.CLAIM_MS)

    run(database_url, scenario)


def test_concurrent_retry_passes_deliver_every_message_exactly_once(database_url: str) -> None:
    async def scenario(db: AsyncEngine) -> None:
        clock = Clock()
        down = Mailer(db, smtp(free_port()), clock=clock)
        subjects = [f"mail {n}" for n in range(8)]
        for subject in subjects:
            await down.send("ann@example.com", subject, "body")
        clock.now = T0 + 30 * SECOND
        url = db.url.render_as_string(hide_password=False)
        engines = [create_engine(url) for _ in range(3)]
        try:
            with smtp_server() as inbox:
                passes = [Mailer(e, smtp(inbox.port), clock=clock).retry_due() for e in engines]
                done = await asyncio.gather(*passes)
                assert sum(p.sent for p in done) == len(subjects)
                assert sorted(inbox.subjects) == subjects
        finally:
            for engine in engines:
                await engine.dispose()
        assert [(r.attempts, r.sent_at is not None) for r in await outbox(db)] == [(2, True)] * 8

    run(database_url, scenario)
