"""The in-process port: commands in, results and durable batches out, reads by the view."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mercato.core.commands import CreditDeposit, UpsertAsset
from mercato.journal import AsyncSequencer
from mercato.port import AppliedBatch, ExchangePort
from mercato.port.in_process import InProcessPort


def test_submit_subscribe_and_read(tmp_path: Path) -> None:
    async def main() -> None:
        sequencer = await AsyncSequencer.open(tmp_path)
        port: ExchangePort = InProcessPort(sequencer)
        seen: list[AppliedBatch] = []
        port.subscribe(seen.append)
        added = await port.submit(UpsertAsset("BTC", 8))
        credited = await port.submit_many(
            [CreditDeposit(1, "BTC", 5, "a"), CreditDeposit(1, "BTC", 7, "b")]
        )
        assert [r.status for r in (added, *credited)] == ["ACCEPTED"] * 3
        assert port.last_seq == port.view.last_seq == 3
        assert port.view.balance(1, "BTC") == (12, 0)
        # every command reached the listener once, in seq order, with its result
        assert (seen[0].seq0, seen[0].last_seq) == (1, 1)
        applied = [(b.seq0 + i, r) for b in seen for i, r in enumerate(b.results)]
        assert [seq for seq, _ in applied] == [1, 2, 3]
        assert [r for _, r in applied] == [added, *credited]
        await sequencer.close()

    asyncio.run(main())
