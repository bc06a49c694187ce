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
        # A flush that were not held would run on the loop's next turn, as the first did;
        # a wall-clock probe (sleeping half the gap) failed on a loaded machine.
        await asyncio.sleep(0)
        assert _woken(clients) == 0  # held for the gap
        await asyncio.sleep(gap * 1.5)
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


def test_a_binance_client_gets_one_message_per_frame_and_no_json_pings() -> None:
    """Binance's streams never batch messages into an array; their heartbeat is the
    WebSocket protocol's ping, so the hub neither pings them in JSON nor drops them as
    idle (protocol pongs never reach the application)."""

    async def scenario() -> tuple[list[str], list[str]]:
        hub = Hub(flush_interval=0.01, idle_timeout=0.0)
        native, binance = await _clients(hub, 2)
        binance.native = False
        frames: dict[Client, list[str]] = {native: [], binance: []}

        async def never_closes(code: int, reason: str) -> None:
            pass

        for client in (native, binance):

            async def send(text: str, client: Client = client) -> None:
                frames[client].append(text)

            client.writer = asyncio.get_running_loop().create_task(
                hub.run_writer(client, send, never_closes)
            )
        for n in range(3):
            hub.publish("trades.BTC-USDT", f'{{"n":{n}}}')
        await asyncio.sleep(0.05)
        hub.heartbeat()  # idle_timeout 0: the native client is closed as idle
        await asyncio.sleep(0.05)
        assert native.closing and not binance.closing
        await hub.close_all()
        return frames[native], frames[binance]

    native_frames, binance_frames = asyncio.run(scenario())
    assert native_frames == ['[{"n":0},{"n":1},{"n":2}]']
    assert binance_frames == ['{"n":0}', '{"n":1}', '{"n":2}']
