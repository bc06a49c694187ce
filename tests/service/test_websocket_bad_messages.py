"""Bad WebSocket messages get an error reply and the connection stays, against a real
`mercato serve` over a real WebSocket (docs/websocket.md, "Bad messages")."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import websockets.sync.client as ws_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection

from service.conftest import Server

WAIT = 15.0
INVALID = "INVALID_REQUEST"


def serve(tmp_path: Path, env: dict[str, str], servers: list[Server]) -> Server:
    config = tmp_path / "mercato.toml"
    config.write_text("[rate_limits]\nenabled = false\n")  # every message takes an IP token
    server = Server(tmp_path / "data", env, "--config", str(config))
    servers.append(server)
    server.wait_ready()
    return server


def messages(socket: ClientConnection) -> Any:
    """The server's messages one by one (a frame holds one, or an array of several)."""
    while True:
        frame = json.loads(socket.recv(timeout=WAIT))
        yield from frame if isinstance(frame, list) else [frame]


_probes = itertools.count()


def still_answers(socket: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping; the messages that came before its pong (the connection is alive)."""
    probe = f"probe-{next(_probes)}"
    socket.send(json.dumps({"op": "ping", "id": probe}))
    before = []
    for message in messages(socket):
        if message.get("type") == "pong" and message.get("id") == probe:
            return before
        before.append(message)
    raise AssertionError("unreachable")


BAD = [
    ("[" * 4000, "nested deeper than the decoder goes"),
    ("{" + '"a":{' * 1500, "nested objects, unterminated"),
    ("[" * 2000 + "]" * 2000, "nested deep but complete"),
    ("not json", "not JSON"),
    ('{"op": "subscribe"', "truncated"),
    ("[1, 2]", "not an object"),
    ("null", "not an object"),
    ('{"op": 7}', "op of the wrong type"),
    ('{"op": "subscribe", "channels": "trades.BTC-USDT"}', "channels not a list"),
    ('{"op": "subscribe", "channels": [[[[1]]]]}', "channel names not strings"),
    ('{"op": "ping", "id": [1]}', "id of the wrong type"),
    ("x" * 60_000, "over the 4096-character limit"),
    ('"\\ud800"', "a lone surrogate escape"),
]

AUTH_BAD = [
    ('{"op": "auth", "token": {"a": [1]}}', "UNAUTHORIZED"),
    ('{"op": "auth", "api_key": "k", "timestamp": "soon", "signature": 5}', "INVALID_TIMESTAMP"),
    ('{"op": "auth", "api_key": ["k"], "timestamp": 1, "signature": "00"}', "UNKNOWN_API_KEY"),
]


def test_bad_messages_get_an_error_reply_and_the_connection_stays(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    server = serve(tmp_path, env, servers)
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as socket:
        for text, why in BAD:
            socket.send(text)
            replies = still_answers(socket)
            assert [(r["type"], r["code"]) for r in replies] == [("error", INVALID)], why
            assert set(replies[0]) == {"type", "id", "code", "message"}, why
        for text, code in AUTH_BAD:  # sign-in fields of the wrong type: the sign-in codes
            socket.send(text)
            assert [(r["type"], r["code"]) for r in still_answers(socket)] == [("error", code)]
        socket.send(b'{"op": "ping", "id": 1}')  # a binary frame
        assert [r["message"] for r in still_answers(socket)] == ["send JSON in text frames"]
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as socket:
        socket.send("x" * (64 * 1024 + 1))  # past the frame limit: closed with 1009
        with pytest.raises(ConnectionClosedError) as closed:
            socket.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/ws") as socket:
        with socket.protocol_mutex:  # a text frame that is not UTF-8: the client would refuse
            socket.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
            socket.send_data()
        with pytest.raises(ConnectionClosedError) as closed:
            socket.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert "Traceback" not in server.output()


SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
KEYS = st.sampled_from(["op", "id", "channels", "token", "api_key"]) | st.text(max_size=5)
MESSAGES = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.integers(1, 5000).map(lambda depth: "[" * depth),
    st.tuples(st.integers(1, 2000), st.sampled_from(["[", '{"a":'])).map(lambda t: t[1] * t[0]),
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(KEYS, inner, max_size=4), max_leaves=30).map(json.dumps),
)  # fmt: skip


def test_any_message_leaves_the_connection_open_and_answering(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    server = serve(tmp_path, env, servers)
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as socket:

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(MESSAGES)
        def survives(message: str | bytes) -> None:
            socket.send(message)
            still_answers(socket)

        survives()
    assert "Traceback" not in server.output()
