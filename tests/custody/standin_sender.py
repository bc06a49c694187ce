"""STAND-IN until mercato.custody.sender merges: the smallest ``create_outgoing`` and
sender pass with the contract of docs/custody.md ("Sending, never twice"), so the sweeper
and reconciliation tests can drive rows through the tables as the real sender will.

``create_outgoing`` allocates the nonce, signs and inserts the outgoing row (SIGNED) and
its first attempt in ONE transaction; a duplicate (kind, ref) raises IntegrityError.
``send_and_track`` broadcasts the SIGNED rows and, once their transaction is mined, marks
them COMPLETED with the network fee paid. No fee bumping, no retries: the real sender's
business and its own tests. Replace with the real sender when it lands."""

from __future__ import annotations

import time

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.custody.chains.base import (
    ChainAdapter,
    ChainAsset,
    FeeQuote,
    KeyRef,
    SignedTx,
    Signer,
    Spend,
)
from mercato.store.tables import custody_attempts, custody_nonces, custody_outgoing


def _now() -> int:
    return int(time.time() * 1000)


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
    on_signed: object = None,
) -> int:
    fee = await adapter.fees(asset)
    async with db.begin() as connection:
        nonces = custody_nonces.c
        mine = (nonces.chain == adapter.name, nonces.address == from_address)
        found = (
            await connection.execute(select(nonces.next_nonce).where(*mine).with_for_update())
        ).scalar()
        if found is None:
            nonce = await adapter.next_nonce(from_address)
            await connection.execute(insert(custody_nonces).values(
                chain=adapter.name, address=from_address, next_nonce=nonce + 1))  # fmt: skip
        else:
            nonce = int(found)
            await connection.execute(
                update(custody_nonces).where(*mine).values(next_nonce=nonce + 1)
            )
        spend = Spend(key, from_address, to_address, asset, amount_chain, fee, nonce)
        signed = await adapter.sign(spend, signer)
        outgoing_id = (await connection.execute(insert(custody_outgoing).values(
            kind=kind, ref=ref, chain=adapter.name, asset=asset.symbol, from_role=key.role,
            from_index=key.index, from_address=from_address, to_address=to_address,
            amount_chain=str(amount_chain), status="SIGNED", nonce=nonce,
            created_at=_now(), updated_at=_now(),
        ).returning(custody_outgoing.c.id))).scalar_one()  # fmt: skip
        await connection.execute(insert(custody_attempts).values(
            outgoing_id=outgoing_id, chain=adapter.name, txid=signed.txid, raw=signed.raw,
            nonce=nonce, max_fee=str(fee.max_fee), priority_fee=str(fee.priority_fee),
            gas_limit=fee.gas_limit, recent_blockhash="", valid_until=None, created_at=_now(),
        ))  # fmt: skip
    return int(outgoing_id)


async def broadcast_signed(db: AsyncEngine, adapter: ChainAdapter) -> None:
    """Broadcast every SIGNED row's attempt and mark it BROADCAST."""
    async with db.begin() as connection:
        rows = (await connection.execute(
            select(custody_outgoing.c.id, custody_attempts.c.txid, custody_attempts.c.raw,
                   custody_attempts.c.nonce)
            .join(custody_attempts, custody_attempts.c.outgoing_id == custody_outgoing.c.id)
            .where(custody_outgoing.c.chain == adapter.name,
                   custody_outgoing.c.status == "SIGNED")
        )).all()  # fmt: skip
        for row in rows:
            await adapter.broadcast(SignedTx(row.txid, row.raw, row.nonce, FeeQuote(0, 0)))
            await connection.execute(update(custody_outgoing)
                                     .where(custody_outgoing.c.id == row.id)
                                     .values(status="BROADCAST", updated_at=_now()))  # fmt: skip


async def track_broadcast(db: AsyncEngine, adapter: ChainAdapter) -> None:
    """Mark every BROADCAST row whose attempt is mined COMPLETED, with its fee paid."""
    async with db.begin() as connection:
        rows = (await connection.execute(
            select(custody_outgoing.c.id, custody_attempts.c.txid)
            .join(custody_attempts, custody_attempts.c.outgoing_id == custody_outgoing.c.id)
            .where(custody_outgoing.c.chain == adapter.name,
                   custody_outgoing.c.status == "BROADCAST")
        )).all()  # fmt: skip
        for row in rows:
            status = await adapter.status(row.txid)
            if status.state != "MINED":
                continue
            await connection.execute(update(custody_outgoing)
                .where(custody_outgoing.c.id == row.id)
                .values(status="COMPLETED", txid=row.txid, fee_paid_chain=str(status.fee_paid),
                        mined_height=status.height, updated_at=_now()))  # fmt: skip
