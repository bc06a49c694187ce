"""The withdrawal desk for the custody logic tests (imported by their modules): a real
engine behind the in-process port (journal in a temporary directory), a migrated store on
SQLite and PostgreSQL
(``migrated`` from the store tests), the FakeChain as the chain, and a trivial signer."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
from sqlalchemy import insert, update

from custody.fakechain import FakeChain
from mercato.application.withdrawals import Withdrawals
from mercato.auth import totp
from mercato.auth.crypto import seal
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.core.commands import Command, CreditDeposit, UpsertAsset
from mercato.core.results import Result
from mercato.custody.chains.base import ChainAsset, KeyRef
from mercato.custody.sender import Sender
from mercato.journal import AsyncSequencer
from mercato.port import Listener
from mercato.port.in_process import InProcessPort
from mercato.store import create_engine
from mercato.store.tables import users
from store.conftest import database_url, fresh_postgres_database, migrated  # noqa: F401

MASTER_KEY = bytes(range(32))
HOT = "0xhot"
TO = "0xdest"
USDT = ChainAsset("USDT", "0xusdt", 6)


class TestSigner:
    """Signs nothing (the FakeChain builds its own bytes); knows the hot address."""

    __test__ = False

    def address(self, key: KeyRef) -> str:
        return HOT if key.role == "hot" else f"0xdeposit{key.index}"

    def sign_evm(self, key: KeyRef, transaction: dict[str, object]) -> tuple[bytes, str]:
        raise AssertionError("the FakeChain does not ask")

    def sign_solana(self, key: KeyRef, message: bytes) -> bytes:
        raise AssertionError("the FakeChain does not ask")


@dataclass
class Clock:
    now: int = field(default_factory=lambda: int(time.time() * 1000))  # the engine's window

    def __call__(self) -> int:
        return self.now


def custody_config(**asset: object) -> CustodyConfig:
    values: dict[str, object] = {
        "symbol": "USDT",
        "chain": "fake",
        "chain_decimals": 6,
        "contract": "0xusdt",
        "withdrawal_fee": "1",
        "min_withdrawal": "10",
        "daily_limit": "1000",
        "approval_threshold": "500",
        "approvals_required": 2,
    }
    values.update(asset)
    return CustodyConfig(
        address_cooloff_seconds=3600,
        approval_ttl_seconds=600,
        chains=[
            CustodyChainConfig(
                name="fake", kind="evm", rpc_url="-", confirmations=2, stuck_seconds=60
            )
        ],
        assets=[CustodyAssetConfig(**values)],  # type: ignore[arg-type]
    )


@dataclass
class Desk:
    db: object
    port: InProcessPort
    chain: FakeChain
    withdrawals: Withdrawals
    sender: Sender
    clock: Clock
    config: CustodyConfig
    secrets_: dict[int, str] = field(default_factory=dict)

    async def user(self, *, role: str = "user", funds: int = 0, two_factor: bool = False) -> int:
        now = self.clock()
        email = f"{secrets.token_hex(6)}@example.test"
        async with self.db.begin() as connection:  # type: ignore[attr-defined]
            result = await connection.execute(
                insert(users).values(
                    email=email,
                    email_skeleton=email,
                    password_hash="-",
                    role=role,
                    email_verified_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            user_id = int(result.inserted_primary_key[0])
            if two_factor:
                secret = pyotp.random_base32()
                self.secrets_[user_id] = secret
                await connection.execute(
                    update(users)
                    .where(users.c.id == user_id)
                    .values(
                        totp_secret_enc=seal(
                            MASTER_KEY, secret.encode(), f"totp:{user_id}".encode()
                        ),
                        totp_enabled=True,
                    )
                )
        if funds:
            result = await self.port.submit(CreditDeposit(user_id, "USDT", funds, f"d{user_id}"))
            assert result.status == "ACCEPTED"
        return user_id

    def code(self, user_id: int, step_offset: int = 0) -> str:
        """The TOTP code of the current step (+ offset, within the drift window)."""
        step = int(totp._unix_time()) // totp.STEP_SECONDS + step_offset
        return pyotp.TOTP(self.secrets_[user_id]).generate_otp(step)

    def balance(self, user_id: int) -> tuple[int, int]:
        return self.port.view.balance(user_id, "USDT")

    async def book(self, user_id: int, address: str = TO) -> None:
        """Put ``address`` in the user's book, usable now."""
        from mercato.store.tables import custody_address_book

        async with self.db.begin() as connection:  # type: ignore[attr-defined]
            await connection.execute(
                insert(custody_address_book).values(
                    user_id=user_id,
                    chain="fake",
                    address=address,
                    label="",
                    created_at=0,
                    usable_at=0,
                )
            )

    async def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        from sqlalchemy import text

        async with self.db.connect() as connection:  # type: ignore[attr-defined]
            return [tuple(r) for r in await connection.execute(text(sql), params)]


USDT_ATOMS = 10**8  # the ledger has 8 decimals for USDT here, the chain 6


@contextlib.asynccontextmanager
async def open_desk(url: str, journal: Path, **asset: object) -> AsyncIterator[Desk]:
    sequencer = await AsyncSequencer.open(journal)
    port = InProcessPort(sequencer)
    if port.view.asset("USDT") is None:
        await port.submit(UpsertAsset("USDT", 8))
    db = create_engine(url)
    chain = FakeChain("fake", (USDT,))
    chain.balances[(HOT, "USDT")] = 10**15
    clock = Clock()
    config = custody_config(**asset)
    withdrawals = Withdrawals(db, port, config, {"fake": chain}, MASTER_KEY, clock)
    sender = Sender(db, port, config, {"fake": chain}, TestSigner(), clock)
    try:
        yield Desk(db, port, chain, withdrawals, sender, clock, config)
    finally:
        await db.dispose()
        await sequencer.close()


class HookedPort:
    """The desk's port with a hook run before each command of one type is submitted: a
    test's way to make something happen at an exact point (a balance moving, a cancel,
    a crash before a settle)."""

    def __init__(self, inner: InProcessPort, kind: type, hook: Callable[[object], Awaitable[None]]):
        self._inner = inner
        self._kind = kind
        self._hook = hook
        self.view = inner.view

    @property
    def last_seq(self) -> int:
        return self._inner.last_seq

    async def submit(self, cmd: Command) -> Result:
        if isinstance(cmd, self._kind):
            await self._hook(cmd)
        return await self._inner.submit(cmd)

    async def submit_many(self, commands: Sequence[Command]) -> list[Result]:
        return await self._inner.submit_many(commands)

    def subscribe(self, listener: Listener) -> None:
        self._inner.subscribe(listener)
