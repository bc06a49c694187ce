"""The hub's pacing: a flush that wakes many writers is followed by a longer gap, so the
fan-out writes at most about ``max_frames_per_second`` frames whatever the number of
clients; with few clients it flushes every ``flush_interval``. Messages published during
the gap wait for the next flush, and then leave together in one frame per client."""

from __future__ import annotations

import asyncio

import pytest

from mercato.marketdata.hub import Client, Hub


async def _clients(hub: Hub, count: int) -> list[Client]:
    clients = [hub.connect("127.0.0.1") for _ in range(count)]
    for client in clients:
        hub.subscribe(client, "trades.BTC-USDT")
    return clients


def _woken(clients: list[Client]) -> int:
    return sum(client.wake.is_set() for client in clients)


@pytest.mark.parametrize(("count", "gap"), [(5, 0.01), (100, 0.1)])
def test_the_gap_after_a_flush_grows_with_the_writers_it_woke(count: int, gap: float) -> None:
    async def scenario() -> None:
        hub = Hub(flush_interval=0.01, max_frames_per_second=1000)
        clients = await _clients(hub, count)
        hub.publish("trades.BTC-USDT", '"first"')
        await asyncio.sleep(0)  # quiet hub: the first flush runs at once
        assert _woken(clients) == count
        assert hub.flush_gap == pytest.approx(gap)
        for client in clients:
            client.wake.clear()
        hub.publish("trades.BTC-USDT", '"second"')
        hub.publish("trades.BTC-USDT", '"third"')
        await asyncio.sleep(gap / 2)
        assert _woken(clients) == 0  # held for the gap
        await asyncio.sleep(gap)
        assert _woken(clients) == count
        assert all(client.queue == ['"first"', '"second"', '"third"'] for client in clients)
        await hub.close_all()

    asyncio.run(scenario())


def test_a_flush_promised_for_later_does_not_hold_back_the_next_one() -> None:
    """flush_after (the ticker's deadline) keeps a timer of its own."""

    async def scenario() -> None:
        hub = Hub(flush_interval=0.01)
        clients = await _clients(hub, 3)
        hub.flush_after(30.0)
        hub.publish("trades.BTC-USDT", '"now"')
        await asyncio.sleep(0.05)
        assert _woken(clients) == 3
        await hub.close_all()

    asyncio.run(scenario())
