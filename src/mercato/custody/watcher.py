"""The deposit watcher of one chain: blocks scanned with their hashes, reorgs undone,
deposits confirmed and credited exactly once (docs/custody.md, "Deposits").

A pass, in this order:

1. settle: CONFIRMED deposits that ``deposit_credits`` (the projector's record of every
   credit the engine accepted) holds are CREDITED. A pass that was killed between the
   engine's answer and its own write leaves such rows; settling them first means a
   reorg below never mistakes a credited deposit for an uncredited one.
2. scan from the cursor (the highest row of ``custody_blocks``) to the head the pass
   read, in batches; every block must extend the stored tip (parent height and hash),
   or the watcher walks back to the fork point, deletes the stored blocks above it and
   marks their deposits DROPPED (uncredited) or REVERSED (credited: a critical alert and
   a withdrawal hold for the user and asset), then rescans from there. A transfer the
   new chain carries again revives: DROPPED -> as if first seen, REVERSED -> CREDITED
   (its alert and hold stay until an operator acknowledges and releases them).
3. confirm: PENDING deposits ``confirmations`` deep below the stored tip (or at or below
   the node's finalized height with ``use_finalized``) become CONFIRMED.
4. credit: once the projection has caught up with the journal, CONFIRMED deposits
   without a ``deposit_credits`` row are submitted as ``CreditDeposit``; ACCEPTED or
   DUPLICATE -> CREDITED; a rejection is logged and alerted and retried next pass.

Every block's writes and the cursor's move are one transaction, so a kill at any point
re-does only the interrupted step. A node that does not answer ends the pass; the next
one backfills from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.config import CustodyAssetConfig, CustodyChainConfig
from mercato.core.commands import CreditDeposit
from mercato.core.errors import CodedError
from mercato.core.money import atoms_per_unit, to_units
from mercato.custody.addresses import chain_addresses, hot_address
from mercato.custody.chains.base import (
    BlockRef,
    ChainAdapter,
    ChainAsset,
    ChainUnavailable,
    Incoming,
    ScannedBlock,
    Signer,
    Watched,
)
from mercato.custody.faults import pause_point
from mercato.custody.units import split_deposit
from mercato.port import FundingPort
from mercato.store.tables import (
    custody_alerts,
    custody_blocks,
    custody_deposits,
    custody_withdrawal_holds,
    deposit_credits,
)

log = logging.getLogger(__name__)

#: Blocks kept below the cursor for reorg detection: at least this many.
MIN_KEPT_BLOCKS = 256
#: Deposit statuses a block's removal changes (DROPPED and REVERSED rows stay as they are).
LIVE_STATUSES = ("PENDING", "CONFIRMED", "BELOW_MINIMUM", "TREASURY")
#: External ids per lookup of known deposits (well under SQLite's bound parameters).
KNOWN_LOOKUP_CHUNK = 500
#: Addresses kept normalised per watcher (checksumming an EVM address is a keccak).
NORMALIZED_CACHE = 65_536


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: Whether the engine's CreditDeposit carries ``issued_at`` (its dedup window, see
#: docs/custody.md "Exactly-once credits"); the watcher sets it when it does.
CREDIT_HAS_ISSUED_AT = "issued_at" in CreditDeposit.__struct_fields__


def credit_command(
    user: int, asset: str, amount: int, external_id: str, issued_at: int
) -> CreditDeposit:
    """The engine command that credits one deposit (``issued_at``: ms, our clock)."""
    fields: dict[str, Any] = {
        "user": user,
        "asset": asset,
        "amount": amount,
        "external_id": external_id,
    }
    if CREDIT_HAS_ISSUED_AT:
        fields["issued_at"] = issued_at
    return CreditDeposit(**fields)


class ProjectionCatchUp(Protocol):
    """Waits until the SQL projection holds every command acknowledged so far
    (``mercato.application.projection.ProjectionReads`` is one); raises when it lags."""

    async def caught_up(self, seq: int | None = None) -> None: ...


@dataclasses.dataclass(frozen=True)
class WatchedAsset:
    """A custody asset of the watcher's chain and its ledger decimals (the engine's)."""

    config: CustodyAssetConfig
    ledger_decimals: int

    @property
    def symbol(self) -> str:
        return self.config.symbol

    @property
    def chain_asset(self) -> ChainAsset:
        return ChainAsset(self.config.symbol, self.config.contract, self.config.chain_decimals)

    @property
    def min_atoms(self) -> int:
        unit = atoms_per_unit(self.ledger_decimals)
        return to_units(self.config.min_deposit or "0", unit, "min_deposit", allow_zero=True)


@dataclasses.dataclass
class PassReport:
    """What one pass did."""

    head: int | None = None
    cursor: int | None = None
    blocks: int = 0  # blocks stored
    reorgs: int = 0  # fork points rolled back to
    removed_blocks: int = 0
    dropped: int = 0
    reversed: int = 0
    confirmed: int = 0
    credited: int = 0
    rejected: int = 0
    error: str = ""  # why the pass ended early (node down, projection lagging)


class TipMoved(RuntimeError):
    """Another watcher of the same chain moved the cursor since this pass read it (two
    processes watching one chain): this pass ends without writing; the next one
    carries on from the stored tip."""


@dataclasses.dataclass
class _Owners:
    """Our addresses on the chain, normalised as the adapter reports them."""

    deposit: dict[str, int]  # address -> user
    hot: frozenset[str]


class DepositWatcher:
    """One chain's deposit watcher (see the module doc); state lives in the store only,
    so a fresh watcher over the same store carries on where the last one stopped."""

    def __init__(
        self,
        db: AsyncEngine,
        adapter: ChainAdapter,
        chain: CustodyChainConfig,
        assets: Sequence[WatchedAsset],
        port: FundingPort,
        projection: ProjectionCatchUp,
        signer: Signer,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.adapter = adapter
        self.chain = chain
        self.assets = {asset.symbol: asset for asset in assets}
        self.port = port
        self.projection = projection
        self.signer = signer
        self.clock = clock
        self.name = chain.name
        # The same addresses come back in every block (ours, busy senders): normalised once.
        self._normalize = functools.lru_cache(maxsize=NORMALIZED_CACHE)(adapter.normalize_address)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Passes every ``poll_seconds`` until ``stop`` is set; a failed pass is logged
        and the next one retries."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("%s: deposit watcher pass failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.chain.poll_seconds)

    async def run_once(self) -> PassReport:
        report = PassReport()
        try:
            await self._settle()
            await self._scan(report)
            report.confirmed = await self._confirm()
            await self._credit(report)
            await self._prune()
        except ChainUnavailable as error:
            log.warning("%s: node unavailable, pass ends: %s", self.name, error)
            report.error = str(error)
        except TipMoved as error:
            log.warning("%s", error)
            report.error = "TIP_MOVED"
        except CodedError as error:  # the projection lags: credits wait for the next pass
            log.warning("%s: %s, pass ends: %s", self.name, error.code, error.message)
            report.error = error.code
        tip = await self._tip()
        report.cursor = None if tip is None else tip[0]
        return report

    # ------------------------------------------------------------------ scanning

    async def _tip(self) -> tuple[int, str] | None:
        """(height, hash) of the highest stored block: the cursor."""
        async with self.db.connect() as connection:
            row = (
                await connection.execute(
                    sa.select(custody_blocks.c.height, custody_blocks.c.hash)
                    .where(custody_blocks.c.chain == self.name)
                    .order_by(custody_blocks.c.height.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else (int(row.height), str(row.hash))

    @contextlib.asynccontextmanager
    async def _at_tip(self, expected: tuple[int, str] | None) -> AsyncIterator[AsyncConnection]:
        """A transaction that writes blocks, only while the stored tip is ``expected``:
        the chain's writers queue (an advisory lock on PostgreSQL; SQLite's write lock),
        and a pass whose tip another watcher moved raises TipMoved instead of writing."""
        async with self.db.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"mercato-custody-blocks:{self.name}"},
                )
            row = (
                await connection.execute(
                    sa.select(custody_blocks.c.height, custody_blocks.c.hash)
                    .where(custody_blocks.c.chain == self.name)
                    .order_by(custody_blocks.c.height.desc())
                    .limit(1)
                )
            ).first()
            stored = None if row is None else (int(row.height), str(row.hash))
            if stored != expected:
                raise TipMoved(
                    f"{self.name}: the stored tip is {stored}, this pass read {expected}"
                )
            yield connection

    async def _owners(self) -> _Owners:
        hot = await hot_address(self.db, self.signer, self.adapter.kind, self.name)
        normalize = self._normalize
        deposit: dict[str, int] = {}
        hots = {normalize(hot)}
        for address, (role, user) in (await chain_addresses(self.db, self.name)).items():
            if role == "hot":
                hots.add(normalize(address))
            elif user is not None:
                deposit[normalize(address)] = user
        return _Owners(deposit, frozenset(hots))

    async def _scan(self, report: PassReport) -> None:
        head = await self.adapter.head()
        report.head = head
        # The addresses are read after the head: an address handed out later can only be
        # paid in a block above this head, which a later pass scans with it.
        owners = await self._owners()
        watched = Watched(
            addresses=frozenset(owners.deposit) | owners.hot,
            assets=tuple(asset.chain_asset for asset in self.assets.values()),
            ignore_from=owners.hot,
        )
        tip = await self._tip()
        if tip is not None and head >= tip[0] and not await self._on_chain(tip):
            # The node replaced the tip without a higher block yet (or the pass that
            # stored it raced a reorg): confirmations must never count on a stale tip.
            await self._roll_back(tip, await self._fork_point(), report)
            tip = await self._tip()
        start = self.chain.start_height if self.chain.start_height >= 0 else head
        next_height = start if tip is None else tip[0] + 1
        while next_height <= head:
            end = min(head, next_height + self.chain.scan_batch - 1)
            next_height = await self._scan_batch(next_height, end, watched, owners, report)

    async def _scan_batch(
        self, start: int, end: int, watched: Watched, owners: _Owners, report: PassReport
    ) -> int:
        """Store the blocks of [start, end] that extend the stored tip; at the first that
        does not, roll back to the fork point. The next height to scan."""
        tip = await self._tip()
        for scanned in await self.adapter.scan(start, end, watched):
            block = scanned.block
            if tip is not None and (block.parent_height, block.parent_hash) != tip:
                fork = await self._fork_point()
                await self._roll_back(tip, fork, report)
                return fork + 1
            deposits = await self._store_block(tip, scanned, owners)
            tip = (block.height, block.hash)
            report.blocks += 1
            if deposits:
                await pause_point("mid_scan")  # the crash tests: stored, pass unfinished
        return end + 1

    async def _on_chain(self, stored: tuple[int, str]) -> bool:
        current = await self.adapter.block(stored[0])
        return current is not None and current.hash == stored[1]

    async def _fork_point(self) -> int:
        """The highest stored height whose hash the node still has there; below every
        stored block when none matches (a reorg deeper than what is kept)."""
        async with self.db.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(custody_blocks.c.height, custody_blocks.c.hash)
                    .where(custody_blocks.c.chain == self.name)
                    .order_by(custody_blocks.c.height.desc())
                )
            ).all()
        for height, stored_hash in rows:
            current = await self.adapter.block(height)
            if current is not None and current.hash == stored_hash:
                return int(height)
        lowest = int(rows[-1].height) if rows else 0
        log.error("%s: reorg below every kept block (from %d): rescanning", self.name, lowest)
        return lowest - 1

    async def _roll_back(self, tip: tuple[int, str] | None, fork: int, report: PassReport) -> None:
        """In one transaction: forget the stored blocks above ``fork`` and mark their
        deposits DROPPED, or REVERSED with an alert and a hold when they were credited."""
        now = self.clock()
        deposits = custody_deposits.c
        async with self._at_tip(tip) as connection:
            above = (deposits.chain == self.name) & (deposits.block_height > fork)
            credited = (
                await connection.execute(
                    sa.select(
                        deposits.external_id,
                        deposits.user_id,
                        deposits.asset,
                        deposits.amount,
                        deposits.block_height,
                    ).where(above, deposits.status == "CREDITED")
                )
            ).all()
            for row in credited:
                await self._reverse(connection, row, now)
            dropped = await connection.execute(
                custody_deposits.update()
                .where(above, deposits.status.in_(LIVE_STATUSES))
                .values(status="DROPPED", updated_at=now)
            )
            removed = await connection.execute(
                custody_blocks.delete().where(
                    custody_blocks.c.chain == self.name, custody_blocks.c.height > fork
                )
            )
        report.reorgs += 1
        report.removed_blocks += removed.rowcount
        report.dropped += dropped.rowcount
        report.reversed += len(credited)
        log.warning(
            "%s: reorg: back to block %d, %d blocks removed, %d deposits dropped, %d reversed",
            self.name,
            fork,
            removed.rowcount,
            dropped.rowcount,
            len(credited),
        )

    async def _reverse(self, connection: AsyncConnection, row: Any, now: int) -> None:
        await connection.execute(
            custody_deposits.update()
            .where(custody_deposits.c.external_id == row.external_id)
            .values(status="REVERSED", updated_at=now)
        )
        detail = (
            f"credited deposit of {row.amount} atoms {row.asset} to user {row.user_id} "
            f"left the chain with block {row.block_height}; the ledger credit stands: "
            "withdrawals of the asset are held for the user"
        )
        await connection.execute(
            custody_alerts.insert().values(
                severity="critical",
                kind="DEPOSIT_REVERSED",
                chain=self.name,
                subject=row.external_id,
                detail=detail,
                created_at=now,
            )
        )
        await connection.execute(
            custody_withdrawal_holds.insert().values(
                user_id=row.user_id,
                asset=row.asset,
                reason="DEPOSIT_REVERSED",
                subject=row.external_id,
                created_at=now,
            )
        )
        log.critical("%s: %s REVERSED: %s", self.name, row.external_id, detail)

    async def _store_block(
        self, tip: tuple[int, str] | None, scanned: ScannedBlock, owners: _Owners
    ) -> int:
        """The block and its deposits in one transaction (the cursor moves with them);
        the number of users' deposits it holds."""
        block = scanned.block
        now = self.clock()
        async with self._at_tip(tip) as connection:
            await connection.execute(
                custody_blocks.insert().values(
                    chain=self.name,
                    height=block.height,
                    hash=block.hash,
                    parent_hash=block.parent_hash,
                    parent_height=block.parent_height,
                    scanned_at=now,
                )
            )
            rows = [
                self._deposit_row(incoming, block, owners, now) for incoming in scanned.incoming
            ]
            found = [row for row in rows if row is not None]
            await self._upsert_deposits(connection, found, now)
        return sum(row["user_id"] is not None for row in found)

    def _deposit_row(
        self, incoming: Incoming, block: BlockRef, owners: _Owners, now: int
    ) -> dict[str, Any] | None:
        """The ``custody_deposits`` row of a transfer as first seen, or None when it is
        not a deposit (an asset not in custody, our own addresses sending)."""
        asset = self.assets.get(incoming.asset)
        normalize = self._normalize
        to = _normalized(normalize, incoming.to_address)
        sender = _normalized(normalize, incoming.from_address)
        if asset is None or sender in owners.hot:
            return None
        if to in owners.hot:
            if sender in owners.deposit:
                return None  # a sweep: our own funds moving to the hot wallet
            user, status = None, "TREASURY"
        elif to in owners.deposit:
            user, status = owners.deposit[to], "PENDING"
        else:
            return None
        atoms, dust = split_deposit(
            incoming.amount, asset.config.chain_decimals, asset.ledger_decimals
        )
        if status == "PENDING" and (atoms == 0 or atoms < asset.min_atoms):
            status = "BELOW_MINIMUM"
        return {
            "external_id": f"{self.name}:{incoming.txid}:{incoming.index}",
            "chain": self.name,
            "txid": incoming.txid,
            "tx_index": incoming.index,
            "asset": asset.symbol,
            "user_id": user,
            "address": incoming.to_address,
            "from_address": incoming.from_address,
            "amount_chain": str(incoming.amount),
            "amount": atoms,
            "dust_chain": str(dust),
            "block_height": block.height,
            "block_hash": block.hash,
            "status": status,
            "seen_at": now,
            "updated_at": now,
        }

    @staticmethod
    async def _upsert_deposits(
        connection: AsyncConnection, rows: Sequence[dict[str, Any]], now: int
    ) -> None:
        """Insert the new deposits of a block (one statement for them all: a block may
        carry hundreds); a known one moves to the block it is in now and, if its block
        had left the chain, revives (DROPPED: as first seen; REVERSED: CREDITED)."""
        deposits = custody_deposits.c
        known: dict[str, str] = {}
        ids = [row["external_id"] for row in rows]
        for offset in range(0, len(ids), KNOWN_LOOKUP_CHUNK):
            found = await connection.execute(
                sa.select(deposits.external_id, deposits.status).where(
                    deposits.external_id.in_(ids[offset : offset + KNOWN_LOOKUP_CHUNK])
                )
            )
            known.update((str(external_id), str(status)) for external_id, status in found)
        new = [row for row in rows if row["external_id"] not in known]
        if new:
            await connection.execute(custody_deposits.insert(), new)
        for row in rows:
            status = known.get(row["external_id"])
            if status is not None:
                await DepositWatcher._move_known(connection, row, status, now)

    @staticmethod
    async def _move_known(
        connection: AsyncConnection, row: dict[str, Any], status: str, now: int
    ) -> None:
        external_id = row["external_id"]
        moved: dict[str, Any] = {
            "block_height": row["block_height"],
            "block_hash": row["block_hash"],
            "updated_at": now,
        }
        if status == "DROPPED":
            moved["status"] = row["status"]
        elif status == "REVERSED":
            moved["status"] = "CREDITED"
            log.warning("%s revived: CREDITED again (its alert and hold stay)", external_id)
        await connection.execute(
            custody_deposits.update()
            .where(custody_deposits.c.external_id == external_id)
            .values(**moved)
        )

    # ------------------------------------------------------------------ crediting

    async def _confirm(self) -> int:
        """PENDING -> CONFIRMED for deposits deep enough below the stored tip."""
        tip = await self._tip()
        if tip is None:
            return 0
        deep = tip[0] - self.chain.confirmations + 1
        if self.chain.use_finalized:
            finalized = await self.adapter.finalized()
            if finalized is not None:
                deep = max(deep, min(finalized, tip[0]))
        async with self.db.begin() as connection:
            confirmed = await connection.execute(
                custody_deposits.update()
                .where(
                    custody_deposits.c.chain == self.name,
                    custody_deposits.c.status == "PENDING",
                    custody_deposits.c.block_height <= deep,
                )
                .values(status="CONFIRMED", updated_at=self.clock())
            )
        return int(confirmed.rowcount)

    async def _confirmed(self) -> list[Any]:
        deposits = custody_deposits.c
        async with self.db.connect() as connection:
            return list(
                (
                    await connection.execute(
                        sa.select(
                            deposits.external_id, deposits.user_id, deposits.asset, deposits.amount
                        )
                        .where(deposits.chain == self.name, deposits.status == "CONFIRMED")
                        .order_by(deposits.id)
                    )
                ).all()
            )

    async def _settle(self) -> list[Any]:
        """Mark CONFIRMED deposits that ``deposit_credits`` holds CREDITED (after the
        projection caught up); the rest, still to be submitted."""
        confirmed = await self._confirmed()
        if not confirmed:
            return []
        await self.projection.caught_up()
        ids = [row.external_id for row in confirmed]
        async with self.db.connect() as connection:
            known = set(
                (
                    await connection.execute(
                        sa.select(deposit_credits.c.external_id).where(
                            deposit_credits.c.external_id.in_(ids)
                        )
                    )
                ).scalars()
            )
        if known:
            await self._mark_credited(sorted(known))
        return [row for row in confirmed if row.external_id not in known]

    async def _mark_credited(self, external_ids: Sequence[str]) -> None:
        async with self.db.begin() as connection:
            await connection.execute(
                custody_deposits.update()
                .where(
                    custody_deposits.c.external_id.in_(external_ids),
                    custody_deposits.c.status == "CONFIRMED",
                )
                .values(status="CREDITED", updated_at=self.clock())
            )

    async def _credit(self, report: PassReport) -> None:
        """Submit the CONFIRMED deposits the store has no credit for; each is CREDITED
        once the engine accepted it (or says it credited it before)."""
        todo = await self._settle()
        if not todo:
            return
        issued_at = self.clock()
        commands = [
            credit_command(row.user_id, row.asset, row.amount, row.external_id, issued_at)
            for row in todo
        ]
        results = await self.port.submit_many(commands)
        await pause_point("after_credit_submit")  # the crash tests: accepted, not marked
        done = []
        for row, result in zip(todo, results, strict=True):
            if result.status in ("ACCEPTED", "DUPLICATE"):
                done.append(row.external_id)
            else:
                report.rejected += 1
                await self._credit_rejected(row.external_id, result.code, result.message)
        if done:
            await self._mark_credited(done)
        report.credited += len(done)

    async def _credit_rejected(self, external_id: str, code: str, message: str) -> None:
        """Log and alert once per deposit and code; the deposit stays CONFIRMED."""
        log.error(
            "%s: the engine refused to credit %s: %s %s", self.name, external_id, code, message
        )
        kind = f"CREDIT_REJECTED_{code}" if code else "CREDIT_REJECTED"
        alerts = custody_alerts.c
        async with self.db.begin() as connection:
            raised = (
                await connection.execute(
                    sa.select(alerts.id).where(
                        alerts.subject == external_id,
                        alerts.kind == kind,
                        alerts.acknowledged_at.is_(None),
                    )
                )
            ).first()
            if raised is None:
                await connection.execute(
                    custody_alerts.insert().values(
                        severity="critical",
                        kind=kind,
                        chain=self.name,
                        subject=external_id,
                        detail=f"CreditDeposit refused: {code} {message}",
                        created_at=self.clock(),
                    )
                )

    async def _prune(self) -> None:
        """Forget blocks far below the cursor: a reorg that deep is not expected."""
        tip = await self._tip()
        if tip is None:
            return
        keep = max(self.chain.confirmations * 4, MIN_KEPT_BLOCKS)
        async with self.db.begin() as connection:
            await connection.execute(
                custody_blocks.delete().where(
                    custody_blocks.c.chain == self.name, custody_blocks.c.height < tip[0] - keep
                )
            )


def _normalized(normalize: Callable[[str], str], address: str) -> str:
    """``address`` in the adapter's canonical form, or as given when it is none of this
    chain's (a sender can be anything the chain accepts)."""
    try:
        return normalize(address)
    except CodedError:
        return address
