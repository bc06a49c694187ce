"""The whole loop over the wire, on both stores: orders placed over HTTP reach the book
and each user's private stream on `mercato serve --dev`, and nothing of one user reaches
the other."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from service.conftest import Backend, Server
from service.test_trading import ann_and_bob


async def receive(socket: Any, seconds: float = 0.5) -> list[dict[str, Any]]:
    """Messages arriving within ``seconds`` (frames may hold one message or a list)."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), seconds))
            messages += frame if isinstance(frame, list) else [frame]
    except TimeoutError:
        return messages


async def signed_in(url: str, token: str, channels: list[str]) -> Any:
    socket = await websockets.connect(url)
    await socket.send(json.dumps({"op": "auth", "id": 1, "token": token}))
    await socket.send(json.dumps({"op": "subscribe", "id": 2, "channels": channels}))
    return socket


def test_orders_over_http_stream_to_the_book_and_to_their_owner_only(
    backend: Backend, servers: list[Server]
) -> None:
    ann, bob, server = ann_and_bob(backend, servers)
    ann.fund("USDT", "100000")
    bob.fund("BTC", "1")
    ws_url = server.url.replace("http://", "ws://") + "/ws"

    async def scenario() -> tuple[list[dict[str, Any]], ...]:
        token = {t: str(t.http.headers["authorization"]).split()[1] for t in (ann, bob)}
        ann_ws = await signed_in(ws_url, token[ann], ["orders", "fills", "balances"])
        bob_ws = await signed_in(ws_url, token[bob], ["orders", "fills", "balances"])
        book_ws = await websockets.connect(ws_url)
        await book_ws.send(json.dumps({"op": "subscribe", "channels": ["depth.BTC-USDT"]}))
        await asyncio.gather(receive(ann_ws), receive(bob_ws), receive(book_ws))  # snapshots
        await asyncio.to_thread(bob.place, side="SELL", price="50000", quantity="0.5")
        book_after_rest = await receive(book_ws)
        await asyncio.to_thread(ann.place, side="BUY", price="50000", quantity="0.2")
        streams = await asyncio.gather(receive(ann_ws), receive(bob_ws), receive(book_ws))
        for socket in (ann_ws, bob_ws, book_ws):
            await socket.close()
        return (book_after_rest, *streams)

    book_after_rest, ann_msgs, bob_msgs, book_msgs = asyncio.run(scenario())
    asks = [level for m in book_after_rest if m.get("type") == "update" for level in m["asks"]]
    assert asks == [["50000", "0.5"]]
    assert [level for m in book_msgs if m.get("type") == "update" for level in m["asks"]] == [
        ["50000", "0.3"]
    ]
    # Ann's stream: her own order and fill, and her balances; nothing of Bob's.
    ann_orders = [m for m in ann_msgs if m.get("channel") == "orders"]
    ann_fills = [m for m in ann_msgs if m.get("channel") == "fills"]
    assert {m["order_id"] for m in ann_orders} == {2}
    assert [(f["side"], f["role"], f["quantity"], f["fee"]) for f in ann_fills] == [
        ("BUY", "TAKER", "0.2", "0.0002")
    ]
    bob_fills = [m for m in bob_msgs if m.get("channel") == "fills"]
    assert [(f["side"], f["role"], f["fee"]) for f in bob_fills] == [("SELL", "MAKER", "10")]
    assert all(m.get("order_id") in (None, 1) for m in bob_msgs)
    ann_balances = {b["asset"]: b for m in ann_msgs if m.get("channel") == "balances"
                    for b in m.get("balances", [m])}  # fmt: skip
    assert ann_balances["BTC"]["available"] == "0.1998"
    # The REST snapshot agrees with the stream.
    book = httpx.get(f"{server.url}/api/v1/markets/BTC-USDT/orderbook").json()
    assert book["asks"] == [["50000", "0.3"]]
