"""SQLAlchemy Core schema of the SQL store (accounts, sessions, API keys, audit).

Conventions:

- Every timestamp is a BIGINT of milliseconds since the Unix epoch (UTC), written by the
  application; the database never fills in a time by itself.
- Every ``id`` is a BIGINT autoincrement primary key (INTEGER on SQLite, where only an
  ``INTEGER PRIMARY KEY`` aliases the rowid). SQLite tables use ``AUTOINCREMENT`` so an id
  is never handed out twice, even after the newest row is deleted (``users.id`` is the user
  id the engine keys balances by); PostgreSQL sequences never reuse values anyway.
- Constraint and index names come from :data:`NAMING_CONVENTION`, so migrations can name
  what they alter or drop on both backends.

``migrations/versions/`` must create exactly this schema; ``tests/store`` checks that with
Alembic's ``compare_metadata`` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: ``one_time_tokens.purpose`` values.
PURPOSE_VERIFY_EMAIL: Final = "verify_email"
PURPOSE_RESET_PASSWORD: Final = "reset_password"
ONE_TIME_TOKEN_PURPOSES: Final[tuple[str, ...]] = (PURPOSE_VERIFY_EMAIL, PURPOSE_RESET_PASSWORD)

metadata: Final = MetaData(naming_convention=NAMING_CONVENTION)

#: Primary and foreign key type: BIGINT, INTEGER on SQLite (rowid alias, autoincrement).
ID_TYPE: Final[TypeEngine[int]] = BigInteger().with_variant(Integer(), "sqlite")
#: Milliseconds since the epoch, UTC.
MILLIS: Final[TypeEngine[int]] = BigInteger()


def _id() -> Column[int]:
    return Column("id", ID_TYPE, primary_key=True, autoincrement=True)


def _user_fk(*, nullable: bool = False, ondelete: str = "CASCADE") -> Column[int]:
    return Column(
        "user_id",
        ID_TYPE,
        ForeignKey("users.id", ondelete=ondelete),
        nullable=nullable,
    )


users: Final = Table(
    "users",
    metadata,
    _id(),
    Column("email", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False, server_default=text("'user'")),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("email_verified_at", MILLIS, nullable=True),
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", MILLIS, nullable=True),
    Column("totp_secret_enc", LargeBinary, nullable=True),
    Column("totp_enabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    # The newest TOTP time step (Unix time // 30) accepted for the user: a code of that
    # step or an earlier one is refused (replay). Added by 0002, hence after updated_at.
    Column("totp_last_step", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("email = lower(email)", name="email_lower"),
    sqlite_autoincrement=True,
)

refresh_tokens: Final = Table(
    "refresh_tokens",
    metadata,
    _id(),
    _user_fk(),
    Column("family_id", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", MILLIS, nullable=False),
    Column("expires_at", MILLIS, nullable=False),
    Column("rotated_at", MILLIS, nullable=True),
    Column("revoked_at", MILLIS, nullable=True),
    Column("ip", Text, nullable=False),
    Column("user_agent", Text, nullable=False),
    Index(None, "family_id"),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

one_time_tokens: Final = Table(
    "one_time_tokens",
    metadata,
    _id(),
    _user_fk(),
    Column("purpose", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", MILLIS, nullable=False),
    Column("expires_at", MILLIS, nullable=False),
    Column("used_at", MILLIS, nullable=True),
    CheckConstraint("purpose IN ('verify_email', 'reset_password')", name="purpose"),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

recovery_codes: Final = Table(
    "recovery_codes",
    metadata,
    _id(),
    _user_fk(),
    Column("code_hash", Text, nullable=False),
    Column("used_at", MILLIS, nullable=True),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

api_keys: Final = Table(
    "api_keys",
    metadata,
    _id(),
    _user_fk(),
    Column("key_id", Text, nullable=False, unique=True),
    Column("label", Text, nullable=False),
    Column("secret_enc", LargeBinary, nullable=False),
    Column("permissions", Text, nullable=False),
    Column("ip_allowlist", Text, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Column("last_used_at", MILLIS, nullable=True),
    Column("deleted_at", MILLIS, nullable=True),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

login_history: Final = Table(
    "login_history",
    metadata,
    _id(),
    _user_fk(nullable=True, ondelete="SET NULL"),
    Column("email", Text, nullable=False),
    Column("ip", Text, nullable=False),
    Column("user_agent", Text, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Index(None, "user_id", "created_at"),
    sqlite_autoincrement=True,
)

email_outbox: Final = Table(
    "email_outbox",
    metadata,
    _id(),
    Column("to_address", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Column("sent_at", MILLIS, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    # When the next delivery attempt is due (or, while one runs, when its claim lapses);
    # NULL once sent, given up, or when there is no SMTP to send to. Added by 0002.
    Column("next_attempt_at", MILLIS, nullable=True),
    Column("failed_at", MILLIS, nullable=True),  # delivery given up
    Index(None, "next_attempt_at"),
    sqlite_autoincrement=True,
)

# No foreign keys: the audit trail outlives the users it mentions.
audit_log: Final = Table(
    "audit_log",
    metadata,
    _id(),
    Column("user_id", ID_TYPE, nullable=True),
    Column("actor_id", ID_TYPE, nullable=True),
    Column("action", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("ip", Text, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Index(None, "created_at"),
    sqlite_autoincrement=True,
)
