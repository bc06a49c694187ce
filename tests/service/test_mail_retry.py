"""The service retries undelivered mail in the background (in-process, both stores).

The retry interval and the mailer's clock are moved so the test takes a second, not
the half minute of the first real backoff step; everything else is the real service:
store, migrations, sequencer, and a real SMTP server that comes up after the failure.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from auth.smtp_server import free_port, smtp_server, wait_until
from mercato import service as service_module
from mercato.config import load_config
from mercato.service import ExchangeService
from mercato.store import create_engine
from mercato.store.tables import email_outbox


def test_the_service_retries_failed_mail_until_it_is_delivered(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAIL_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(service_module, "tune_gc", lambda: None)  # process-wide: not here
    port = free_port()  # nothing listens yet
    env = {"DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
           "SMTP_STARTTLS": "false"}  # fmt: skip
    config = load_config(env=env, data_dir=str(tmp_path / "data"))

    async def scenario() -> None:
        service = ExchangeService(config, env={})
        await service.start()
        try:
            assert service.mailer is not None and service.database is not None
            await service.mailer.send("ann@example.com", "Verify", "token")
            with smtp_server(port) as inbox:
                await asyncio.sleep(0.3)  # several passes: the retry is not due yet
                assert inbox.messages == []
                service.mailer.clock = lambda: int(time.time() * 1000) + 31_000
                await wait_until(lambda: inbox.subjects == ["Verify"], seconds=10)
                await asyncio.sleep(0.3)  # the pass records the delivery; no second copy
                assert inbox.subjects == ["Verify"]
        finally:
            await service.stop()
        assert service._mail_task is not None and service._mail_task.cancelled()
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                row = (await connection.execute(select(email_outbox))).one()
        finally:
            await engine.dispose()
        assert (row.attempts, row.last_error, row.next_attempt_at) == (2, None, None)
        assert row.sent_at is not None

    asyncio.run(scenario())
