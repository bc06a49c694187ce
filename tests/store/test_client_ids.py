"""The Bloom filter of used client order ids: never a false "no", rarely a false "maybe"."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert

from mercato.readmodels.client_ids import FIRST_CAPACITY, KnownClientIds
from mercato.store import create_engine, migrate
from mercato.store.tables import orders


def test_every_added_id_is_known_and_few_others_are() -> None:
    known = KnownClientIds()
    count = FIRST_CAPACITY * 3  # past two growths
    for index in range(count):
        known.add(index % 97, f"bot-{index}")
    assert all(known.may_contain(index % 97, f"bot-{index}") for index in range(count))
    # Ids never used, and used ids of another user, are mostly known as unused: about 1 %
    # false positives per filter, and there are three filters now.
    strangers = sum(known.may_contain(1, f"other-{index}") for index in range(20_000))
    other_user = sum(known.may_contain(1000, f"bot-{index}") for index in range(20_000))
    assert strangers < 20_000 * 0.04 and other_user < 20_000 * 0.04


def test_seeded_from_the_projection(database_url: str) -> None:
    async def scenario() -> KnownClientIds:
        await migrate(database_url)
        db = create_engine(database_url)
        row = {c.name: 0 for c in orders.columns}
        row.update(market="BTC-USDT", side="BUY", type="LIMIT", time_in_force="GTC",
                   stp="NONE", status="FILLED", reason="", fee_asset=None,
                   triggered_at=None)  # fmt: skip
        try:
            async with db.begin() as connection:
                await connection.execute(insert(orders), [
                    {**row, "order_id": 1, "user_id": 7, "client_order_id": "a"},
                    {**row, "order_id": 2, "user_id": 8, "client_order_id": ""},
                ])  # fmt: skip
            known = KnownClientIds()
            await known.seed(db)
            return known
        finally:
            await db.dispose()

    known = asyncio.run(scenario())
    assert known.may_contain(7, "a")
    assert not known.may_contain(8, "")  # orders without an id are not keys
