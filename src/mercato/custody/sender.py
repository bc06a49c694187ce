"""Outgoing transfers, never sent twice (docs/custody.md, "Sending, never twice").

Every transfer we send is a ``custody_outgoing`` row, unique per (kind, ref), created
with its first signed attempt in one transaction (:func:`create_outgoing`), and only
then broadcast. What survives a kill at any point is therefore one of:

- nothing (the transaction did not commit): the withdrawal is still APPROVED, no nonce
  was taken, nothing was signed that anyone will ever see;
- a SIGNED row: the next pass broadcasts the *same stored bytes*;
- a BROADCAST row: the next pass looks for every attempt on chain.

A replacement (EVM: same nonce, fees raised by ``fee_bumped``; Solana: a new blockhash
once the old one can no longer land) is stored before its broadcast, and every attempt's
hash is tracked, since any of them may be the one mined. Nothing ever signs a transfer
with a second nonce for the same row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Row, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.config import CustodyConfig
from mercato.custody.chains.base import (
    BroadcastRejected,
    ChainAdapter,
    ChainAsset,
    ChainUnavailable,
    FeeQuote,
    KeyRef,
    SignedTx,
    Signer,
    Spend,
    TxStatus,
    fee_bumped,
)
from mercato.custody.faults import pause_point
from mercato.custody.holds import now_ms, release_hold, settle_hold
from mercato.custody.units import atoms_to_chain
from mercato.port import FundingPort
from mercato.store.tables import (
    custody_attempts,
    custody_nonces,
    custody_outgoing,
    custody_withdrawals,
)

log = logging.getLogger(__name__)

#: Called inside create_outgoing's transaction with the new row's id; False undoes it
#: all (e.g. the withdrawal's APPROVED -> SIGNED compare-and-set lost to a cancel).
OnSigned = Callable[[AsyncConnection, int], Awaitable[bool]]


class OutgoingRefused(RuntimeError):
    """``on_signed`` said no: nothing was created, no nonce was taken."""


async def create_outgoing(
    db: AsyncEngine,
    adapter: ChainAdapter,
    signer: Signer,
    *,
    kind: str,
    ref: str,
    key: KeyRef,
    from_address: str,
    to_address: str,
    asset: ChainAsset,
    amount_chain: int,
    on_signed: OnSigned | None = None,
    clock: Callable[[], int] = now_ms,
) -> int:
    """Sign a transfer and store it with its first attempt, in ONE transaction; return the
    outgoing row's id. A row for (kind, ref) already there is returned as it is (its
    transfer is the one and only). Raises OutgoingRefused when ``on_signed`` refuses,
    ChainUnavailable when the node is needed and down (nothing is stored then).
    ``clock`` (ms) stamps the rows; the stuck timer runs from it."""
    try:
        async with db.begin() as connection:
            existing = await _outgoing_id(connection, kind, ref)
            if existing is not None:
                return existing
            nonce = None
            if adapter.uses_nonces:
                nonce = await _allocate_nonce(connection, adapter, from_address)
            spend = Spend(
                key, from_address, to_address, asset, amount_chain, await adapter.fees(asset), nonce
            )
            signed = await adapter.sign(spend, signer)
            now = clock()
            result = await connection.execute(
                insert(custody_outgoing).values(
                    kind=kind,
                    ref=ref,
                    chain=adapter.name,
                    asset=asset.symbol,
                    from_role=key.role,
                    from_index=key.index,
                    from_address=from_address,
                    to_address=to_address,
                    amount_chain=str(amount_chain),
                    status="SIGNED",
                    nonce=nonce,
                    created_at=now,
                    updated_at=now,
                )
            )
            outgoing_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await _insert_attempt(connection, adapter.name, outgoing_id, signed, now)
            if on_signed is not None and not await on_signed(connection, outgoing_id):
                raise OutgoingRefused(f"{kind} {ref}: refused at signing")
            return outgoing_id
    except IntegrityError:
        # Another create for the same (kind, ref) committed first: that one is the transfer.
        async with db.connect() as connection:
            existing = await _outgoing_id(connection, kind, ref)
        if existing is None:
            raise
        return existing


async def _outgoing_id(connection: AsyncConnection, kind: str, ref: str) -> int | None:
    found = await connection.scalar(
        select(custody_outgoing.c.id).where(
            custody_outgoing.c.kind == kind, custody_outgoing.c.ref == ref
        )
    )
    return None if found is None else int(found)


async def _allocate_nonce(connection: AsyncConnection, adapter: ChainAdapter, address: str) -> int:
    """The next nonce of ``address`` from Mercato's allocator, its row locked until the
    caller commits (PostgreSQL: FOR UPDATE; SQLite: the write transaction is exclusive).
    A rollback gives the nonce back, so nonces stay gapless. The chain's count
    (``next_nonce``) is read once only, to start the allocator for a new address."""
    key = (custody_nonces.c.chain == adapter.name, custody_nonces.c.address == address)
    locked = select(custody_nonces.c.next_nonce).where(*key).with_for_update()
    current = await connection.scalar(locked)
    if current is None:
        start = await adapter.next_nonce(address)
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        await connection.execute(
            dialect.insert(custody_nonces)
            .values(chain=adapter.name, address=address, next_nonce=start)
            .on_conflict_do_nothing()
        )
        current = await connection.scalar(locked)
    assert current is not None, "the allocator's row was just made"
    nonce = int(current)
    await connection.execute(update(custody_nonces).where(*key).values(next_nonce=nonce + 1))
    return nonce


async def _insert_attempt(
    connection: AsyncConnection, chain: str, outgoing_id: int, signed: SignedTx, now: int
) -> None:
    await connection.execute(
        insert(custody_attempts).values(
            outgoing_id=outgoing_id,
            chain=chain,
            txid=signed.txid,
            raw=signed.raw,
            nonce=signed.nonce,
            max_fee=str(signed.fee.max_fee),
            priority_fee=str(signed.fee.priority_fee),
            gas_limit=signed.fee.gas_limit,
            recent_blockhash=signed.recent_blockhash,
            valid_until=signed.valid_until,
            created_at=now,
        )
    )


def _signed_tx(row: Row[tuple[object, ...]]) -> SignedTx:
    fee = FeeQuote(int(row.max_fee), int(row.priority_fee), int(row.gas_limit))
    return SignedTx(row.txid, bytes(row.raw), row.nonce, fee, row.recent_blockhash, row.valid_until)


@dataclass(frozen=True)
class _Seen:
    """An attempt and what the chain says of it."""

    attempt: Row[tuple[object, ...]]
    status: TxStatus


class Sender:
    """The sending loop's passes over every configured chain with an adapter. Safe to
    kill anywhere and to run again (or, on PostgreSQL, twice at once: every transition is
    a compare-and-set and the outgoing rows are unique per (kind, ref))."""

    def __init__(
        self,
        db: AsyncEngine,
        port: FundingPort,
        custody: CustodyConfig,
        adapters: Mapping[str, ChainAdapter],
        signer: Signer,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self._port = port
        self._custody = custody
        self._adapters = adapters
        self._signer = signer
        self._clock = clock

    async def run(
        self, poll_seconds: float, before_pass: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Pass after pass until cancelled (the runtime's loop). ``before_pass`` is e.g.
        ``Withdrawals.recover``. A failed pass is logged and the next one retries."""
        while True:
            try:
                if before_pass is not None:
                    await before_pass()
                await self.run_once()
            except Exception:
                log.exception("sender pass failed; retrying in %g s", poll_seconds)
            await asyncio.sleep(poll_seconds)

    async def run_once(self) -> None:
        """One pass: sign what is approved, broadcast what is signed, track what is sent.
        A chain whose node is down is skipped until the next pass."""
        for name, adapter in self._adapters.items():
            try:
                await self._sign_approved(adapter)
                await self._broadcast_signed(adapter)
                await self._track_broadcast(adapter)
            except ChainUnavailable as error:
                log.warning("sender: chain %s unavailable (%s); retrying next pass", name, error)
        await self._finish_holds()

    async def _finish_holds(self) -> None:
        """Holds whose transfer ended but whose settle or release a kill interrupted."""
        w = custody_withdrawals.c
        async with self._db.connect() as connection:
            result = await connection.execute(
                select(w.withdrawal_id, w.status).where(
                    w.hold_state == "HELD", w.status.in_(("COMPLETED", "FAILED"))
                )
            )
            unfinished = list(result.all())
        for withdrawal_id, status in unfinished:
            finish = settle_hold if status == "COMPLETED" else release_hold
            await finish(self._db, self._port, withdrawal_id)

    # -- sign ---------------------------------------------------------------------------

    def chain_asset(self, symbol: str) -> ChainAsset:
        config = self._custody.asset(symbol)
        if config is None:
            raise LookupError(f"no custody asset {symbol!r}")
        return ChainAsset(symbol, config.contract, config.chain_decimals)

    def hot_key(self, adapter: ChainAdapter) -> KeyRef:
        return KeyRef(adapter.kind, "hot", 0)

    async def _sign_approved(self, adapter: ChainAdapter) -> None:
        w = custody_withdrawals.c
        async with self._db.connect() as connection:
            approved = (
                await connection.execute(
                    select(custody_withdrawals)
                    .where(w.chain == adapter.name, w.status == "APPROVED")
                    .order_by(w.id)
                )
            ).all()
        for row in approved:
            await self.sign_withdrawal(adapter, row)

    async def sign_withdrawal(self, adapter: ChainAdapter, row: Row[tuple[object, ...]]) -> None:
        """APPROVED -> SIGNED with its outgoing row, or nothing if a cancel won the race."""
        asset = self.chain_asset(row.asset)
        known = self._port.view.asset(row.asset)
        assert known is not None, "a withdrawal's asset is an engine asset"
        amount_chain = atoms_to_chain(row.amount, asset.chain_decimals, known.decimals)
        key = self.hot_key(adapter)
        wid = row.withdrawal_id

        async def approved_to_signed(connection: AsyncConnection, outgoing_id: int) -> bool:
            w = custody_withdrawals.c
            moved = await connection.execute(
                update(custody_withdrawals)
                .where(w.withdrawal_id == wid, w.status == "APPROVED")
                .values(status="SIGNED", outgoing_id=outgoing_id, updated_at=self._clock())
            )
            return bool(moved.rowcount)

        try:
            await create_outgoing(
                self._db,
                adapter,
                self._signer,
                kind="WITHDRAWAL",
                ref=wid,
                key=key,
                from_address=self._signer.address(key),
                to_address=row.address,
                asset=asset,
                amount_chain=amount_chain,
                on_signed=approved_to_signed,
                clock=self._clock,
            )
        except OutgoingRefused:
            log.info("withdrawal %s left APPROVED before it was signed (canceled)", wid)
            return
        await pause_point("after_sign")  # the crash tests: SIGNED and stored, not sent

    # -- broadcast ----------------------------------------------------------------------

    async def _rows(self, adapter: ChainAdapter, status: str) -> list[Row[tuple[object, ...]]]:
        o = custody_outgoing.c
        async with self._db.connect() as connection:
            result = await connection.execute(
                select(custody_outgoing)
                .where(o.chain == adapter.name, o.status == status)
                .order_by(o.id)
            )
            return list(result.all())

    async def _attempts(self, outgoing_id: int) -> list[Row[tuple[object, ...]]]:
        a = custody_attempts.c
        async with self._db.connect() as connection:
            result = await connection.execute(
                select(custody_attempts).where(a.outgoing_id == outgoing_id).order_by(a.id)
            )
            return list(result.all())

    async def _broadcast_signed(self, adapter: ChainAdapter) -> None:
        for outgoing in await self._rows(adapter, "SIGNED"):
            attempts = await self._attempts(outgoing.id)
            try:
                await adapter.broadcast(_signed_tx(attempts[-1]))
            except ChainUnavailable:
                # Solana: "blockhash not found" for a blockhash that expired before the
                # first send. Once it can never land, the tracker's replacement (a fresh
                # blockhash) takes over; until then the next pass sends it again.
                if await self._any_can_land(adapter, attempts):
                    raise
            except BroadcastRejected as refusal:
                log.warning("outgoing %s: broadcast refused: %s", outgoing.id, refusal.reason)
                if await self._any_on_chain(adapter, attempts):
                    pass  # sent before a kill (e.g. "nonce too low" for its own mined nonce)
                elif await self._any_can_land(adapter, attempts):
                    continue  # e.g. the hot wallet short of gas: retried next pass
                else:
                    await self._fail(outgoing, f"the chain refused it: {refusal.reason}", None)
                    continue
            await pause_point("after_broadcast")  # the crash tests: sent, still SIGNED
            await self._mark_broadcast(outgoing, attempts[-1].id)

    async def _any_on_chain(
        self, adapter: ChainAdapter, attempts: list[Row[tuple[object, ...]]]
    ) -> bool:
        """Whether the chain knows any attempt (mempool, mined or reverted)."""
        for attempt in attempts:
            if (await adapter.status(attempt.txid)).state != "UNKNOWN":
                return True
        return False

    async def _any_can_land(
        self, adapter: ChainAdapter, attempts: list[Row[tuple[object, ...]]]
    ) -> bool:
        """Whether any attempt is on chain, in the mempool, or could still be included."""
        for attempt in attempts:
            status = await adapter.status(attempt.txid)
            if status.state != "UNKNOWN" or await adapter.can_still_land(_signed_tx(attempt)):
                return True
        return False

    async def _mark_broadcast(self, outgoing: Row[tuple[object, ...]], attempt_id: int) -> None:
        now = self._clock()
        async with self._db.begin() as connection:
            await connection.execute(
                update(custody_attempts)
                .where(custody_attempts.c.id == attempt_id)
                .values(broadcast_at=now)
            )
            await self._move(connection, outgoing, ("SIGNED",), "BROADCAST", now)

    async def _move(
        self,
        connection: AsyncConnection,
        outgoing: Row[tuple[object, ...]],
        before: tuple[str, ...],
        after: str,
        now: int,
        reason: str | None = None,
        values: Mapping[str, object] | None = None,
    ) -> bool:
        """Compare-and-set the outgoing row (and its withdrawal's) from ``before``."""
        o = custody_outgoing.c
        moved = await connection.execute(
            update(custody_outgoing)
            .where(o.id == outgoing.id, o.status.in_(before))
            .values(status=after, updated_at=now, **(values or {}))
        )
        if moved.rowcount and outgoing.kind == "WITHDRAWAL":
            w = custody_withdrawals.c
            changes: dict[str, object] = {"status": after, "updated_at": now}
            if reason is not None:
                changes["reason"] = reason
            await connection.execute(
                update(custody_withdrawals)
                .where(w.withdrawal_id == outgoing.ref, w.status.in_(("SIGNED", "BROADCAST")))
                .values(**changes)
            )
        return bool(moved.rowcount)

    async def _fail(
        self, outgoing: Row[tuple[object, ...]], reason: str, seen: _Seen | None
    ) -> None:
        """FAILED for good (no attempt can land, or the mined one reverted): the
        withdrawal's hold goes back to the user."""
        mined = {} if seen is None else self._mined_values(seen)
        async with self._db.begin() as connection:
            await self._move(
                connection,
                outgoing,
                ("SIGNED", "BROADCAST"),
                "FAILED",
                self._clock(),
                reason,
                mined,
            )
        if outgoing.kind == "WITHDRAWAL":
            await release_hold(self._db, self._port, outgoing.ref)

    # -- track --------------------------------------------------------------------------

    @staticmethod
    def _mined_values(seen: _Seen) -> dict[str, object]:
        return {
            "txid": seen.attempt.txid,
            "fee_paid_chain": str(seen.status.fee_paid),
            "mined_height": seen.status.height,
        }

    async def _track_broadcast(self, adapter: ChainAdapter) -> None:
        confirmations = self._custody.chain(adapter.name).confirmations
        for outgoing in await self._rows(adapter, "BROADCAST"):
            attempts = await self._attempts(outgoing.id)
            seen = [_Seen(a, await adapter.status(a.txid)) for a in attempts]
            landed = next((s for s in seen if s.status.state in ("MINED", "FAILED")), None)
            if landed is not None:
                assert landed.status.height is not None
                if await adapter.head() - landed.status.height + 1 >= confirmations:
                    await self._finish_landed(outgoing, landed)
                continue
            await self._unmined(adapter, outgoing, attempts, seen)

    async def _finish_landed(self, outgoing: Row[tuple[object, ...]], landed: _Seen) -> None:
        if landed.status.state == "FAILED":
            await self._fail(outgoing, "the transaction reverted on chain", landed)
            return
        async with self._db.begin() as connection:
            await self._move(
                connection,
                outgoing,
                ("BROADCAST",),
                "COMPLETED",
                self._clock(),
                values=self._mined_values(landed),
            )
        if outgoing.kind == "WITHDRAWAL":
            await settle_hold(self._db, self._port, outgoing.ref)

    async def _unmined(
        self,
        adapter: ChainAdapter,
        outgoing: Row[tuple[object, ...]],
        attempts: list[Row[tuple[object, ...]]],
        seen: list[_Seen],
    ) -> None:
        last = attempts[-1]
        if not adapter.uses_nonces and not await adapter.can_still_land(_signed_tx(last)):
            # Solana: the last blockhash expired and no attempt is on chain (checked above
            # for every attempt): for good, so a new blockhash signs it again now, without
            # waiting stuck_seconds (resending the dead bytes could never land).
            await self._replace(
                adapter, outgoing, await adapter.fees(self.chain_asset(outgoing.asset)), None
            )
            return
        stuck_ms = int(self._custody.chain(adapter.name).stuck_seconds * 1000)
        if self._clock() - last.created_at < stuck_ms:
            if all(s.status.state == "UNKNOWN" for s in seen):
                await self._rebroadcast(adapter, last)  # a node may have dropped it
            return
        if adapter.uses_nonces:
            if not await self._any_can_land(adapter, attempts):
                await self._fail(outgoing, "its nonce was used by another transaction", None)
                return
            fee = _at_least(
                fee_bumped(_signed_tx(last).fee),
                await adapter.fees(self.chain_asset(outgoing.asset)),
            )
            await self._replace(adapter, outgoing, fee, last.nonce)

    async def _rebroadcast(self, adapter: ChainAdapter, attempt: Row[tuple[object, ...]]) -> None:
        try:
            await adapter.broadcast(_signed_tx(attempt))
        except BroadcastRejected as refusal:
            log.info("rebroadcast of %s refused: %s", attempt.txid, refusal.reason)

    async def _replace(
        self,
        adapter: ChainAdapter,
        outgoing: Row[tuple[object, ...]],
        fee: FeeQuote,
        nonce: int | None,
    ) -> None:
        """A new attempt of the same transfer (same nonce on EVM), stored, then sent."""
        key = KeyRef(adapter.kind, outgoing.from_role, outgoing.from_index)
        spend = Spend(
            key,
            outgoing.from_address,
            outgoing.to_address,
            self.chain_asset(outgoing.asset),
            int(outgoing.amount_chain),
            fee,
            nonce,
        )
        signed = await adapter.sign(spend, self._signer)
        try:
            async with self._db.begin() as connection:
                await _insert_attempt(connection, adapter.name, outgoing.id, signed, self._clock())
        except IntegrityError:
            return  # a second sender stored this very replacement first
        log.info("outgoing %s: new attempt %s (fees %s)", outgoing.id, signed.txid, fee)
        try:
            await adapter.broadcast(signed)
        except BroadcastRejected as refusal:
            log.warning("replacement %s refused: %s", signed.txid, refusal.reason)


def _at_least(bumped: FeeQuote, quote: FeeQuote) -> FeeQuote:
    """The bumped fees, or the node's current quote where it asks for more."""
    return FeeQuote(
        max(bumped.max_fee, quote.max_fee),
        max(bumped.priority_fee, quote.priority_fee),
        max(bumped.gas_limit, quote.gas_limit),
    )
