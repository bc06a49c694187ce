"""Custody: seed, addresses, scanned blocks, deposits and their credits, withdrawals with
approvals and the address book, outgoing transfers with every signed attempt, the EVM
nonce allocator, alerts and withdrawal holds (docs/custody.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

New tables only; the downgrade drops them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "custody_address_counters",
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("next_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "role", name=op.f("pk_custody_address_counters")),
    )
    op.create_table(
        "custody_addresses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("derivation_index", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_addresses")),
        sa.UniqueConstraint("chain", "address", name=op.f("uq_custody_addresses_chain_address")),
        sa.UniqueConstraint(
            "chain",
            "role",
            "derivation_index",
            name=op.f("uq_custody_addresses_chain_role_derivation_index"),
        ),
        sa.UniqueConstraint("chain", "user_id", name=op.f("uq_custody_addresses_chain_user_id")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "custody_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_at", sa.BigInteger(), nullable=True),
        sa.Column(
            "acknowledged_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_alerts")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custody_alerts_acknowledged_at"), ["acknowledged_at"], unique=False
        )

    op.create_table(
        "custody_approvals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("withdrawal_id", sa.Text(), nullable=False),
        sa.Column("admin_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_approvals")),
        sa.UniqueConstraint(
            "withdrawal_id", "admin_id", name=op.f("uq_custody_approvals_withdrawal_id_admin_id")
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "custody_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "outgoing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("max_fee", sa.Text(), nullable=False),
        sa.Column("priority_fee", sa.Text(), nullable=False),
        sa.Column("gas_limit", sa.BigInteger(), nullable=False),
        sa.Column("recent_blockhash", sa.Text(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("broadcast_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_attempts")),
        sa.UniqueConstraint("chain", "txid", name=op.f("uq_custody_attempts_chain_txid")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custody_attempts_outgoing_id"), ["outgoing_id"], unique=False
        )

    op.create_table(
        "custody_blocks",
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("height", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("parent_hash", sa.Text(), nullable=False),
        sa.Column("parent_height", sa.BigInteger(), nullable=False),
        sa.Column("scanned_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "height", name=op.f("pk_custody_blocks")),
    )
    op.create_table(
        "custody_deposits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("txid", sa.Text(), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("amount_chain", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("dust_chain", sa.Text(), nullable=False),
        sa.Column("block_height", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_deposits")),
        sa.UniqueConstraint("external_id", name=op.f("uq_custody_deposits_external_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_deposits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custody_deposits_chain_status"), ["chain", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_custody_deposits_user_id_id"), ["user_id", "id"], unique=False
        )

    op.create_table(
        "custody_nonces",
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "address", name=op.f("pk_custody_nonces")),
    )
    op.create_table(
        "custody_outgoing",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("from_role", sa.Text(), nullable=False),
        sa.Column("from_index", sa.BigInteger(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("to_address", sa.Text(), nullable=False),
        sa.Column("amount_chain", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("txid", sa.Text(), nullable=True),
        sa.Column("fee_paid_chain", sa.Text(), nullable=True),
        sa.Column("mined_height", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_outgoing")),
        sa.UniqueConstraint("kind", "ref", name=op.f("uq_custody_outgoing_kind_ref")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_outgoing", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custody_outgoing_chain_status"), ["chain", "status"], unique=False
        )

    op.create_table(
        "custody_seed",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_seed")),
    )
    op.create_table(
        "custody_withdrawal_holds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("released_at", sa.BigInteger(), nullable=True),
        sa.Column(
            "released_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_withdrawal_holds")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_withdrawal_holds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custody_withdrawal_holds_user_id_asset"),
            ["user_id", "asset"],
            unique=False,
        )

    op.create_table(
        "custody_withdrawals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("withdrawal_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("hold_state", sa.Text(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "outgoing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_withdrawals")),
        sa.UniqueConstraint("withdrawal_id", name=op.f("uq_custody_withdrawals_withdrawal_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("custody_withdrawals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_custody_withdrawals_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_custody_withdrawals_user_id_requested_at"),
            ["user_id", "requested_at"],
            unique=False,
        )

    op.create_table(
        "deposit_credits",
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("external_id", name=op.f("pk_deposit_credits")),
    )
    op.create_table(
        "custody_address_book",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("usable_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_custody_address_book_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_address_book")),
        sa.UniqueConstraint(
            "user_id",
            "chain",
            "address",
            name=op.f("uq_custody_address_book_user_id_chain_address"),
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("custody_address_book")
    op.drop_table("deposit_credits")
    with op.batch_alter_table("custody_withdrawals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_withdrawals_user_id_requested_at"))
        batch_op.drop_index(batch_op.f("ix_custody_withdrawals_status"))

    op.drop_table("custody_withdrawals")
    with op.batch_alter_table("custody_withdrawal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_withdrawal_holds_user_id_asset"))

    op.drop_table("custody_withdrawal_holds")
    op.drop_table("custody_seed")
    with op.batch_alter_table("custody_outgoing", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_outgoing_chain_status"))

    op.drop_table("custody_outgoing")
    op.drop_table("custody_nonces")
    with op.batch_alter_table("custody_deposits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_deposits_user_id_id"))
        batch_op.drop_index(batch_op.f("ix_custody_deposits_chain_status"))

    op.drop_table("custody_deposits")
    op.drop_table("custody_blocks")
    with op.batch_alter_table("custody_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_attempts_outgoing_id"))

    op.drop_table("custody_attempts")
    op.drop_table("custody_approvals")
    with op.batch_alter_table("custody_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_alerts_acknowledged_at"))

    op.drop_table("custody_alerts")
    op.drop_table("custody_addresses")
    op.drop_table("custody_address_counters")
