"""The sealed custody seed: created once, opened only with the master key, never shown."""

from __future__ import annotations

import asyncio
import os

import pytest
from bip_utils import Bip39SeedGenerator

from mercato.auth.crypto import SealError
from mercato.core.errors import CodedError
from mercato.custody.chains.base import KeyRef
from mercato.custody.keys import Mnemonic, init_seed, load_mnemonic, load_seed, seed_fingerprint
from mercato.custody.signer import LocalSeedSigner
from mercato.store import create_engine
from mercato.store.tables import custody_seed

MASTER = os.urandom(32)
ABANDON = " ".join(["abandon"] * 11 + ["about"])


def test_init_seals_a_fresh_24_word_mnemonic_and_answers_its_fingerprint(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            assert await seed_fingerprint(db) is None
            fingerprint = await init_seed(db, MASTER)
            mnemonic = await load_mnemonic(db, MASTER)
            assert mnemonic is not None and len(mnemonic.words.split()) == 24
            seed = await load_seed(db, MASTER)
            assert seed == bytes(Bip39SeedGenerator(mnemonic.words).Generate())
            assert fingerprint == LocalSeedSigner(seed).address(KeyRef("evm", "hot", 0))
            assert await seed_fingerprint(db) == fingerprint
            async with db.connect() as connection:
                sealed = (await connection.execute(custody_seed.select())).one().sealed
            assert mnemonic.words.encode() not in sealed  # sealed, not stored in clear
            assert mnemonic.words.split()[0] not in repr(mnemonic) + str(mnemonic)
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_second_init_is_refused_and_keeps_the_first_seed(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            first = await init_seed(db, MASTER, Mnemonic(ABANDON))
            before = await load_seed(db, MASTER)
            with pytest.raises(CodedError) as refused:
                await init_seed(db, MASTER)
            assert refused.value.code == "SEED_EXISTS" and first in refused.value.message
            assert await load_seed(db, MASTER) == before
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_two_inits_at_once_leave_one_seed(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            outcomes = await asyncio.gather(
                init_seed(db, MASTER), init_seed(db, MASTER), return_exceptions=True
            )
            won = [o for o in outcomes if isinstance(o, str)]
            lost = [o for o in outcomes if isinstance(o, CodedError)]
            assert len(won) == 1 and [e.code for e in lost] == ["SEED_EXISTS"]
            assert await seed_fingerprint(db) == won[0]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_the_seed_opens_only_with_its_master_key(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            with pytest.raises(CodedError) as missing:
                await load_seed(db, MASTER)
            assert missing.value.code == "NO_SEED"
            await init_seed(db, MASTER)
            with pytest.raises(SealError):
                await load_seed(db, os.urandom(32))
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_mnemonic_that_is_not_bip39_is_refused() -> None:
    with pytest.raises(CodedError) as refused:
        Mnemonic("abandon " * 11 + "abandon")
    assert refused.value.code == "INVALID_MNEMONIC"
