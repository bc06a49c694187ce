"""Which SQL store a data directory belongs to.

The data directory holds the journal (every balance, by user id); the store holds the
accounts those ids name and the projection of the journal. Only the two together are an
exchange, so at its first boot the service gives the store a random id, kept in the store
(table ``store_identity``) and in the data directory (``store.json``, with the backend and
the URL without its password). Each later boot compares the two before anything is
created or migrated, and refuses a store that is not the data directory's own (say, a new
empty SQLite store because ``DATABASE_URL`` was forgotten) or a projection that is ahead of
the journal or was projected from another one. See docs/operations.md.

Like the rest of the package this module knows nothing of the journal: the caller passes
the journal's last seq and a look-up of a record's timestamp.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from mercato.store.database import create_engine
from mercato.store.tables import projection_cursor, store_identity

log = logging.getLogger(__name__)

IDENTITY_FILE: Final = "store.json"

JournalTs = Callable[[int], int | None]
"""The timestamp of the journal record with this seq, or None if the journal lacks it."""


class StoreIdentityError(RuntimeError):
    """The configured store is not the data directory's; the message says how to fix it."""


@dataclass(frozen=True)
class RecordedStore:
    """What the data directory says about its store (``store.json``)."""

    store_id: str
    backend: str  # "sqlite" or "postgresql"
    database: str  # its URL, password hidden


@dataclass(frozen=True)
class StoreFacts:
    """What the configured store holds, read without creating or changing anything."""

    store_id: str | None  # None: never claimed (new, or older than revision 0005)
    cursors: dict[str, tuple[int, int]]  # projection -> (last seq, its timestamp)


def shown(url: str) -> str:
    """``url`` with its password hidden, for messages and ``store.json``."""
    return make_url(url).render_as_string(hide_password=True)


def read_recorded(data_dir: Path) -> RecordedStore | None:
    path = data_dir / IDENTITY_FILE
    try:
        return RecordedStore(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise StoreIdentityError(f"{path} is damaged ({error}); restore it from a backup") from None


def _read(connection: Connection) -> StoreFacts:
    tables = sa.inspect(connection)
    store_id = None
    if tables.has_table(store_identity.name):
        store_id = connection.execute(sa.select(store_identity.c.store_id)).scalar()
    cursors: dict[str, tuple[int, int]] = {}
    if tables.has_table(projection_cursor.name):
        columns = projection_cursor.c
        for name, seq, ts in connection.execute(
            sa.select(columns.name, columns.last_seq, columns.last_ts)
        ):
            cursors[name] = (seq, ts)
    return StoreFacts(store_id, cursors)


async def read_store(url: str) -> StoreFacts:
    """The store's id and projection cursors; read-only. A SQLite file that does not exist
    is an empty store and is not created. Raises StoreIdentityError if it cannot be read
    (PostgreSQL down, no such database, wrong password)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return StoreFacts(None, {})
    engine = create_engine(url, sqlite_begin="DEFERRED")
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read)
    except (OSError, SQLAlchemyError) as error:
        reason = str(error).splitlines()[0]  # not SQLAlchemy's "Background on this error" line
        raise StoreIdentityError(f"cannot read the store at {shown(url)}: {reason}") from None
    finally:
        await engine.dispose()


def verify(
    data_dir: Path,
    recorded: RecordedStore | None,
    store: StoreFacts,
    configured: str,
    journal_last_seq: int,
    journal_ts: JournalTs,
) -> None:
    """Raise StoreIdentityError unless ``store`` (``configured`` describes it) belongs to
    the data directory whose journal ends at ``journal_last_seq``.

    With ``store.json``: the store must carry its id. Without it (the first boot, or a
    data directory older than the identity) the store is adopted if it fits the journal:
    an empty journal fits any store; a non-empty one needs a store that has projected it.
    Either way no projection may be ahead of the journal or disagree with it on the
    timestamp of its last command (a different history)."""
    if recorded is not None and store.store_id != recorded.store_id:
        found = "has no store id" if store.store_id is None else f"is store {store.store_id}"
        fix = f"DATABASE_URL={recorded.database}"
        if recorded.backend == "sqlite":
            fix = f"DATABASE_URL unset (the SQLite store in the data directory) or {fix}"
        raise StoreIdentityError(
            f"data directory {data_dir} belongs to the {recorded.backend} store "
            f"{recorded.store_id} at {recorded.database}, but the configured store, "
            f"{configured}, {found}: start with {fix}, or give the --data-dir of this store"
        )
    if recorded is None and journal_last_seq and not store.cursors:
        raise StoreIdentityError(
            f"the journal of {data_dir} holds {journal_last_seq} commands but the configured "
            f"store, {configured}, never projected any: it is not this exchange's store "
            "(its accounts would be missing); set DATABASE_URL to the store this data "
            "directory was used with"
        )
    for name, (seq, ts) in sorted(store.cursors.items()):
        if seq > journal_last_seq:
            raise StoreIdentityError(
                f"projection {name!r} of the configured store, {configured}, is at seq "
                f"{seq} but the journal of {data_dir} ends at seq {journal_last_seq}: the "
                "data directory was restored from an older backup than the store, or "
                "belongs to another store; restore the matching pair"
            )
        journal_ts_at_seq = journal_ts(seq) if seq else None
        if journal_ts_at_seq is not None and journal_ts_at_seq != ts:
            raise StoreIdentityError(
                f"projection {name!r} of the configured store, {configured}, projected a "
                f"different history: its command {seq} is from {ts}, the journal's from "
                f"{journal_ts_at_seq} (ms); it is not this data directory's store"
            )


async def claim(url: str, data_dir: Path) -> str:
    """Give the (migrated) store an id if it has none, record it in the data directory if
    not yet, and return it. Call after :func:`verify` passed."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
            await connection.execute(
                insert(store_identity)
                .values(id=1, store_id=uuid.uuid4().hex, created_at=int(time.time() * 1000))
                .on_conflict_do_nothing(index_elements=["id"])
            )
            store_id = (await connection.execute(sa.select(store_identity.c.store_id))).scalar_one()
    finally:
        await engine.dispose()
    if read_recorded(data_dir) is None:
        backend = make_url(url).get_backend_name()
        _write_atomically(data_dir / IDENTITY_FILE, RecordedStore(store_id, backend, shown(url)))
        log.info("data directory %s now belongs to the %s store %s", data_dir, backend, store_id)
    return str(store_id)


def _write_atomically(path: Path, recorded: RecordedStore) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as handle:
        json.dump(asdict(recorded), handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
