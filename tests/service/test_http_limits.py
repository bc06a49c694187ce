"""The embedded server protects itself, over raw sockets against `mercato serve`.

Oversized request heads get 431 and the connection closes before the head was read;
heads and bodies that do not arrive by their deadline get 408 (a deadline from the first
byte, which dribbling does not extend); connections past the per-IP cap are refused
while other addresses are served (docs/configuration.md, "HTTP limits").
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import websockets.sync.client as ws_client

from service.conftest import Server

# Waits in these tests are bounds for what must happen far sooner, never measurements.
WAIT = 15.0
HEAD_TIMEOUT = 1  # seconds, in the configured servers
PER_IP = 3


def started(tmp_path: Path, env: dict[str, str], servers: list[Server], config: str) -> Server:
    args: tuple[str, ...] = ()
    if config:
        path = tmp_path / "mercato.toml"
        path.write_text(config)
        args = ("--config", str(path))
    server = Server(tmp_path / "data", env, *args)
    servers.append(server)
    server.wait_ready()
    return server


def connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), WAIT, (source, 0))
    sock.settimeout(WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after the answer is a close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_and_body(answer: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def test_an_oversized_head_gets_431_and_is_not_read_to_its_end(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    server = started(tmp_path, env, servers, "")  # the defaults: 16 KiB heads
    total = 64 * 1024 * 1024
    sock = connect(server)
    sent = 0

    def send_header() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed: what this test wants

    sender = threading.Thread(target=send_header)
    sender.start()
    answer = read_until_closed(sock)
    sender.join(WAIT)
    sock.close()
    assert status_and_body(answer) == (431, {
        "code": "HEADERS_TOO_LARGE",
        "message": "the request line and headers are limited to 16384 bytes"})  # fmt: skip
    assert sent < total  # the server closed long before the 64 MiB were through
    # Just under the cap is served, and so is a body larger than the cap (the body is not
    # part of the head), whichever way the reads split head and body.
    fits = httpx.get(f"{server.url}/health/live", headers={"X-Fill": "a" * 15_000})
    assert fits.status_code == 200
    body = json.dumps({"email": "a" * 60_000 + "@example.com", "password": "x"})
    login = httpx.post(f"{server.url}/api/v1/auth/login", content=body,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert login.status_code == 400, login.text
    with connect(server) as sock:  # a whole oversized head in one write, answered at once
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert status_and_body(read_until_closed(sock))[0] == 431
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_late_heads_and_bodies_are_cut_off_by_their_deadline(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    config = f"[http]\nhead_timeout = {HEAD_TIMEOUT}\nbody_timeout = {HEAD_TIMEOUT}\n"
    server = started(tmp_path, env, servers, config)
    timeout = {"code": "REQUEST_TIMEOUT",
               "message": f"the request head must arrive within {HEAD_TIMEOUT} s"}  # fmt: skip
    with connect(server) as silent:  # a partial head, then nothing
        silent.sendall(b"GET /health/live HTTP/1.1\r\nHost")
        assert status_and_body(read_until_closed(silent)) == (408, timeout)
    with connect(server) as idle:  # a connection that never sends: closed, no answer
        assert read_until_closed(idle) == b""
    # A slowloris: a byte every 0.1 s keeps an idle timer from ever firing; the deadline
    # counts from the first byte, so it is cut off long before its 200-byte head is through.
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 150 + b"\r\n\r\n"
    dribbled = 0
    with connect(server) as slow:
        try:
            for byte in head:
                slow.sendall(bytes([byte]))
                dribbled += 1
                time.sleep(0.1)
        except OSError:
            pass
        answer = read_until_closed(slow)
    assert dribbled < len(head)
    assert status_and_body(answer) == (408, timeout)
    # A body that stops short of its Content-Length: 408 once the body deadline passes.
    with connect(server) as short:
        short.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 99\r\n\r\n{")  # fmt: skip
        assert status_and_body(read_until_closed(short)) == (408, {
            "code": "REQUEST_TIMEOUT",
            "message": f"the request body must arrive within {HEAD_TIMEOUT} s"})  # fmt: skip
    # The deadlines are per request: a keep-alive connection whose requests each arrive
    # whole is served for longer than any deadline.
    with connect(server) as kept:
        for _ in range(6):
            kept.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"live"}') and (chunk := kept.recv(65536)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            time.sleep(HEAD_TIMEOUT / 2)
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_connections_past_the_per_ip_cap_are_refused_while_other_addresses_are_served(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    # No trusted proxies: 127.0.0.1 is a client like any other (proxies are exempt).
    config = f"[http]\ntrusted_proxies = []\nmax_connections_per_ip = {PER_IP}\n"
    server = started(tmp_path, env, servers, config)
    refused = {
        "code": "TOO_MANY_CONNECTIONS",
        "message": f"at most {PER_IP} open connections per IP address: close one first",
    }
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    with contextlib.ExitStack() as stack:  # WebSockets hold slots too
        held = [stack.enter_context(ws_client.connect(ws_url)) for _ in range(PER_IP)]
        for socket_ in held:
            socket_.send('{"op": "ping", "id": 1}')
            assert '"pong"' in str(socket_.recv(timeout=WAIT))
        with connect(server) as extra:
            assert status_and_body(read_until_closed(extra)) == (429, refused)
        with connect(server, source="127.0.0.2") as other:  # another address is served
            other.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(other).startswith(b"HTTP/1.1 200 ")
        held.pop().close()
        deadline = time.monotonic() + WAIT  # the server notices the close, then frees its slot
        while True:
            with connect(server) as again:
                again.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = read_until_closed(again)
            if answer.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
