"""Deposit addresses, assigned once per user per chain, and the hot wallets.

An index is handed out by incrementing ``custody_address_counters`` in the transaction
that stores the address, so indexes are gapless (wallet software scanning the tree with
a gap limit recovers every address): a first call that loses a race to another first
call for the same user rolls back, counter increment included, and returns the
winner's address (the unique (chain, user_id) constraint decides who won).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.custody.chains.base import ChainKind, KeyRef, Signer
from mercato.store.tables import custody_address_counters, custody_addresses


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _existing(db: AsyncEngine, chain: str, role: str, user_id: int | None) -> str | None:
    owner = (
        custody_addresses.c.user_id.is_(None)
        if user_id is None
        else custody_addresses.c.user_id == user_id
    )
    async with db.connect() as connection:
        found = await connection.execute(
            sa.select(custody_addresses.c.address).where(
                custody_addresses.c.chain == chain, custody_addresses.c.role == role, owner
            )
        )
        return found.scalar_one_or_none()


async def _next_index(connection: AsyncConnection, chain: str, role: str) -> int:
    """Take the next index of (chain, role) inside the caller's transaction; the counter
    row stays locked until it ends (PostgreSQL), so concurrent takers queue."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(custody_address_counters)
        .values(chain=chain, role=role, next_index=1)
        .on_conflict_do_update(
            index_elements=["chain", "role"],
            set_={"next_index": custody_address_counters.c.next_index + 1},
        )
        .returning(custody_address_counters.c.next_index)
    )
    return int((await connection.execute(statement)).scalar_one()) - 1


async def deposit_address(
    db: AsyncEngine, signer: Signer, chain_kind: ChainKind, chain: str, user_id: int
) -> str:
    """The user's deposit address on ``chain``: the stored one, or a new one from the
    next index of the chain's counter."""
    found = await _existing(db, chain, "deposit", user_id)
    if found is not None:
        return found
    try:
        async with db.begin() as connection:
            index = await _next_index(connection, chain, "deposit")
            address = signer.address(KeyRef(chain_kind, "deposit", index))
            await connection.execute(
                custody_addresses.insert().values(
                    chain=chain,
                    role="deposit",
                    user_id=user_id,
                    derivation_index=index,
                    address=address,
                    created_at=_now_ms(),
                )
            )
        return address
    except IntegrityError:
        # A concurrent first call for this user committed first; its row is the answer.
        found = await _existing(db, chain, "deposit", user_id)
        if found is None:
            raise
        return found


async def hot_address(db: AsyncEngine, signer: Signer, chain_kind: ChainKind, chain: str) -> str:
    """The chain's hot wallet (index 0 of the hot branch), recorded on first use."""
    found = await _existing(db, chain, "hot", None)
    if found is not None:
        return found
    address = signer.address(KeyRef(chain_kind, "hot", 0))
    try:
        async with db.begin() as connection:
            await connection.execute(
                custody_addresses.insert().values(
                    chain=chain,
                    role="hot",
                    user_id=None,
                    derivation_index=0,
                    address=address,
                    created_at=_now_ms(),
                )
            )
    except IntegrityError:
        found = await _existing(db, chain, "hot", None)
        if found is None:
            raise
        return found
    return address


async def chain_addresses(db: AsyncEngine, chain: str) -> dict[str, tuple[str, int | None]]:
    """Every address of ours on ``chain``: address -> (role, user id or None)."""
    async with db.connect() as connection:
        rows = await connection.execute(
            sa.select(
                custody_addresses.c.address, custody_addresses.c.role, custody_addresses.c.user_id
            ).where(custody_addresses.c.chain == chain)
        )
        return {address: (role, user_id) for address, role, user_id in rows}
