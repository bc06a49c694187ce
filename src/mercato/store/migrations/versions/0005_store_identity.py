"""Store identity: the id that ties a store to its data directory.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

One row (``id`` = 1), written by the service at its first boot on this revision, not by the
migration: the service records the same id in the data directory (``store.json``) and
checks both at every boot before it migrates anything (docs/operations.md). The downgrade
drops the table; the next boot on this revision adopts the store again if it fits the
journal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "store_identity",
        sa.Column("id", ID, autoincrement=False, nullable=False),
        sa.Column("store_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_identity_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_identity")),
    )


def downgrade() -> None:
    op.drop_table("store_identity")
