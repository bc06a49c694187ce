"""TOTP replay refusal and outbox retries: ``users.totp_last_step``;
``email_outbox.next_attempt_at`` (indexed) and ``failed_at``.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-22

Written by hand to match ``mercato.store.tables`` at this revision (the test suite compares
the migrated schema with the metadata on SQLite and PostgreSQL). Migrations are frozen
snapshots: they never import ``mercato.store.tables``.

Adding columns is a plain ``ALTER TABLE ... ADD COLUMN`` on both backends; the downgrade's
column drops rebuild the tables on SQLite (batch mode), keeping ``AUTOINCREMENT``. Messages
whose delivery failed before this revision become due at once, so the retry loop picks
them up.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MILLIS = sa.BigInteger()
KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    # Not in batch mode: SQLite adds a column with a constant default in place, where batch
    # mode would rebuild the table for a SQL-expression default.
    op.add_column(
        "users",
        sa.Column("totp_last_step", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    with op.batch_alter_table("email_outbox") as batch:
        batch.add_column(sa.Column("next_attempt_at", MILLIS, nullable=True))
        batch.add_column(sa.Column("failed_at", MILLIS, nullable=True))
        batch.create_index(op.f("ix_email_outbox_next_attempt_at"), ["next_attempt_at"])
    op.execute(
        "UPDATE email_outbox SET next_attempt_at = created_at "
        "WHERE sent_at IS NULL AND attempts > 0"
    )


def downgrade() -> None:
    # Dropping columns rebuilds the tables on SQLite: keep AUTOINCREMENT (ids never reused).
    with op.batch_alter_table("email_outbox", table_kwargs=KEEP) as batch:
        batch.drop_index(op.f("ix_email_outbox_next_attempt_at"))
        batch.drop_column("failed_at")
        batch.drop_column("next_attempt_at")
    with op.batch_alter_table("users", table_kwargs=KEEP) as batch:
        batch.drop_column("totp_last_step")
