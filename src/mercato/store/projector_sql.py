"""Writing a projection: a :class:`~mercato.store.projector_plan.Plan`'s rows and the
cursor into the SQL tables in one transaction, and the state behind the cursor back.

The I/O half of the projector (:mod:`mercato.store.projector`). Exactly once rests here:
:func:`move_cursor` moves the cursor from where a plan starts to where it ends inside the
transaction that writes the plan's rows (:func:`write_rows`), so the tables hold exactly
the commands up to the cursor after any crash. Rows go through the driver's bulk paths
(binary COPY and ``executemany``) with statements built once at import.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.core.candles import INTERVALS, Candle, open_time
from mercato.core.positions import Position
from mercato.store.order_rows import ORDER_COLUMNS, ORDER_MUTABLE_COLUMNS, open_order_states
from mercato.store.projector_plan import BalanceKey, Plan, Planner, ProjectionError
from mercato.store.tables import (
    candles,
    deposit_credits,
    fills,
    ledger_balances,
    ledger_entries,
    orders,
    positions,
    projection_cursor,
    trades,
)

log = logging.getLogger("mercato.store.projector")  # the projector's own log

#: Users per ``IN (...)`` when loading balances.
LOAD_CHUNK: Final = 500
#: Column order of the bulk inserts (database-generated ids left out).
TRADE_COLUMNS: Final = tuple(c.name for c in trades.c)
FILL_COLUMNS: Final = tuple(c.name for c in fills.c if c.name != "id")
ENTRY_COLUMNS: Final = tuple(c.name for c in ledger_entries.c if c.name != "id")
DEPOSIT_CREDIT_COLUMNS: Final = tuple(c.name for c in deposit_credits.c)


class CursorConflictError(ProjectionError):
    """The cursor in the database is not where this projector left it: another projector
    with the same name is writing. Fatal."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def load_state(db: AsyncEngine, name: str, planner: Planner) -> tuple[int, int]:
    """Create the projection's cursor if it has none; load the open orders and the
    current candles behind it into ``planner``; return (cursor seq, its timestamp)."""
    async with db.begin() as connection:
        insert = _dialect_insert(connection)
        await connection.execute(
            insert(projection_cursor)
            .values(name=name, last_seq=0, last_ts=0, updated_at=_now_ms())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = (
            await connection.execute(
                sa.select(projection_cursor.c.last_seq, projection_cursor.c.last_ts).where(
                    projection_cursor.c.name == name
                )
            )
        ).one()
        planner.open_orders = await open_order_states(connection)
        if row.last_ts:
            # Only the candle that holds the last projected time can still grow: every
            # later trade is at least that late (sequencer time never goes back).
            current = [
                sa.and_(
                    candles.c.interval == interval,
                    candles.c.open_time == open_time(row.last_ts, interval),
                )
                for interval in INTERVALS
            ]
            result = await connection.execute(sa.select(candles).where(sa.or_(*current)))
            for c in result.mappings():
                planner.candles[(c["market"], c["interval"])] = Candle(
                    c["market"], c["interval"], c["open_time"], c["open"], c["high"],
                    c["low"], c["close"], int(c["volume"]), int(c["quote_volume"]),
                    c["trades"], c["first_trade_id"], c["last_trade_id"],
                )  # fmt: skip
    return row.last_seq, row.last_ts


async def load_balances(db: AsyncEngine, planner: Planner, users: set[int]) -> None:
    """Seed ``planner`` with the running balances of ``users`` (0: the system accounts)
    and their positions, from the tables."""
    wanted = sorted(users - planner.loaded_users)
    found: dict[BalanceKey, int] = {}
    held: dict[tuple[int, str], Position] = {}
    async with db.begin() as connection:
        for start in range(0, len(wanted), LOAD_CHUNK):
            chunk = wanted[start : start + LOAD_CHUNK]
            result = await connection.execute(
                sa.select(
                    ledger_balances.c.user_id,
                    ledger_balances.c.asset,
                    ledger_balances.c.account,
                    ledger_balances.c.balance,
                ).where(ledger_balances.c.user_id.in_(chunk))
            )
            for user_id, asset, account, balance in result:
                found[(user_id, asset, account)] = balance
            rows = await connection.execute(
                sa.select(
                    positions.c.user_id,
                    positions.c.market,
                    positions.c.quantity,
                    positions.c.cost,
                    positions.c.realised,
                ).where(positions.c.user_id.in_(chunk))
            )
            for user_id, market, quantity, cost, realised in rows:
                held[(user_id, market)] = Position(quantity, int(cost), int(realised))
    planner.balances.update(found)
    planner.positions.update(held)
    planner.loaded_users.update(wanted)


async def move_cursor(connection: AsyncConnection, name: str, plan: Plan) -> bool:
    """Inside the plan's transaction, before its rows: move the cursor from where the plan
    starts to where it ends. False if an earlier attempt committed without us hearing of
    it (the connection failed during COMMIT): the cursor already stands at the plan's end
    and nothing must be written again. A cursor anywhere else is another writer."""
    moved = await connection.execute(
        _CURSOR_MOVE,
        {
            "projection": name,
            "prev_seq": plan.prev_seq,
            "new_seq": plan.last_seq,
            "new_ts": plan.last_ts,
            "now": _now_ms(),
        },
    )
    if moved.rowcount != 1:
        actual = (
            await connection.execute(
                sa.select(projection_cursor.c.last_seq).where(projection_cursor.c.name == name)
            )
        ).scalar_one_or_none()
        if plan.attempts > 1 and actual == plan.last_seq:
            log.warning(
                "projector %s: seq %d..%d was committed by an earlier attempt",
                name,
                plan.prev_seq + 1,
                plan.last_seq,
            )
            return False
        raise CursorConflictError(
            f"projection {name!r}: cursor is at {actual}, expected "
            f"{plan.prev_seq}: is another projector with this name running?"
        )
    return True


async def write_rows(connection: AsyncConnection, plan: Plan) -> None:
    """Every row of the plan, inside its transaction, after :func:`move_cursor`."""
    # The cursor UPDATE ran first, so the driver connection is inside the transaction.
    await _bulk_insert(connection, orders, ORDER_COLUMNS, plan.order_inserts)
    await _bulk_write(connection, _ORDER_UPDATE, plan.order_updates)
    await _bulk_insert(connection, trades, TRADE_COLUMNS, plan.trades)
    await _bulk_insert(connection, fills, FILL_COLUMNS, plan.fills)
    await _bulk_insert(connection, ledger_entries, ENTRY_COLUMNS, plan.entries)
    await _bulk_write(connection, _BALANCE_UPSERT, plan.balances)
    await _bulk_write(connection, _POSITION_UPSERT, plan.positions)
    await _bulk_write(connection, _CANDLE_UPSERT, plan.candles)
    # Plain inserts: the cursor moved in this transaction, so no credit is written twice.
    await _bulk_insert(connection, deposit_credits, DEPOSIT_CREDIT_COLUMNS, plan.deposit_credits)


async def _bulk_insert(
    connection: AsyncConnection,
    table: sa.Table,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order) inside the connection's transaction
    through the driver's bulk path: binary COPY on PostgreSQL (asyncpg), ``executemany``
    on SQLite. About 4x (PostgreSQL) and 1.5x (SQLite) the rows per second of the same
    INSERT through SQLAlchemy, whose per-row parameter handling dominates here. The
    transaction is still SQLAlchemy's: a failure rolls all of it back."""
    if not rows:
        return
    dialect = connection.dialect.name
    raw = (await connection.get_raw_connection()).driver_connection
    if dialect == "postgresql" and raw is not None:
        await raw.copy_records_to_table(table.name, records=rows, columns=columns)
    elif dialect == "sqlite" and raw is not None:
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        await raw.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
    else:
        await connection.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in rows])


def _dialect_insert(connection: AsyncConnection) -> Any:
    """``insert`` of the connection's dialect (both have ON CONFLICT)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


@dataclasses.dataclass(frozen=True, slots=True)
class _Statement:
    """One UPDATE or upsert in the SQL both SQLite and PostgreSQL speak, with ``?``
    placeholders (SQLite) and ``$n`` ones (asyncpg), made once at import: the live
    projection writes a small transaction every turn of the event loop, and building
    these through SQLAlchemy (column collections, ``excluded``, compilation) took more
    of the server's time than running them."""

    sqlite: str
    postgresql: str

    @classmethod
    def of(cls, sql: str, columns: tuple[str, ...]) -> _Statement:
        """``sql`` with ``{}`` where parameter i goes, i counted from 1."""
        numbered = sql.format(*(f"${i}" for i in range(1, len(columns) + 1)))
        return cls(sql.format(*("?" * len(columns))), numbered)


def _update_statement(table: sa.Table, key: str, columns: tuple[str, ...]) -> _Statement:
    assignments = ", ".join(f"{name} = {{}}" for name in columns)
    sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = {{}}"
    return _Statement.of(sql, (*columns, key))


def _upsert_statement(table: sa.Table, keys: tuple[str, ...]) -> _Statement:
    columns = tuple(c.name for c in table.c)
    names = ", ".join(f'"{name}"' for name in columns)  # "interval" is a keyword
    marks = ", ".join("{}" for _ in columns)
    updates = ", ".join(f'"{n}" = excluded."{n}"' for n in columns if n not in keys)
    conflict = ", ".join(f'"{name}"' for name in keys)
    sql = (
        f"INSERT INTO {table.name} ({names}) VALUES ({marks}) "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
    )
    return _Statement.of(sql, columns)


#: Moves a projection's cursor from where a plan starts to where it ends (0 rows: it stood
#: elsewhere). Built once: it runs in every transaction.
_CURSOR_MOVE: Final = (
    projection_cursor.update()
    .where(projection_cursor.c.name == sa.bindparam("projection"))
    .where(projection_cursor.c.last_seq == sa.bindparam("prev_seq"))
    .values(
        last_seq=sa.bindparam("new_seq"),
        last_ts=sa.bindparam("new_ts"),
        updated_at=sa.bindparam("now"),
    )
)
_ORDER_UPDATE: Final = _update_statement(orders, "order_id", ORDER_MUTABLE_COLUMNS)
_BALANCE_UPSERT: Final = _upsert_statement(ledger_balances, ("user_id", "asset", "account"))
_POSITION_UPSERT: Final = _upsert_statement(positions, ("user_id", "market"))
_CANDLE_UPSERT: Final = _upsert_statement(candles, ("market", "interval", "open_time"))


async def _bulk_write(
    connection: AsyncConnection, statement: _Statement, rows: list[tuple[Any, ...]]
) -> None:
    """Run ``statement`` once per row (tuples in its parameters' order) inside the
    connection's transaction, through the driver as :func:`_bulk_insert` does."""
    if not rows:
        return
    raw = (await connection.get_raw_connection()).driver_connection
    dialect = connection.dialect.name
    if dialect == "postgresql" and raw is not None:
        await raw.executemany(statement.postgresql, rows)
    elif dialect == "sqlite" and raw is not None:
        await raw.executemany(statement.sqlite, rows)
    else:
        raise ProjectionError(f"no bulk write for the {dialect} dialect")
