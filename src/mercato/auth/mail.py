"""Outgoing mail: every message goes to the outbox table, then to SMTP when configured.

Without an SMTP host the message is logged instead, so that a local operator can still
follow a verification link. A failed SMTP delivery never fails the request that caused
it: the outbox row keeps the message, its attempts and the last error.
"""

from __future__ import annotations

import logging
import time
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.config import SmtpConfig
from mercato.store.tables import email_outbox

log = logging.getLogger(__name__)
SMTP_TIMEOUT_SECONDS = 10


class Mailer:
    def __init__(self, db: AsyncEngine, smtp: SmtpConfig) -> None:
        self.db = db
        self.smtp = smtp

    async def send(self, to: str, subject: str, body: str) -> None:
        async with self.db.begin() as connection:
            result = await connection.execute(
                insert(email_outbox).values(
                    to_address=to, subject=subject, body=body, created_at=_now_ms()
                )
            )
            outbox_id = result.inserted_primary_key[0]  # type: ignore[index]
        if not self.smtp.host:
            log.info("no SMTP configured; mail to %s: %s\n%s", to, subject, body)
            return
        error: str | None = None
        try:
            await aiosmtplib.send(
                self._message(to, subject, body),
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username or None,
                password=self.smtp.password or None,
                start_tls=self.smtp.starttls,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
        except (aiosmtplib.SMTPException, OSError) as failure:
            error = f"{type(failure).__name__}: {failure}"
            log.warning("mail to %s not delivered (kept in the outbox): %s", to, error)
        async with self.db.begin() as connection:
            await connection.execute(
                update(email_outbox)
                .where(email_outbox.c.id == outbox_id)
                .values(
                    attempts=email_outbox.c.attempts + 1,
                    sent_at=None if error else _now_ms(),
                    last_error=error,
                )
            )

    def _message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        return message


def _now_ms() -> int:
    return int(time.time() * 1000)
