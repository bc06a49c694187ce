"""Engines and URLs: SQLite connection settings and transactions, URL checks, and the
``alembic`` command line documented in docs/store.md."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import mercato.store
from mercato.store import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    current_revision,
    head_revision,
    migrate,
    sqlite_url,
    users,
)

ALEMBIC_INI = Path(mercato.store.__file__).parent / "migrations" / "alembic.ini"


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(
    sqlite_database_url: str,
) -> None:
    async def pragmas() -> list[object]:
        engine = create_engine(sqlite_database_url)
        try:
            async with engine.connect() as connection:
                return [
                    (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout")
                ]
        finally:
            await engine.dispose()

    assert asyncio.run(pragmas()) == ["wal", 1, SQLITE_BUSY_TIMEOUT_MS]


def test_sqlite_read_then_write_transactions_wait_for_each_other(
    sqlite_database_url: str,
) -> None:
    """Two transactions that read a counter and write it back, overlapping in time: with
    BEGIN IMMEDIATE the second waits for the first, so neither fails with "database is
    locked" and no increment is lost (with sqlite3's default, the second would fail)."""

    async def increment(engine: sa.ext.asyncio.AsyncEngine, user_id: int) -> None:
        async with engine.begin() as connection:
            failed = (
                await connection.execute(
                    sa.select(users.c.failed_logins).where(users.c.id == user_id)
                )
            ).scalar_one()
            await asyncio.sleep(0.2)  # the other transaction starts meanwhile
            await connection.execute(
                users.update().where(users.c.id == user_id).values(failed_logins=failed + 1)
            )

    async def scenario() -> int:
        await migrate(sqlite_database_url)
        engine = create_engine(sqlite_database_url)
        try:
            async with engine.begin() as connection:
                user_id = (
                    await connection.execute(
                        users.insert()
                        .values(
                            email="a@example.com", password_hash="h", created_at=1, updated_at=1
                        )
                        .returning(users.c.id)
                    )
                ).scalar_one()
            await asyncio.gather(increment(engine, user_id), increment(engine, user_id))
            async with engine.connect() as connection:
                return (await connection.execute(sa.select(users.c.failed_logins))).scalar_one()
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == 2


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///store.db",
        "sqlite+pysqlite:///store.db",
        "postgresql://postgres@127.0.0.1/mercato",
        "postgresql+psycopg://postgres@127.0.0.1/mercato",
        "mysql+aiomysql://root@127.0.0.1/mercato",
    ],
)
def test_only_aiosqlite_and_asyncpg_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        create_engine(url)
    with pytest.raises(ValueError, match="unsupported database URL"):
        asyncio.run(migrate(url))


def test_sqlite_url_is_absolute_and_escapes_url_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = sqlite_url("odd ?#%@ name.db")
    assert url.startswith("sqlite+aiosqlite:////")
    assert sa.engine.make_url(url).database == str(tmp_path / "odd ?#%@ name.db")
    assert asyncio.run(migrate(url)) == head_revision()
    assert (tmp_path / "odd ?#%@ name.db").is_file()
    assert sqlite_url(":memory:") == "sqlite+aiosqlite:///:memory:"


def test_alembic_command_line_upgrades_and_finds_no_drift(sqlite_database_url: str) -> None:
    def alembic(*args: str) -> str:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(ALEMBIC_INI),
                "-x",
                f"url={sqlite_database_url}",
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return completed.stdout

    alembic("upgrade", "head")
    assert asyncio.run(current_revision(sqlite_database_url)) == head_revision()
    assert "(head)" in alembic("current")
    assert "No new upgrade operations detected" in alembic("check")
