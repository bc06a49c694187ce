"""Trading projection: orders, trades, fills, ledger entries and balances, candles and the
projection cursor, written by ``mercato.store.projector`` from the engine's event stream.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-23

Written by hand to match ``mercato.store.tables`` at this revision (the test suite compares
the migrated schema with the metadata on SQLite and PostgreSQL). Migrations are frozen
snapshots: they never import ``mercato.store.tables``.

Only new tables: the upgrade creates them, the downgrade drops them (the projection is
rebuilt from the journal by the projector if the revision is applied again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT ids; INTEGER on SQLite so that a single-column primary key aliases the rowid.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MILLIS = sa.BigInteger()
INT = sa.BigInteger()  # engine integers: atoms, ticks, lots, ids, seqs


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", ID, primary_key=True, autoincrement=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("time_in_force", sa.Text(), nullable=False),
        sa.Column("client_order_id", sa.Text(), nullable=False),
        sa.Column("price", INT, nullable=False),
        sa.Column("stop_price", INT, nullable=False),
        sa.Column("quantity", INT, nullable=False),
        sa.Column("iceberg_quantity", INT, nullable=False),
        sa.Column("quote_quantity", INT, nullable=False),
        sa.Column("expire_at", MILLIS, nullable=False),
        sa.Column("stp", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("filled", INT, nullable=False),
        sa.Column("filled_base", INT, nullable=False),
        sa.Column("filled_quote", INT, nullable=False),
        sa.Column("fee", INT, nullable=False),
        sa.Column("fee_asset", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", MILLIS, nullable=False),
        sa.Column("updated_at", MILLIS, nullable=False),
        sa.Column("triggered_at", MILLIS, nullable=True),
        sa.Column("created_seq", INT, nullable=False),
        sa.Column("updated_seq", INT, nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
    )
    op.create_index(op.f("ix_orders_user_id_order_id"), "orders", ["user_id", "order_id"])
    op.create_index(
        op.f("ix_orders_user_id_client_order_id"), "orders", ["user_id", "client_order_id"]
    )
    op.create_index(op.f("ix_orders_status_user_id"), "orders", ["status", "user_id"])
    op.create_index(
        op.f("ix_orders_user_id_market_created_at"), "orders", ["user_id", "market", "created_at"]
    )

    op.create_table(
        "trades",
        sa.Column("trade_id", ID, primary_key=True, autoincrement=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("price", INT, nullable=False),
        sa.Column("quantity", INT, nullable=False),
        sa.Column("base_amount", INT, nullable=False),
        sa.Column("quote_amount", INT, nullable=False),
        sa.Column("taker_side", sa.Text(), nullable=False),
        sa.Column("maker_order_id", INT, nullable=False),
        sa.Column("taker_order_id", INT, nullable=False),
        sa.Column("ts", MILLIS, nullable=False),
        sa.Column("seq", INT, nullable=False),
        sa.PrimaryKeyConstraint("trade_id", name=op.f("pk_trades")),
    )
    op.create_index(op.f("ix_trades_market_trade_id"), "trades", ["market", "trade_id"])

    op.create_table(
        "fills",
        _id(),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("trade_id", INT, nullable=False),
        sa.Column("order_id", INT, nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("price", INT, nullable=False),
        sa.Column("quantity", INT, nullable=False),
        sa.Column("base_amount", INT, nullable=False),
        sa.Column("quote_amount", INT, nullable=False),
        sa.Column("fee", INT, nullable=False),
        sa.Column("fee_asset", sa.Text(), nullable=False),
        sa.Column("ts", MILLIS, nullable=False),
        sa.Column("seq", INT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("trade_id", "role", name=op.f("uq_fills_trade_id_role")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_fills_user_id_id"), "fills", ["user_id", "id"])
    op.create_index(op.f("ix_fills_user_id_market_ts"), "fills", ["user_id", "market", "ts"])

    op.create_table(
        "ledger_entries",
        _id(),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("delta", INT, nullable=False),
        sa.Column("balance_after", INT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ref", INT, nullable=False),
        sa.Column("seq", INT, nullable=False),
        sa.Column("ts", MILLIS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_ledger_entries_user_id_id"), "ledger_entries", ["user_id", "id"])
    op.create_index(
        op.f("ix_ledger_entries_user_id_asset_id"), "ledger_entries", ["user_id", "asset", "id"]
    )

    op.create_table(
        "ledger_balances",
        sa.Column("user_id", ID, nullable=False, autoincrement=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("balance", INT, nullable=False),
        sa.Column("updated_seq", INT, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "asset", "account", name=op.f("pk_ledger_balances")),
    )

    op.create_table(
        "candles",
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("interval", sa.Text(), nullable=False),
        sa.Column("open_time", MILLIS, nullable=False),
        sa.Column("open", INT, nullable=False),
        sa.Column("high", INT, nullable=False),
        sa.Column("low", INT, nullable=False),
        sa.Column("close", INT, nullable=False),
        sa.Column("volume", sa.Text(), nullable=False),
        sa.Column("quote_volume", sa.Text(), nullable=False),
        sa.Column("trades", INT, nullable=False),
        sa.Column("first_trade_id", INT, nullable=False),
        sa.Column("last_trade_id", INT, nullable=False),
        sa.PrimaryKeyConstraint("market", "interval", "open_time", name=op.f("pk_candles")),
    )
    op.create_index(op.f("ix_candles_interval_open_time"), "candles", ["interval", "open_time"])

    op.create_table(
        "projection_cursor",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_seq", INT, nullable=False),
        sa.Column("last_ts", MILLIS, nullable=False),
        sa.Column("updated_at", MILLIS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_projection_cursor")),
    )


def downgrade() -> None:
    op.drop_table("projection_cursor")
    op.drop_index(op.f("ix_candles_interval_open_time"), table_name="candles")
    op.drop_table("candles")
    op.drop_table("ledger_balances")
    op.drop_index(op.f("ix_ledger_entries_user_id_asset_id"), table_name="ledger_entries")
    op.drop_index(op.f("ix_ledger_entries_user_id_id"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_fills_user_id_market_ts"), table_name="fills")
    op.drop_index(op.f("ix_fills_user_id_id"), table_name="fills")
    op.drop_table("fills")
    op.drop_index(op.f("ix_trades_market_trade_id"), table_name="trades")
    op.drop_table("trades")
    op.drop_index(op.f("ix_orders_user_id_market_created_at"), table_name="orders")
    op.drop_index(op.f("ix_orders_status_user_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_user_id_client_order_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_user_id_order_id"), table_name="orders")
    op.drop_table("orders")
