"""What a user meets of deposits: their deposit address per asset, and their deposits
with status and confirmations (docs/custody.md, "Deposits").

Amounts are engine atoms (with the asset's ledger decimals) and chain units; the
adapters turn them into decimal strings. The deposits table is the watcher's, not the
projection's: reads need no wait for the projector.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.application.errors import ServiceError
from mercato.core.errors import CodedError, ErrorKind
from mercato.custody.addresses import deposit_address
from mercato.custody.chains.base import ChainKind
from mercato.custody.runtime import CustodyRuntime
from mercato.port import ExchangePort
from mercato.store.tables import custody_blocks, custody_deposits, users

DEFAULT_LIMIT = 50
#: Statuses whose block is no longer on the chain: no confirmations to show.
OFF_CHAIN = frozenset({"DROPPED", "REVERSED"})


@dataclasses.dataclass(frozen=True, slots=True)
class DepositAddress:
    asset: str
    chain: str
    address: str


@dataclasses.dataclass(frozen=True, slots=True)
class DepositFigures:
    """One deposit; ``amount`` in atoms (``decimals``), ``amount_chain`` in chain units."""

    id: int
    asset: str
    decimals: int
    chain: str
    status: str
    amount: int
    amount_chain: int
    txid: str
    tx_index: int
    address: str
    block_height: int
    confirmations: int
    required_confirmations: int
    seen_at: int
    updated_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class DepositPage:
    items: list[DepositFigures]
    next_before: int | None  # the ``before_id`` of the next (older) page; None: the last


def custody_unavailable(asset: str) -> CodedError:
    return CodedError(
        "CUSTODY_UNAVAILABLE",
        f"deposits of {asset} are not available on this exchange",
        ErrorKind.CONFLICT,
    )


class Deposits:
    """The deposits service of one exchange."""

    def __init__(self, custody: CustodyRuntime, port: ExchangePort, reads: AsyncEngine) -> None:
        self._custody = custody
        self._view = port.view
        self._reads = reads  # DEFERRED on SQLite: a read never queues for the write lock
        self._verified: set[int] = set()

    def _decimals(self, asset: str) -> int:
        known = self._view.asset(asset)
        if known is None:
            raise ServiceError.unknown_asset(asset)
        return known.decimals

    async def _require_verified(self, user: int) -> None:
        if user in self._verified:
            return
        async with self._reads.connect() as connection:
            verified_at = (
                await connection.execute(
                    sa.select(users.c.email_verified_at).where(users.c.id == user)
                )
            ).scalar_one_or_none()
        if verified_at is None:
            raise ServiceError("EMAIL_NOT_VERIFIED", "verify your email address before depositing")
        self._verified.add(user)

    async def address(self, user: int, asset: str) -> DepositAddress:
        """The user's deposit address for ``asset`` (its chain's), assigned on first call."""
        self._decimals(asset)
        found = self._custody.chain_of(asset)
        signer = self._custody.signer
        if found is None or signer is None:
            raise custody_unavailable(asset)
        await self._require_verified(user)
        _, chain = found
        kind: ChainKind = "evm" if chain.kind == "evm" else "solana"
        address = await deposit_address(self._custody.db, signer, kind, chain.name, user)
        return DepositAddress(asset, chain.name, address)

    async def list(
        self,
        user: int,
        asset: str | None = None,
        limit: int = DEFAULT_LIMIT,
        before_id: int | None = None,
    ) -> DepositPage:
        """The user's deposits, newest first, ``limit`` per page."""
        if asset is not None:
            self._decimals(asset)
        deposits = custody_deposits.c
        query = sa.select(custody_deposits).where(deposits.user_id == user)
        if asset is not None:
            query = query.where(deposits.asset == asset)
        if before_id is not None:
            query = query.where(deposits.id < before_id)
        query = query.order_by(deposits.id.desc()).limit(limit)
        async with self._reads.connect() as connection:
            rows = (await connection.execute(query)).all()
            tips = dict(
                (
                    await connection.execute(
                        sa.select(
                            custody_blocks.c.chain, sa.func.max(custody_blocks.c.height)
                        ).group_by(custody_blocks.c.chain)
                    )
                ).all()
            )
        items = [self._figures(row, tips.get(row.chain)) for row in rows]
        next_before = items[-1].id if len(items) == limit else None
        return DepositPage(items, next_before)

    def _figures(self, row: Any, tip: int | None) -> DepositFigures:
        required = self._required(row.chain)
        confirmations = 0
        if tip is not None and row.status not in OFF_CHAIN:
            confirmations = max(0, min(required, tip - row.block_height + 1))
        return DepositFigures(
            id=row.id,
            asset=row.asset,
            decimals=self._decimals(row.asset),
            chain=row.chain,
            status=row.status,
            amount=row.amount,
            amount_chain=int(row.amount_chain),
            txid=row.txid,
            tx_index=row.tx_index,
            address=row.address,
            block_height=row.block_height,
            confirmations=confirmations,
            required_confirmations=required,
            seen_at=row.seen_at,
            updated_at=row.updated_at,
        )

    def _required(self, chain: str) -> int:
        configured = [c.confirmations for c in self._custody.config.chains if c.name == chain]
        return configured[0] if configured else 0
