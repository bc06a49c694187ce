"""Engines and migrations for the SQL store (SQLite through aiosqlite, PostgreSQL through
asyncpg).

Migrations are Alembic scripts shipped inside the package (``mercato/store/migrations``);
:func:`migrate` applies them programmatically, without an ``alembic.ini``. See
docs/store.md.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = [
    "MIGRATIONS_LOCATION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "MigrationError",
    "SqliteBegin",
    "alembic_config",
    "create_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrate",
    "migration_connection",
    "normalise_url",
    "sqlite_url",
]

#: Alembic ``script_location`` of the migrations shipped in the package.
MIGRATIONS_LOCATION: Final = "mercato.store:migrations"
#: How long a SQLite statement waits for another connection's lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 5_000
#: Migrations wait longer: a second process starting up waits for the first to finish.
SQLITE_MIGRATION_BUSY_TIMEOUT_MS: Final = 60_000
#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate`` calls
#: (the bytes ``mercato1`` read as a signed 64-bit integer).
PG_MIGRATION_LOCK_KEY: Final = int.from_bytes(b"mercato1", "big", signed=True)

#: How a SQLite transaction starts: ``IMMEDIATE`` takes the write lock at BEGIN, so a
#: read-then-write transaction waits for other writers (up to the busy timeout) instead of
#: failing with "database is locked" when it tries to write; ``DEFERRED`` lets read-only
#: transactions run alongside a writer.
SqliteBegin = Literal["DEFERRED", "IMMEDIATE"]

_DRIVERS: Final = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
#: Plain URLs (what libpq, Heroku, and most hosting providers hand out) -> the async driver.
_PLAIN: Final = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


class MigrationError(RuntimeError):
    """The database did not end up at the expected revision, or a migration broke a
    foreign key (SQLite)."""


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite+aiosqlite:///`` URL of the database file at ``path`` (made absolute, so
    the URL does not depend on the working directory later; characters that mean
    something in a URL are escaped). ``":memory:"`` stays an in-memory database."""
    database = os.fspath(path)
    if database == ":memory:":
        return "sqlite+aiosqlite:///:memory:"
    url = URL.create("sqlite+aiosqlite", database=str(Path(database).absolute()))
    return url.render_as_string(hide_password=False)


def normalise_url(url: str) -> str:
    """``url`` for the driver Mercato runs on: ``postgresql://`` and ``postgres://`` become
    ``postgresql+asyncpg://``, ``sqlite://`` becomes ``sqlite+aiosqlite://``. Raises
    ValueError (its message never shows the password) for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL (e.g. postgresql://USER@HOST/DB)") from None
    parsed = parsed.set(drivername=_PLAIN.get(parsed.drivername, parsed.drivername))
    _backend(parsed.render_as_string(hide_password=False))
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, sqlite_begin: SqliteBegin = "IMMEDIATE") -> AsyncEngine:
    """An async engine for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` ``url``.

    SQLite connections are set up on connect: WAL journal mode, ``foreign_keys=ON``,
    ``busy_timeout`` of :data:`SQLITE_BUSY_TIMEOUT_MS`; SQLAlchemy emits ``BEGIN
    {sqlite_begin}`` itself (the sqlite3 module's legacy transaction control would leave
    SELECTs and DDL outside the transaction). PostgreSQL engines check a pooled
    connection before handing it out (``pool_pre_ping``).
    """
    return _create_engine(
        url,
        sqlite_foreign_keys=True,
        sqlite_begin=sqlite_begin,
        sqlite_busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS,
    )


def _backend(url: str) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = _DRIVERS.get(backend)
    if driver is None or parsed.get_driver_name() != driver:
        raise ValueError(
            f"unsupported database URL {parsed.render_as_string()!r}: "
            "use postgresql://USER@HOST/DB (or postgresql+asyncpg://) or sqlite:///PATH"
        )
    return backend


def _create_engine(
    url: str,
    *,
    sqlite_foreign_keys: bool,
    sqlite_begin: SqliteBegin,
    sqlite_busy_timeout_ms: int,
) -> AsyncEngine:
    if _backend(url) == "postgresql":
        return create_async_engine(url, pool_pre_ping=True)

    engine = create_async_engine(url)
    foreign_keys = "ON" if sqlite_foreign_keys else "OFF"

    def on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
        # Take transaction control away from the sqlite3 module; on_begin emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first, so that switching to WAL waits for other connections.
            cursor.execute(f"PRAGMA busy_timeout = {int(sqlite_busy_timeout_ms)}")
            cursor.execute(f"PRAGMA foreign_keys = {foreign_keys}")
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(f"BEGIN {sqlite_begin}")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
    return engine


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration for the migrations shipped in the package, built in code (no
    ``alembic.ini``). ``url``, if given, becomes ``sqlalchemy.url`` (used by env.py when
    no connection is passed in ``config.attributes["connection"]``)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_LOCATION)
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError("no migrations found")
    return head


# Alembic's `context` and `op` are process-wide proxies: two migrations interleaving in one
# process (coroutines on one event loop, or threads) would run each other's operations, even
# on different databases. One at a time, then.
_ALEMBIC_LOCK: Final = threading.Lock()


@asynccontextmanager
async def _alembic_turn() -> AsyncIterator[None]:
    # Polls rather than blocking a thread, so that cancelling the wait cannot leak the lock.
    while not _ALEMBIC_LOCK.acquire(blocking=False):
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        _ALEMBIC_LOCK.release()


@asynccontextmanager
async def migration_connection(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection inside one transaction, locked against concurrent migrations, for
    running Alembic on; the transaction commits when the block exits without an error.
    Within a process, one migration connection is open at a time (Alembic's ``context``
    and ``op`` are process-wide).

    PostgreSQL: ``pg_advisory_xact_lock`` (DDL is transactional, so a failed migration
    leaves nothing behind). SQLite: ``BEGIN IMMEDIATE`` takes the write lock (a second
    process waits up to a minute), with ``foreign_keys=OFF`` as SQLite's documented
    table-rebuild procedure requires (dropping a rebuilt parent table with foreign keys on
    would delete or reject its children); ``PRAGMA foreign_key_check`` must come back
    empty before the commit.
    """
    engine = _create_engine(
        url,
        sqlite_foreign_keys=False,
        sqlite_begin="IMMEDIATE",
        sqlite_busy_timeout_ms=SQLITE_MIGRATION_BUSY_TIMEOUT_MS,
    )
    try:
        async with _alembic_turn(), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY}
                )
            yield connection
            if connection.dialect.name == "sqlite":
                broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise MigrationError(f"migration left broken foreign keys: {broken[:10]}")
    finally:
        await engine.dispose()


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, target: str) -> str:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, target)
    revision = _revision(connection)
    if revision is None:
        raise MigrationError(f"upgrade to {target} left no revision")
    return revision


def _downgrade(connection: Connection, target: str) -> str | None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, target)
    return _revision(connection)


async def migrate(url: str) -> str:
    """Apply every migration up to head and return the head revision.

    Idempotent (a database at head is left alone) and safe to call from several processes
    starting at once. Raises if the database is at a revision these migrations do not know
    (for example written by a newer Mercato).
    """
    head = head_revision()
    async with migration_connection(url) as connection:
        revision = await connection.run_sync(_upgrade, "head")
    if revision != head:
        raise MigrationError(f"database at {revision} after upgrading to head {head}")
    return revision


async def downgrade(url: str, revision: str) -> str | None:
    """Run the downgrade migrations down to ``revision`` (``"base"``: drop everything) and
    return the revision the database is left at (None at base)."""
    async with migration_connection(url) as connection:
        return await connection.run_sync(_downgrade, revision)


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = create_engine(url, sqlite_begin="DEFERRED")
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_revision)
    finally:
        await engine.dispose()
