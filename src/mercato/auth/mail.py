"""Outgoing mail: every message goes to the outbox table, then to SMTP when configured.

Without an SMTP host the message is logged instead, so that a local operator can still
follow a verification link. A failed SMTP delivery never fails the request that caused
it: the outbox row keeps the message, its attempts and the last error, and
:meth:`Mailer.retry_due` (run periodically by the service) tries again with exponential
backoff: 30 s after the first failure, then 1 min, 2 min, 4 min ... at most an hour
apart, and gives up after :data:`MAX_ATTEMPTS` attempts (``failed_at``).

Several processes may share the outbox. A row is *claimed* before each attempt by a
conditional UPDATE that moves its ``next_attempt_at`` forward by :data:`CLAIM_MS`
(longer than an attempt can take), so no two processes send the same message at once;
a process that dies mid-attempt leaves a claim that lapses, and the message is retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.config import SmtpConfig
from mercato.store.tables import email_outbox

log = logging.getLogger(__name__)
SMTP_TIMEOUT_SECONDS = 10  # per SMTP command
#: One delivery attempt, connection to QUIT, takes at most this long.
ATTEMPT_DEADLINE_SECONDS = 60
#: How long a claimed message belongs to the process that claimed it.
CLAIM_MS = 2 * ATTEMPT_DEADLINE_SECONDS * 1000
#: Delay after the first failed attempt; it doubles after each further one...
RETRY_FIRST_DELAY_MS = 30_000
#: ...up to this.
RETRY_MAX_DELAY_MS = 3600_000
#: Attempts (the first one included) before a message is given up.
MAX_ATTEMPTS = 10
#: Messages one retry pass attempts at most.
RETRY_BATCH = 20

Result = Literal["sent", "retry", "given_up", "lost"]


def retry_delay_ms(failed_attempts: int) -> int:
    """How long after its ``failed_attempts``-th failed attempt a message is retried."""
    doublings = min(max(failed_attempts - 1, 0), 32)
    return min(RETRY_FIRST_DELAY_MS << doublings, RETRY_MAX_DELAY_MS)


class RetryPass(msgspec.Struct, frozen=True):
    """What one :meth:`Mailer.retry_due` pass did."""

    sent: int = 0
    retry: int = 0  # failed again, rescheduled
    given_up: int = 0


class _Claim(msgspec.Struct, frozen=True):
    id: int
    to: str
    subject: str
    body: str
    attempts: int  # before this one
    until: int  # the claim's expiry: next_attempt_at while it is held


def _now_ms() -> int:
    return int(time.time() * 1000)


class Mailer:
    def __init__(
        self, db: AsyncEngine, smtp: SmtpConfig, *, clock: Callable[[], int] = _now_ms
    ) -> None:
        self.db = db
        self.smtp = smtp
        self.clock = clock  # milliseconds since the epoch

    async def send(self, to: str, subject: str, body: str) -> None:
        """Store the message, then try to deliver it once now (claimed from the start, so
        a concurrent retry pass leaves it alone). Never raises for an SMTP failure."""
        now = self.clock()
        claim_until = now + CLAIM_MS if self.smtp.host else None
        async with self.db.begin() as connection:
            result = await connection.execute(
                insert(email_outbox).values(
                    to_address=to, subject=subject, body=body, created_at=now,
                    next_attempt_at=claim_until,
                )
            )  # fmt: skip
            outbox_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        if claim_until is None:
            log.info("no SMTP configured; mail to %s: %s\n%s", to, subject, body)
            return
        await self._attempt(_Claim(outbox_id, to, subject, body, 0, claim_until))

    async def retry_due(self, limit: int = RETRY_BATCH) -> RetryPass:
        """Attempt the messages whose retry is due, oldest due first, at most ``limit``;
        safe to run in several processes at once. Does nothing without SMTP."""
        counts = {"sent": 0, "retry": 0, "given_up": 0, "lost": 0}
        if not self.smtp.host:
            return RetryPass()
        for _ in range(limit):
            claim = await self._claim()
            if claim is None:
                break
            if isinstance(claim, _Claim):
                counts[await self._attempt(claim)] += 1
        return RetryPass(counts["sent"], counts["retry"], counts["given_up"])

    async def _claim(self) -> _Claim | Literal["taken"] | None:
        """The oldest due message, now claimed by this process; "taken" if another process
        claimed it first; None when nothing is due."""
        now = self.clock()
        async with self.db.begin() as connection:
            row = (
                await connection.execute(
                    select(email_outbox)
                    .where(email_outbox.c.next_attempt_at <= now)
                    .order_by(email_outbox.c.next_attempt_at, email_outbox.c.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            until = now + CLAIM_MS
            claimed = await connection.execute(
                update(email_outbox)
                .where(
                    email_outbox.c.id == row.id,
                    email_outbox.c.next_attempt_at == row.next_attempt_at,
                    email_outbox.c.sent_at.is_(None),
                )
                .values(next_attempt_at=until)
            )
            if claimed.rowcount == 0:
                return "taken"
        return _Claim(row.id, row.to_address, row.subject, row.body, row.attempts, until)

    async def _attempt(self, claim: _Claim) -> Result:
        """Deliver a claimed message once and record the outcome."""
        error: str | None = None
        try:
            async with asyncio.timeout(ATTEMPT_DEADLINE_SECONDS):
                await aiosmtplib.send(
                    self._message(claim.to, claim.subject, claim.body),
                    hostname=self.smtp.host,
                    port=self.smtp.port,
                    username=self.smtp.username or None,
                    password=self.smtp.password or None,
                    start_tls=self.smtp.starttls,
                    timeout=SMTP_TIMEOUT_SECONDS,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as failure:
            error = f"{type(failure).__name__}: {failure}".removesuffix(": ")
        now, attempts = self.clock(), claim.attempts + 1
        async with self.db.begin() as connection:
            if error is None:  # sent is sent, whoever holds the claim by now
                await connection.execute(
                    update(email_outbox)
                    .where(email_outbox.c.id == claim.id, email_outbox.c.sent_at.is_(None))
                    .values(sent_at=now, attempts=attempts, last_error=None,
                            next_attempt_at=None, failed_at=None)
                )  # fmt: skip
                return "sent"
            give_up = attempts >= MAX_ATTEMPTS
            recorded = await connection.execute(
                update(email_outbox)
                .where(email_outbox.c.id == claim.id, email_outbox.c.next_attempt_at == claim.until)
                .values(attempts=attempts, last_error=error,
                        next_attempt_at=None if give_up else now + retry_delay_ms(attempts),
                        failed_at=now if give_up else None)
            )  # fmt: skip
        if recorded.rowcount == 0:  # the claim lapsed and someone else took the message
            log.warning("mail %d to %s not delivered: %s (claim lapsed)", claim.id, claim.to, error)
            return "lost"
        if give_up:
            log.error("mail %d to %s given up after %d attempts: %s", claim.id, claim.to,
                      attempts, error)  # fmt: skip
            return "given_up"
        log.warning("mail %d to %s not delivered (attempt %d; retry in %d s): %s", claim.id,
                    claim.to, attempts, retry_delay_ms(attempts) // 1000, error)  # fmt: skip
        return "retry"

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        return message
