"""Deposit addresses: one per user per chain, from gapless indexes, also when the first
calls come at once (on PostgreSQL the calls really overlap; SQLite serialises them)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from bip_utils import Bip39SeedGenerator

from mercato.custody.addresses import chain_addresses, deposit_address, hot_address
from mercato.custody.chains.base import KeyRef
from mercato.custody.signer import LocalSeedSigner
from mercato.store import create_engine
from mercato.store.tables import custody_address_counters, custody_addresses

SIGNER = LocalSeedSigner(
    bytes(Bip39SeedGenerator(" ".join(["abandon"] * 11 + ["about"])).Generate())
)


async def rows(db: sa.ext.asyncio.AsyncEngine) -> tuple[list[tuple[object, ...]], dict[str, int]]:
    async with db.connect() as connection:
        addresses = (
            await connection.execute(
                sa.select(
                    custody_addresses.c.chain,
                    custody_addresses.c.role,
                    custody_addresses.c.user_id,
                    custody_addresses.c.derivation_index,
                    custody_addresses.c.address,
                ).order_by(custody_addresses.c.id)
            )
        ).all()
        counters = (await connection.execute(sa.select(custody_address_counters))).all()
    return [tuple(r) for r in addresses], {f"{c.chain}/{c.role}": c.next_index for c in counters}


def test_an_address_is_assigned_once_and_derived_at_its_index(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            first = await deposit_address(db, SIGNER, "evm", "ethereum", 7)
            assert first == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"  # index 0
            assert await deposit_address(db, SIGNER, "evm", "ethereum", 7) == first
            second = await deposit_address(db, SIGNER, "evm", "ethereum", 8)
            assert second == SIGNER.address(KeyRef("evm", "deposit", 1))
            # another chain has its own counter, and the hot wallet its own branch
            sol = await deposit_address(db, SIGNER, "solana", "solana", 8)
            assert sol == SIGNER.address(KeyRef("solana", "deposit", 0))
            hot = await hot_address(db, SIGNER, "evm", "ethereum")
            assert hot == SIGNER.address(KeyRef("evm", "hot", 0))
            assert await hot_address(db, SIGNER, "evm", "ethereum") == hot
            stored, counters = await rows(db)
            assert stored == [
                ("ethereum", "deposit", 7, 0, first),
                ("ethereum", "deposit", 8, 1, second),
                ("solana", "deposit", 8, 0, sol),
                ("ethereum", "hot", None, 0, hot),
            ]
            assert counters == {"ethereum/deposit": 2, "solana/deposit": 1}
            assert await chain_addresses(db, "ethereum") == {
                first: ("deposit", 7),
                second: ("deposit", 8),
                hot: ("hot", None),
            }
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_ten_first_calls_at_once_give_one_address_and_no_gap(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            answers = await asyncio.gather(
                *(deposit_address(db, SIGNER, "evm", "ethereum", 1) for _ in range(10))
            )
            assert len(set(answers)) == 1
            stored, counters = await rows(db)
            assert stored == [("ethereum", "deposit", 1, 0, answers[0])]
            assert counters == {"ethereum/deposit": 1}  # the losers' increments rolled back
            # the next user gets the next index: no gap was left
            other = await deposit_address(db, SIGNER, "evm", "ethereum", 2)
            assert other == SIGNER.address(KeyRef("evm", "deposit", 1))
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_two_users_at_once_get_distinct_consecutive_indexes(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            calls = [
                deposit_address(db, SIGNER, "evm", "ethereum", user)
                for user in (1, 2)
                for _ in range(5)
            ]
            answers = await asyncio.gather(*calls)
            assert len(set(answers[:5])) == len(set(answers[5:])) == 1
            stored, counters = await rows(db)
            assert sorted(index for _, _, _, index, _ in stored) == [0, 1]
            for _, _, user, index, address in stored:
                assert address == SIGNER.address(KeyRef("evm", "deposit", index))
                assert address == answers[0 if user == 1 else 5]
            assert counters == {"ethereum/deposit": 2}
            hots = await asyncio.gather(
                *(hot_address(db, SIGNER, "evm", "ethereum") for _ in range(5))
            )
            assert len(set(hots)) == 1 and len((await rows(db))[0]) == 3
        finally:
            await db.dispose()

    asyncio.run(scenario())
