"""Fixtures for the SQL store tests: ``database_url`` runs a test on SQLite (a temporary
file) and on PostgreSQL (a fresh database with a random name, dropped afterwards).

PostgreSQL is reached as ``MERCATO_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, a superuser with trust auth). If it is
unreachable the PostgreSQL cases skip, or fail when ``MERCATO_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from mercato.store import migrate, sqlite_url
from services import require_service

POSTGRES_ADMIN_DSN = os.environ.get(
    "MERCATO_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@functools.cache
def postgres_reachable() -> tuple[bool, str]:
    """Whether the admin DSN accepts a connection (checked once per test session)."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        where = make_url(POSTGRES_ADMIN_DSN).render_as_string()
        return False, f"cannot connect to {where}: {type(error).__name__}: {error}"
    return True, ""


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database with a random name, dropped (even if still in use)
    on exit; yields its ``postgresql+asyncpg://`` URL. Skips, or fails when
    ``MERCATO_REQUIRE_SERVICES=1``, if PostgreSQL is unreachable."""
    reachable, reason = postgres_reachable()
    require_service("postgres", reachable, reason)
    name = f"mercato_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(POSTGRES_ADMIN_DSN)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database (never migrated) on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "store.db")
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    """URL of an empty SQLite database, for the SQLite-only tests."""
    return sqlite_url(tmp_path / "store.db")


@pytest.fixture
def migrated(database_url: str) -> str:
    """``database_url`` with every migration applied."""
    asyncio.run(migrate(database_url))
    return database_url
