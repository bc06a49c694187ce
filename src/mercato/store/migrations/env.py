"""Alembic environment of the Mercato SQL store.

Two ways in:

- ``mercato.store.migrate(url)`` (and ``downgrade``) open a locked migration connection
  and pass it in ``config.attributes["connection"]``; it is used as is, inside the
  caller's transaction.
- The ``alembic`` command line (``alembic -c src/mercato/store/migrations/alembic.ini
  -x url=... upgrade head``, see docs/store.md): the URL comes from ``-x url=...`` or
  ``sqlalchemy.url``, and env.py opens the same kind of locked async connection itself and
  runs the migrations through ``connection.run_sync``.

Logging is left alone: the application configures it.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from mercato.store.database import migration_connection
from mercato.store.tables import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "no database URL: pass -x url=sqlite+aiosqlite:///PATH "
            "(or postgresql+asyncpg://USER@HOST/DB)"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: autogenerate batch (copy-and-move) operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_own_connection(url: str) -> None:
    async with migration_connection(url) as connection:
        await connection.run_sync(_run)


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_on_own_connection(_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
