"""The SQL store: accounts, sessions, one-time tokens, API keys, login history, email
outbox and audit log, on SQLite (aiosqlite) or PostgreSQL (asyncpg).

It depends on nothing else in Mercato. See docs/store.md for the tables, how migrations run
and how to add one.
"""

from mercato.store.database import (
    MIGRATIONS_LOCATION,
    SQLITE_BUSY_TIMEOUT_MS,
    MigrationError,
    SqliteBegin,
    alembic_config,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    migrate,
    migration_connection,
    sqlite_url,
)
from mercato.store.tables import (
    NAMING_CONVENTION,
    ONE_TIME_TOKEN_PURPOSES,
    PURPOSE_RESET_PASSWORD,
    PURPOSE_VERIFY_EMAIL,
    api_keys,
    audit_log,
    email_outbox,
    login_history,
    metadata,
    one_time_tokens,
    recovery_codes,
    refresh_tokens,
    users,
)

__all__ = [
    "MIGRATIONS_LOCATION",
    "NAMING_CONVENTION",
    "ONE_TIME_TOKEN_PURPOSES",
    "PURPOSE_RESET_PASSWORD",
    "PURPOSE_VERIFY_EMAIL",
    "SQLITE_BUSY_TIMEOUT_MS",
    "MigrationError",
    "SqliteBegin",
    "alembic_config",
    "api_keys",
    "audit_log",
    "create_engine",
    "current_revision",
    "downgrade",
    "email_outbox",
    "head_revision",
    "login_history",
    "metadata",
    "migrate",
    "migration_connection",
    "one_time_tokens",
    "recovery_codes",
    "refresh_tokens",
    "sqlite_url",
    "users",
]
