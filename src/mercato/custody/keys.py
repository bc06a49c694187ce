"""The custody seed: one BIP39 mnemonic, sealed with the master key in ``custody_seed``.

``mercato custody init`` creates it once (:func:`init_seed`); the service unseals it once
at start (:func:`load_seed`) and hands the seed bytes to the signer. The mnemonic is what
is sealed (not the derived seed), so that an operator can export it for an offline
backup; it is never logged, and it is shown only on request (``--show-mnemonic``).
Refusing to replace an existing seed is the point: a new seed would orphan every
deposit address handed out under the old one.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from bip_utils import (  # type: ignore[import-untyped]
    Bip39MnemonicGenerator,
    Bip39MnemonicValidator,
    Bip39SeedGenerator,
    Bip39WordsNum,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.crypto import seal, unseal
from mercato.core.errors import CodedError, ErrorKind
from mercato.custody.chains.base import KeyRef
from mercato.custody.signer import LocalSeedSigner
from mercato.store.tables import custody_seed

SEED_CONTEXT = b"custody-seed"


class Mnemonic:
    """A BIP39 mnemonic whose repr and str never show the words (``words`` does)."""

    __slots__ = ("_words",)

    def __init__(self, words: str) -> None:
        if not Bip39MnemonicValidator().IsValid(words):
            raise CodedError("INVALID_MNEMONIC", "not a valid BIP39 mnemonic")
        self._words = words

    @property
    def words(self) -> str:
        return self._words

    def seed(self) -> bytes:
        return bytes(Bip39SeedGenerator(self._words).Generate())

    def __repr__(self) -> str:
        return "Mnemonic(<24 words>)"

    __str__ = __repr__


def generate_mnemonic() -> Mnemonic:
    """A fresh 24-word mnemonic (256 bits of entropy from the OS)."""
    return Mnemonic(str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_24)))


def fingerprint_of(seed: bytes) -> str:
    """How a seed is recognised without showing it: its EVM hot-wallet address."""
    return LocalSeedSigner(seed).address(KeyRef("evm", "hot", 0))


async def init_seed(db: AsyncEngine, master_key: bytes, mnemonic: Mnemonic | None = None) -> str:
    """Seal ``mnemonic`` (a new one by default) into ``custody_seed``; its fingerprint.
    Raises CodedError ``SEED_EXISTS`` if the store holds a seed already."""
    mnemonic = mnemonic or generate_mnemonic()
    fingerprint = fingerprint_of(mnemonic.seed())
    sealed = seal(master_key, mnemonic.words.encode(), context=SEED_CONTEXT)
    row = {
        "id": 1,
        "sealed": sealed,
        "fingerprint": fingerprint,
        "created_at": time.time_ns() // 1_000_000,
    }
    try:
        async with db.begin() as connection:
            await connection.execute(custody_seed.insert().values(**row))
    except IntegrityError:
        existing = await seed_fingerprint(db)
        raise CodedError(
            "SEED_EXISTS",
            f"a custody seed exists already (fingerprint {existing}); it is never replaced",
            ErrorKind.CONFLICT,
        ) from None
    return fingerprint


async def seed_fingerprint(db: AsyncEngine) -> str | None:
    """The stored seed's fingerprint, or None when there is no seed."""
    async with db.connect() as connection:
        found = await connection.execute(sa.select(custody_seed.c.fingerprint))
        return found.scalar_one_or_none()


async def load_mnemonic(db: AsyncEngine, master_key: bytes) -> Mnemonic | None:
    """The unsealed mnemonic, or None when there is no seed. A wrong master key raises
    ``mercato.auth.crypto.SealError``."""
    async with db.connect() as connection:
        sealed = (await connection.execute(sa.select(custody_seed.c.sealed))).scalar_one_or_none()
    if sealed is None:
        return None
    return Mnemonic(unseal(master_key, sealed, context=SEED_CONTEXT).decode())


async def load_seed(db: AsyncEngine, master_key: bytes) -> bytes:
    """The BIP39 seed bytes; CodedError ``NO_SEED`` when ``mercato custody init`` never ran."""
    mnemonic = await load_mnemonic(db, master_key)
    if mnemonic is None:
        raise CodedError(
            "NO_SEED", "no custody seed: run `mercato custody init`", ErrorKind.CONFLICT
        )
    return mnemonic.seed()
