"""Which (user, client order id) pairs have ever been used, without a database read.

``POST /orders`` treats ``client_order_id`` as an idempotency key for the lifetime of the
account, so a new id must be checked against history. Asking the database on every order
doubled the order latency; this keeps a scalable Bloom filter of every pair instead,
seeded from the projection at start (which has caught up with the journal by then) and
fed by a sequencer listener with each accepted order. "No" is certain; "maybe" (a real
repeat, or a false positive about 1 % of the time) is settled by the database.
"""

from __future__ import annotations

import hashlib
import math

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.core.events import OrderAccepted
from mercato.port import AppliedBatch
from mercato.store.tables import orders

FALSE_POSITIVE_RATE = 0.01
FIRST_CAPACITY = 1 << 16


class _Bloom:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.count = 0
        self.bits_count = math.ceil(-capacity * math.log(FALSE_POSITIVE_RATE) / math.log(2) ** 2)
        self.hashes = max(1, round(self.bits_count / capacity * math.log(2)))
        self.bits = bytearray((self.bits_count + 7) // 8)

    def positions(self, digest: bytes) -> list[int]:
        first = int.from_bytes(digest[:8], "little")
        second = int.from_bytes(digest[8:], "little") | 1
        return [(first + i * second) % self.bits_count for i in range(self.hashes)]

    def add(self, digest: bytes) -> None:
        for bit in self.positions(digest):
            self.bits[bit >> 3] |= 1 << (bit & 7)
        self.count += 1

    def __contains__(self, digest: bytes) -> bool:
        return all(self.bits[bit >> 3] & (1 << (bit & 7)) for bit in self.positions(digest))


def _digest(user: int, client_order_id: str) -> bytes:
    return hashlib.blake2b(f"{user}:{client_order_id}".encode(), digest_size=16).digest()


class KnownClientIds:
    """A Bloom filter that doubles its capacity as it fills, so the false-positive rate
    stays near 1 % however many orders the exchange has seen."""

    def __init__(self) -> None:
        self._filters = [_Bloom(FIRST_CAPACITY)]

    def add(self, user: int, client_order_id: str) -> None:
        last = self._filters[-1]
        if last.count >= last.capacity:
            last = _Bloom(last.capacity * 2)
            self._filters.append(last)
        last.add(_digest(user, client_order_id))

    def may_contain(self, user: int, client_order_id: str) -> bool:
        digest = _digest(user, client_order_id)
        return any(digest in bloom for bloom in self._filters)

    async def seed(self, db: AsyncEngine) -> None:
        query = sa.select(orders.c.user_id, orders.c.client_order_id).where(
            orders.c.client_order_id != ""
        )
        async with db.connect() as connection:
            for row in await connection.execute(query):
                self.add(row.user_id, row.client_order_id)

    def on_batch(self, batch: AppliedBatch) -> None:
        for result in batch.results:
            for event in result.events:
                if isinstance(event, OrderAccepted) and event.client_order_id:
                    self.add(event.user, event.client_order_id)
