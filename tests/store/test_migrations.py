"""Migrations: what ``migrate`` creates, that it is idempotent and concurrency-safe, that it
matches ``mercato.store.tables``, and ``current_revision`` / ``downgrade``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from mercato.auth.users import email_skeleton
from mercato.core.positions import Position
from mercato.store import (
    alembic_config,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    metadata,
    migrate,
    migration_connection,
    sqlite_url,
    users,
)

# The schema as specified (independent of tables.py): table -> column -> nullable.
EXPECTED_COLUMNS: dict[str, dict[str, bool]] = {
    "users": {
        "id": False,
        "email": False,
        "password_hash": False,
        "role": False,
        "status": False,
        "email_verified_at": True,
        "failed_logins": False,
        "locked_until": True,
        "totp_secret_enc": True,
        "totp_enabled": False,
        "created_at": False,
        "updated_at": False,
        "totp_last_step": False,
        "email_skeleton": True,
    },
    "refresh_tokens": {
        "id": False,
        "user_id": False,
        "family_id": False,
        "token_hash": False,
        "created_at": False,
        "expires_at": False,
        "rotated_at": True,
        "revoked_at": True,
        "ip": False,
        "user_agent": False,
    },
    "one_time_tokens": {
        "id": False,
        "user_id": False,
        "purpose": False,
        "token_hash": False,
        "created_at": False,
        "expires_at": False,
        "used_at": True,
    },
    "recovery_codes": {"id": False, "user_id": False, "code_hash": False, "used_at": True},
    "api_keys": {
        "id": False,
        "user_id": False,
        "key_id": False,
        "label": False,
        "secret_enc": False,
        "permissions": False,
        "ip_allowlist": True,
        "created_at": False,
        "last_used_at": True,
        "deleted_at": True,
    },
    "login_history": {
        "id": False,
        "user_id": True,
        "email": False,
        "ip": False,
        "user_agent": False,
        "success": False,
        "reason": False,
        "created_at": False,
    },
    "email_outbox": {
        "id": False,
        "to_address": False,
        "subject": False,
        "body": False,
        "created_at": False,
        "sent_at": True,
        "attempts": False,
        "last_error": True,
        "next_attempt_at": True,
        "failed_at": True,
    },
    "audit_log": {
        "id": False,
        "user_id": True,
        "actor_id": True,
        "action": False,
        "detail": False,
        "ip": True,
        "created_at": False,
    },
    # 0003: the trading projection
    "orders": {
        "order_id": False,
        "user_id": False,
        "market": False,
        "side": False,
        "type": False,
        "time_in_force": False,
        "client_order_id": False,
        "price": False,
        "stop_price": False,
        "quantity": False,
        "iceberg_quantity": False,
        "quote_quantity": False,
        "expire_at": False,
        "stp": False,
        "status": False,
        "filled": False,
        "filled_base": False,
        "filled_quote": False,
        "fee": False,
        "fee_asset": True,
        "reason": False,
        "created_at": False,
        "updated_at": False,
        "triggered_at": True,
        "created_seq": False,
        "updated_seq": False,
    },
    "trades": {
        "trade_id": False,
        "market": False,
        "price": False,
        "quantity": False,
        "base_amount": False,
        "quote_amount": False,
        "taker_side": False,
        "maker_order_id": False,
        "taker_order_id": False,
        "ts": False,
        "seq": False,
    },
    "fills": {
        "id": False,
        "user_id": False,
        "trade_id": False,
        "order_id": False,
        "market": False,
        "side": False,
        "role": False,
        "price": False,
        "quantity": False,
        "base_amount": False,
        "quote_amount": False,
        "fee": False,
        "fee_asset": False,
        "ts": False,
        "seq": False,
    },
    "ledger_entries": {
        "id": False,
        "user_id": False,
        "asset": False,
        "account": False,
        "delta": False,
        "balance_after": False,
        "reason": False,
        "ref": False,
        "seq": False,
        "ts": False,
    },
    "ledger_balances": {
        "user_id": False,
        "asset": False,
        "account": False,
        "balance": False,
        "updated_seq": False,
    },
    "positions": {
        "user_id": False,
        "market": False,
        "quantity": False,
        "cost": False,
        "realised": False,
        "updated_seq": False,
    },
    "candles": {
        "market": False,
        "interval": False,
        "open_time": False,
        "open": False,
        "high": False,
        "low": False,
        "close": False,
        "volume": False,
        "quote_volume": False,
        "trades": False,
        "first_trade_id": False,
        "last_trade_id": False,
    },
    "projection_cursor": {
        "name": False,
        "last_seq": False,
        "last_ts": False,
        "updated_at": False,
    },
    # 0005: which store a data directory belongs to
    "store_identity": {"id": False, "store_id": False, "created_at": False},
    # 0007: custody (docs/custody.md)
    "custody_seed": {"id": False, "sealed": False, "fingerprint": False, "created_at": False},
    "custody_address_counters": {"chain": False, "role": False, "next_index": False},
    "custody_addresses": {
        "id": False,
        "chain": False,
        "role": False,
        "user_id": True,
        "derivation_index": False,
        "address": False,
        "created_at": False,
    },
    "custody_blocks": {
        "chain": False,
        "height": False,
        "hash": False,
        "parent_hash": False,
        "parent_height": False,
        "scanned_at": False,
    },
    "custody_deposits": {
        "id": False,
        "external_id": False,
        "chain": False,
        "txid": False,
        "tx_index": False,
        "asset": False,
        "user_id": True,
        "address": False,
        "from_address": False,
        "amount_chain": False,
        "amount": False,
        "dust_chain": False,
        "block_height": False,
        "block_hash": False,
        "status": False,
        "seen_at": False,
        "updated_at": False,
    },
    "deposit_credits": {
        "external_id": False,
        "user_id": False,
        "asset": False,
        "amount": False,
        "seq": False,
        "ts": False,
    },
    "custody_withdrawals": {
        "id": False,
        "withdrawal_id": False,
        "user_id": False,
        "asset": False,
        "chain": False,
        "address": False,
        "amount": False,
        "fee": False,
        "status": False,
        "hold_state": False,
        "approvals_required": False,
        "reason": True,
        "outgoing_id": True,
        "requested_at": False,
        "updated_at": False,
    },
    "custody_approvals": {
        "id": False,
        "withdrawal_id": False,
        "admin_id": False,
        "decision": False,
        "created_at": False,
    },
    "custody_address_book": {
        "id": False,
        "user_id": False,
        "chain": False,
        "address": False,
        "label": False,
        "created_at": False,
        "usable_at": False,
    },
    "custody_outgoing": {
        "id": False,
        "kind": False,
        "ref": False,
        "chain": False,
        "asset": False,
        "from_role": False,
        "from_index": False,
        "from_address": False,
        "to_address": False,
        "amount_chain": False,
        "status": False,
        "nonce": True,
        "txid": True,
        "fee_paid_chain": True,
        "mined_height": True,
        "created_at": False,
        "updated_at": False,
    },
    "custody_attempts": {
        "id": False,
        "outgoing_id": False,
        "chain": False,
        "txid": False,
        "raw": False,
        "nonce": True,
        "max_fee": False,
        "priority_fee": False,
        "gas_limit": False,
        "recent_blockhash": False,
        "valid_until": True,
        "created_at": False,
        "broadcast_at": True,
    },
    "custody_nonces": {"chain": False, "address": False, "next_nonce": False},
    "custody_alerts": {
        "id": False,
        "severity": False,
        "kind": False,
        "chain": False,
        "subject": False,
        "detail": False,
        "created_at": False,
        "acknowledged_at": True,
        "acknowledged_by": True,
    },
    "custody_withdrawal_holds": {
        "id": False,
        "user_id": False,
        "asset": False,
        "reason": False,
        "subject": False,
        "created_at": False,
        "released_at": True,
        "released_by": True,
    },
}
EXPECTED_UNIQUE = {
    "users": [["email"], ["email_skeleton"]],
    "refresh_tokens": [["token_hash"]],
    "one_time_tokens": [["token_hash"]],
    "api_keys": [["key_id"]],
    "fills": [["trade_id", "role"]],
    "custody_addresses": [
        ["chain", "address"],
        ["chain", "role", "derivation_index"],
        ["chain", "user_id"],
    ],
    "custody_deposits": [["external_id"]],
    "custody_withdrawals": [["withdrawal_id"]],
    "custody_approvals": [["withdrawal_id", "admin_id"]],
    "custody_address_book": [["user_id", "chain", "address"]],
    "custody_outgoing": [["kind", "ref"]],
    "custody_attempts": [["chain", "txid"]],
}
EXPECTED_INDEXES = {
    "refresh_tokens": [["family_id"], ["user_id"]],
    "one_time_tokens": [["user_id"]],
    "recovery_codes": [["user_id"]],
    "api_keys": [["user_id"]],
    "login_history": [["user_id", "created_at"]],
    "audit_log": [["created_at"]],
    "email_outbox": [["next_attempt_at"]],
    "orders": [
        ["status", "user_id"],
        ["user_id", "client_order_id"],
        ["user_id", "market", "created_at"],
        ["user_id", "order_id"],
    ],
    "trades": [["market", "trade_id"]],
    "fills": [["user_id", "id"], ["user_id", "market", "ts"]],
    "ledger_entries": [["user_id", "asset", "id"], ["user_id", "id"]],
    "candles": [["interval", "open_time"]],
    "custody_deposits": [["chain", "status"], ["user_id", "id"]],
    "custody_withdrawals": [["status"], ["user_id", "requested_at"]],
    "custody_outgoing": [["chain", "status"]],
    "custody_attempts": [["outgoing_id"]],
    "custody_alerts": [["acknowledged_at"]],
    "custody_withdrawal_holds": [["user_id", "asset"]],
}
EXPECTED_PK = {
    "orders": ["order_id"],
    "trades": ["trade_id"],
    "ledger_balances": ["user_id", "asset", "account"],
    "positions": ["user_id", "market"],
    "candles": ["market", "interval", "open_time"],
    "projection_cursor": ["name"],
    "store_identity": ["id"],
    "custody_address_counters": ["chain", "role"],
    "custody_blocks": ["chain", "height"],
    "deposit_credits": ["external_id"],
    "custody_nonces": ["chain", "address"],
}
#: Engine integers (atoms, ticks, lots, ids, seqs): BIGINT, so any int64 fits.
ENGINE_INT_COLUMNS = {
    ("orders", c) for c in ("price", "stop_price", "quantity", "iceberg_quantity",
                            "quote_quantity", "filled", "filled_base", "filled_quote", "fee",
                            "created_seq", "updated_seq")
} | {
    ("trades", c) for c in ("price", "quantity", "base_amount", "quote_amount",
                            "maker_order_id", "taker_order_id", "ts", "seq")
} | {
    ("fills", c) for c in ("trade_id", "order_id", "price", "quantity", "base_amount",
                           "quote_amount", "fee", "ts", "seq")
} | {
    ("ledger_entries", c) for c in ("delta", "balance_after", "ref", "seq", "ts")
} | {("ledger_balances", "balance"), ("ledger_balances", "updated_seq")} | {
    ("positions", "quantity"), ("positions", "updated_seq")
} | {
    ("candles", c) for c in ("open_time", "open", "high", "low", "close", "trades",
                             "first_trade_id", "last_trade_id")
} | {("projection_cursor", "last_seq"), ("projection_cursor", "last_ts")}  # fmt: skip
USER_FK_TABLES = {
    "refresh_tokens",
    "one_time_tokens",
    "recovery_codes",
    "api_keys",
    "login_history",
    "custody_address_book",
}
MILLIS_COLUMNS = {
    (table, column)
    for table, columns in EXPECTED_COLUMNS.items()
    for column in columns
    if column.endswith("_at") or column == "locked_until"
}


def _reflect(connection: Connection) -> dict[str, Any]:
    inspector = sa.inspect(connection)
    tables = {}
    for name in inspector.get_table_names():
        tables[name] = {
            "columns": {c["name"]: c for c in inspector.get_columns(name)},
            "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted(u["column_names"] for u in inspector.get_unique_constraints(name)),
            "indexes": sorted(  # PostgreSQL also lists the indexes behind UNIQUE constraints
                i["column_names"]
                for i in inspector.get_indexes(name)
                if not i.get("duplicates_constraint")
            ),
            "fks": [
                (f["constrained_columns"], f["referred_table"], f["referred_columns"])
                for f in inspector.get_foreign_keys(name)
            ],
        }
    return tables


async def reflect(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_reflect)
    finally:
        await engine.dispose()


def test_migrate_creates_every_table_with_the_expected_columns(database_url: str) -> None:
    assert asyncio.run(migrate(database_url)) == head_revision()
    tables = asyncio.run(reflect(database_url))
    is_sqlite = database_url.startswith("sqlite")

    assert set(tables) == {*EXPECTED_COLUMNS, "alembic_version"}
    for name, expected in EXPECTED_COLUMNS.items():
        table = tables[name]
        columns = {column: info["nullable"] for column, info in table["columns"].items()}
        assert columns == expected, name
        assert list(table["columns"]) == list(expected), f"{name}: column order"
        assert table["pk"] == EXPECTED_PK.get(name, ["id"]), name
        assert table["unique"] == EXPECTED_UNIQUE.get(name, []), name
        assert table["indexes"] == EXPECTED_INDEXES.get(name, []), name
        expected_fks = [(["user_id"], "users", ["id"])] if name in USER_FK_TABLES else []
        assert table["fks"] == expected_fks, name
        if table["pk"] not in (["id"], ["order_id"], ["trade_id"]):
            continue
        id_type = table["columns"][table["pk"][0]]["type"]
        if is_sqlite:  # INTEGER PRIMARY KEY: the rowid (autoincrementing for "id")
            assert type(id_type) is sa.INTEGER, name
        else:
            assert isinstance(id_type, sa.BigInteger), name
    for table, column in MILLIS_COLUMNS | ENGINE_INT_COLUMNS:
        assert isinstance(tables[table]["columns"][column]["type"], sa.BigInteger), (table, column)
    for table, column in (("candles", "volume"), ("candles", "quote_volume"),
                          ("positions", "cost"), ("positions", "realised")):  # fmt: skip
        # sums beyond int64: exact decimal text
        assert isinstance(tables[table]["columns"][column]["type"], sa.Text), (table, column)


def test_migrate_is_idempotent_and_keeps_data(database_url: str) -> None:
    async def scenario() -> tuple[str, str, str | None, list[str]]:
        first = await migrate(database_url)
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    users.insert().values(
                        email="alice@example.com", password_hash="h", created_at=1, updated_at=1
                    )
                )
            second = await migrate(database_url)
            async with engine.connect() as connection:
                emails = list((await connection.execute(sa.select(users.c.email))).scalars())
        finally:
            await engine.dispose()
        return first, second, await current_revision(database_url), emails

    first, second, current, emails = asyncio.run(scenario())
    assert first == second == current == head_revision()
    assert emails == ["alice@example.com"]


# Imports, then waits for a common start time so that the processes really overlap.
MIGRATE_AT = """
import asyncio, sys, time
from mercato.store import migrate
url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
print(asyncio.run(migrate(url)))
"""


def test_processes_migrating_one_database_at_once_all_succeed(database_url: str) -> None:
    """Several processes starting at once: the database lock (advisory lock on PostgreSQL,
    BEGIN IMMEDIATE on SQLite) lets one migrate; the others then find it at head."""
    start = str(time.time() + 2)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT, database_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in processes]
    for (out, err), returncode in results:
        assert returncode == 0, err
        assert out.strip() == head_revision()
    assert asyncio.run(current_revision(database_url)) == head_revision()


def test_concurrent_migrate_calls_on_different_databases_all_succeed(tmp_path: Path) -> None:
    """Alembic's ``context`` and ``op`` are process-wide: migrations in one process must not
    interleave even when their databases differ."""
    urls = [sqlite_url(tmp_path / f"{n}.db") for n in range(4)]

    async def scenario() -> list[str]:
        calls = asyncio.gather(*(migrate(url) for url in urls))
        return list(await asyncio.wait_for(calls, timeout=60))

    assert asyncio.run(scenario()) == [head_revision()] * 4
    for url in urls:
        assert set(asyncio.run(reflect(url))) == {*EXPECTED_COLUMNS, "alembic_version"}


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "compare_server_default": True, "target_metadata": metadata},
    )
    return list(compare_metadata(context, metadata))


def test_migration_matches_tables_metadata(database_url: str) -> None:
    async def scenario() -> list[Any]:
        await migrate(database_url)
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_differences)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == []


def test_compare_metadata_would_notice_a_difference(database_url: str) -> None:
    """The comparison above is not vacuous: a column missing from the database shows."""

    def drop_column(connection: Connection) -> list[Any]:
        from alembic.operations import Operations

        operations = Operations(MigrationContext.configure(connection))
        with operations.batch_alter_table("audit_log") as batch:
            batch.drop_column("ip")
        return _differences(connection)

    async def scenario() -> list[Any]:
        await migrate(database_url)
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(drop_column)
        finally:
            await engine.dispose()

    differences = asyncio.run(scenario())
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "audit_log", "ip")]


def test_current_revision_before_and_after_migrate(database_url: str) -> None:
    async def scenario() -> tuple[str | None, str, str | None]:
        before = await current_revision(database_url)
        head = await migrate(database_url)
        return before, head, await current_revision(database_url)

    before, head, after = asyncio.run(scenario())
    assert before is None
    assert head == after == head_revision() == "0007"


def test_downgrade_to_base_drops_every_table_and_migrate_recreates_them(
    database_url: str,
) -> None:
    async def scenario() -> tuple[str | None, set[str], str | None, set[str]]:
        await migrate(database_url)
        down = await downgrade(database_url, "base")
        after_down = set(await reflect(database_url))
        again = await migrate(database_url)
        return down, after_down, again, set(await reflect(database_url))

    down, after_down, again, after_again = asyncio.run(scenario())
    assert down is None
    assert after_down == {"alembic_version"}
    assert again == head_revision()
    assert after_again == {*EXPECTED_COLUMNS, "alembic_version"}


def _shape(connection: Connection) -> dict[str, Any]:
    """Everything a migration could get wrong about the tables, comparable across two
    databases: columns (name, nullability, default, type), keys, indexes, checks, and on
    SQLite whether the id is AUTOINCREMENT (never reused)."""
    inspector = sa.inspect(connection)
    shape: dict[str, Any] = {}
    for name in inspector.get_table_names():
        autoincrement = None
        if connection.dialect.name == "sqlite":
            (sql,) = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).one()
            autoincrement = "AUTOINCREMENT" in sql
        shape[name] = {
            "columns": sorted(
                (c["name"], c["nullable"], str(c.get("default")), repr(c["type"]))
                for c in inspector.get_columns(name)
            ),
            "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted(
                (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(name)
            ),
            "indexes": sorted((i["name"], i["column_names"]) for i in inspector.get_indexes(name)),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(name)
            ),
            "fks": sorted(
                (
                    f["name"],
                    f["constrained_columns"],
                    f["referred_table"],
                    f.get("options", {}).get("ondelete"),
                )
                for f in inspector.get_foreign_keys(name)
            ),
            "autoincrement": autoincrement,
        }
    return shape


async def _shape_of(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_shape)
    finally:
        await engine.dispose()


async def _upgrade_to(url: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with migration_connection(url) as connection:
        await connection.run_sync(run)


async def _downgrade_and_reference(
    database_url: str, tmp_path: Path, start: str | None, target: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Migrate to head (then down to ``start`` if given): the shape there, the shape after
    downgrading to ``target``, and the shape of a fresh store upgraded to ``target``."""
    await migrate(database_url)
    if start is not None:
        assert await downgrade(database_url, start) == start
    at_start = await _shape_of(database_url)
    assert await downgrade(database_url, target) == target
    downgraded = await _shape_of(database_url)
    if database_url.startswith("sqlite"):
        reference = sqlite_url(tmp_path / "reference.db")
    else:  # a second fresh PostgreSQL database would need the fixture twice: reuse this one
        await downgrade(database_url, "base")
        reference = database_url
    await _upgrade_to(reference, target)
    return at_start, downgraded, await _shape_of(reference)


def test_downgrading_0002_gives_back_the_0001_schema(database_url: str, tmp_path: Path) -> None:
    """0002's downgrade rebuilds tables on SQLite: nothing of 0001 may be lost on the way
    (AUTOINCREMENT, the CHECK on users.email, indexes, foreign keys)."""
    at_head, downgraded, reference = asyncio.run(
        _downgrade_and_reference(database_url, tmp_path, None, "0001")
    )
    assert downgraded == reference
    assert any(c[0] == "totp_last_step" for c in at_head["users"]["columns"])
    if database_url.startswith("sqlite"):
        assert all(t["autoincrement"] for n, t in downgraded.items() if n != "alembic_version")


def test_0002_makes_mail_that_failed_before_it_due_at_once(database_url: str) -> None:
    async def scenario() -> list[tuple[Any, ...]]:
        await migrate(database_url)
        await downgrade(database_url, "0001")
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                for subject, sent_at, attempts in (("sent", 5, 1), ("failed", None, 1),
                                                   ("logged only", None, 0)):  # fmt: skip
                    await connection.execute(
                        sa.text(
                            "INSERT INTO email_outbox (to_address, subject, body, created_at, "
                            "sent_at, attempts) VALUES ('a@example.com', :s, 'b', 1000, :t, :n)"
                        ),
                        {"s": subject, "t": sent_at, "n": attempts},
                    )
            await migrate(database_url)
            async with engine.connect() as connection:
                rows = await connection.execute(
                    sa.text(
                        "SELECT subject, next_attempt_at, failed_at FROM email_outbox ORDER BY id"
                    )
                )
                return [tuple(row) for row in rows]
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == [
        ("sent", None, None),
        ("failed", 1000, None),
        ("logged only", None, None),
    ]


def test_downgrading_0003_gives_back_the_0002_schema(database_url: str, tmp_path: Path) -> None:
    """0003 only adds the projection's tables: its downgrade drops them and leaves the
    0002 schema exactly (AUTOINCREMENT, checks, indexes, foreign keys)."""
    projection = {
        "orders",
        "trades",
        "fills",
        "ledger_entries",
        "ledger_balances",
        "positions",  # 0004, dropped on the way down too
        "candles",
        "projection_cursor",
        "store_identity",  # 0005, likewise
    }

    at_head, downgraded, reference = asyncio.run(
        _downgrade_and_reference(database_url, tmp_path, "0005", "0002")
    )
    assert projection <= set(at_head)
    assert not projection & set(downgraded)
    assert downgraded == reference
    assert {n: t for n, t in at_head.items() if n not in projection} == reference
    if database_url.startswith("sqlite"):
        assert at_head["fills"]["autoincrement"] and at_head["ledger_entries"]["autoincrement"]
        assert not at_head["orders"]["autoincrement"]  # the engine's ids, never generated


def test_downgrading_0005_gives_back_the_0004_schema(database_url: str, tmp_path: Path) -> None:
    """0005 only adds store_identity (0006, which changes users, is undone first)."""
    at_head, downgraded, reference = asyncio.run(
        _downgrade_and_reference(database_url, tmp_path, "0005", "0004")
    )
    assert "store_identity" in at_head and downgraded == reference
    assert {n: t for n, t in at_head.items() if n != "store_identity"} == reference


def test_0004_folds_the_fills_already_projected_into_positions(database_url: str) -> None:
    """A database that had fills before positions existed gets each user's position per
    market folded from them, in stream order, exactly as the projector would fold them."""
    fills = [  # user, market, side, base, quote, fee, seq
        (1, "BTC-USDT", "BUY", 300, 1000, 3, 1),
        (2, "BTC-USDT", "SELL", 300, 1000, 2, 1),
        (1, "BTC-USDT", "SELL", 100, 500, 5, 2),
        (1, "ETH-USDT", "SELL", 10, 70, 0, 3),  # nothing bought there: nothing realised
        (1, "BTC-USDT", "BUY", 50, 400, 0, 4),
        (1, "BTC-USDT", "SELL", 100, 900, 9, 5),
    ]

    async def scenario() -> list[tuple[Any, ...]]:
        await migrate(database_url)
        await downgrade(database_url, "0003")
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                for trade_id, (user, market, side, base, quote, fee, seq) in enumerate(fills):
                    await connection.execute(
                        sa.text(
                            "INSERT INTO fills (user_id, trade_id, order_id, market, side, role,"
                            " price, quantity, base_amount, quote_amount, fee, fee_asset, ts,"
                            " seq) VALUES (:u, :t, 1, :m, :s, 'TAKER', 1, 1, :b, :q, :f, 'X',"
                            " 0, :seq)"
                        ),
                        {"u": user, "t": trade_id, "m": market, "s": side, "b": base,
                         "q": quote, "f": fee, "seq": seq},
                    )  # fmt: skip
            await migrate(database_url)
            async with engine.connect() as connection:
                rows = await connection.execute(
                    sa.text(
                        "SELECT user_id, market, quantity, cost, realised, updated_seq"
                        " FROM positions ORDER BY user_id, market"
                    )
                )
                return [tuple(row) for row in rows]
        finally:
            await engine.dispose()

    expected = []
    for user, market in sorted({(f[0], f[1]) for f in fills}):
        mine = [f for f in fills if (f[0], f[1]) == (user, market)]
        position = Position()
        for _, _, side, base, quote, fee, _ in mine:
            position.add(side, base, quote, fee)
        expected.append((user, market, position.quantity, str(position.cost),
                         str(position.realised), mine[-1][6]))  # fmt: skip
    assert asyncio.run(scenario()) == expected
    # by hand: 297 for 1000; sell 100 takes 337 of cost for 495 (+158); buy 50 for 400;
    # sell 100 takes round(1063 * 100 / 247) = 430 for 891 (+461)
    assert expected[0][2:5] == (147, "633", "619")


def test_0006_gives_existing_users_skeletons_and_look_alikes_none(
    database_url: str, tmp_path: Path
) -> None:
    """Users registered before skeletons existed get theirs, in id order; a look-alike of
    an older user keeps the account without one. The downgrade gives back 0005 exactly."""
    emails = ["ann@example.com", "\u0430nn@example.com", "mary@example.com", "rnary@example.com"]

    async def scenario() -> tuple[list[tuple[Any, ...]], dict[str, Any], dict[str, Any]]:
        await migrate(database_url)
        await downgrade(database_url, "0005")
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                for email in emails:
                    await connection.execute(
                        sa.text("INSERT INTO users (email, password_hash, created_at, updated_at)"
                                " VALUES (:email, 'x', 0, 0)"), {"email": email},
                    )  # fmt: skip
            await migrate(database_url)
            async with engine.connect() as connection:
                query = sa.text("SELECT email, email_skeleton FROM users ORDER BY id")
                rows = [tuple(row) for row in await connection.execute(query)]
        finally:
            await engine.dispose()
        await downgrade(database_url, "0005")
        downgraded = await _shape_of(database_url)
        if database_url.startswith("sqlite"):
            reference = sqlite_url(tmp_path / "reference.db")
        else:
            await downgrade(database_url, "base")
            reference = database_url
        await _upgrade_to(reference, "0005")
        return rows, downgraded, await _shape_of(reference)

    rows, downgraded, reference = asyncio.run(scenario())
    assert rows == [
        ("ann@example.com", email_skeleton("ann@example.com")),
        ("\u0430nn@example.com", None),  # Cyrillic a: looks like ann's, who came first
        ("mary@example.com", email_skeleton("mary@example.com")),
        ("rnary@example.com", None),  # r and n for the m
    ]
    assert downgraded == reference
