"""uvicorn's httptools protocol with the limits an exposed server needs.

uvicorn (with httptools) reads request heads of any size, waits for a head or a body
forever, and lets one address hold any number of connections. Here, per server
(docs/configuration.md, "HTTP limits"):

- a request head (request line and header lines) over ``max_head_bytes`` is answered
  431 and the connection closed, after at most one read past the limit: the rest of the
  head is never read;
- a request's head must be complete ``head_timeout`` seconds after its first byte (a new
  connection's after it opened), its body ``body_timeout`` seconds after the head: a
  deadline, not an idle timer, so dribbling one byte at a time does not extend it. A
  late request is answered 408 (a connection that sent nothing is just closed);
- a peer address holds at most ``max_connections_per_ip`` open connections, WebSockets
  included; the connection past it is answered 429 and closed. Trusted proxies are
  exempt: behind one, every client shares its address (limit connections there).

Refusals use the API's error body and close after a short linger, so the client reads
the answer before the socket goes. Deadlines are checked by one sweep over the open
connections a few times per timeout, not by a timer per request, and armed only when a
read ends inside a head or a body (docs/benchmarks.md, "HTTP limits", for the cost).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from mercato.api.client_address import TrustedProxies, parse_address
from mercato.config import HttpConfig

#: Seconds a refused connection stays open (reading nothing) so its answer arrives
#: before the close; closing with unread input at once may reset the connection first.
LINGER_SECONDS = 1.0
#: The largest WebSocket message read; a larger one closes the connection with 1009.
WS_MAX_MESSAGE_BYTES = 64 * 1024

# What a connection is waiting for while its deadline runs.
NEW, HEAD, BODY = "new", "head", "body"


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class ConnectionSlots:
    """Open connections per peer address; trusted proxies are not counted."""

    def __init__(self, limit: int, trusted: TrustedProxies) -> None:
        self.limit = limit
        self.trusted = trusted
        self.open: dict[str, int] = {}

    def acquire(self, host: str) -> tuple[bool, str | None]:
        """Whether ``host`` may open one more connection, and the key to release when it
        closes (None for a peer that is not counted)."""
        address = parse_address(host)
        if address is None or address in self.trusted:
            return True, None
        key = str(address)
        count = self.open.get(key, 0)
        if count >= self.limit:
            return False, None
        self.open[key] = count + 1
        return True, key

    def release(self, key: str) -> None:
        count = self.open.pop(key) - 1
        if count:
            self.open[key] = count


class Guard:
    """One server's limits, connection slots and deadline sweep."""

    def __init__(self, limits: HttpConfig) -> None:
        self.limits = limits
        self.slots = ConnectionSlots(limits.max_connections_per_ip,
                                     TrustedProxies(limits.trusted_proxies))  # fmt: skip
        self.watched: set[GuardedHttpToolsProtocol] = set()
        self.sweep_every = min(1.0, max(0.05, min(limits.head_timeout, limits.body_timeout) / 10))
        self._sweep: asyncio.TimerHandle | None = None

    def watch(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.watched.add(protocol)
        if self._sweep is None:
            self._sweep = protocol.loop.call_later(self.sweep_every, self.sweep, protocol.loop)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for protocol in [p for p in self.watched if p.deadline is not None and p.deadline < now]:
            protocol.expire()
        self._sweep = loop.call_later(self.sweep_every, self.sweep, loop) if self.watched else None


def error_answer(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message}).encode()
    head = (b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body))  # fmt: skip
    return STATUS_LINE[status] + head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the head size cap, the deadlines and the per-IP slots.

    Deadlines are armed only when a read ends inside a head or a body: a request that
    arrives in one read (nearly all of them) never arms one, so the common path gains
    only a few attribute checks after each read and the size check at the end of a head.
    """

    guard: Guard  # set on the subclass made by protocols_for

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot: str | None = None
        self.deadline: float | None = None
        self.waiting = NEW
        self.timed: object = None  # the scope (head) or cycle (body) the deadline is for
        self.head_bytes = 0  # of reads that began and ended inside the current head
        self.chunk = 0  # length of the read being parsed
        self.refused = False

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        accepted, self.slot = guard.slots.acquire(self.client[0]) if self.client else (True, None)
        if not accepted:
            limit = guard.limits.max_connections_per_ip
            message = f"at most {limit} open connections per IP address: close one first"
            self.refuse(429, "TOO_MANY_CONNECTIONS", message)
            return
        self.deadline = self.loop.time() + guard.limits.head_timeout  # for its first head
        guard.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.watched.discard(self)
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self.slot is not None:
            self.guard.slots.release(self.slot)
            self.slot = None

    def handle_websocket_upgrade(self) -> None:
        """The WebSocket protocol takes over the connection, and with it the slot."""
        self.guard.watched.discard(self)
        slot, self.slot = self.slot, None
        super().handle_websocket_upgrade()
        successor = self.transport.get_protocol()
        if isinstance(successor, GuardedWebSocketProtocol):
            successor.slot = (self.guard.slots, slot) if slot is not None else None
        elif slot is not None:
            self.guard.slots.release(slot)

    # -- reading ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._unset_keepalive_if_required()
        self.chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self.refused:  # not our own stop (_Refused from a callback)
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        scope = self.scope
        if scope is None:
            return
        if "method" not in scope:  # uvicorn sets it once the head is complete
            self._inside_head(scope, len(data))
        elif (cycle := self.cycle) is not None and cycle.more_body and cycle is not self.timed:
            self._time(cycle, BODY, self.guard.limits.body_timeout)

    def _inside_head(self, scope: object, size: int) -> None:
        """The read ended inside a request head: time it, and count what is head."""
        if scope is not self.timed:  # the head began in this read: how much is head is
            self.head_bytes = 0  # unknown, so counting starts with the next read
            if self.waiting == NEW:  # a connection's first head: its deadline runs already
                self.timed = scope
            else:
                self._time(scope, HEAD, self.guard.limits.head_timeout)
            return
        self.head_bytes += size
        if self.head_bytes > self.guard.limits.max_head_bytes:
            self._refuse_head()

    def _time(self, what: object, waiting: str, seconds: float) -> None:
        self.timed, self.waiting = what, waiting
        self.deadline = self.loop.time() + seconds

    def on_headers_complete(self) -> None:
        limit = self.guard.limits.max_head_bytes
        if self.head_bytes + self.chunk > limit and self._head_size() > limit:
            self._refuse_head()
            raise _Refused
        self.head_bytes = 0
        if self.waiting == NEW:  # the connection's first head is in: its deadline is done
            self.waiting, self.deadline = HEAD, None
        super().on_headers_complete()

    def _head_size(self) -> int:
        """The head's size as received, give or take the spaces around header values."""
        request_line = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        return request_line + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

    # -- refusing -----------------------------------------------------------------------

    def expire(self) -> None:
        """The deadline passed: close the connection, with a 408 if a request began and
        has no answer yet; nothing if what was timed arrived since (the deadline is stale:
        nothing disarms it when a head or body completes)."""
        self.deadline = None
        cycle = self.cycle
        if self.waiting == NEW:  # the connection's first head did not come in time
            if self.scope is None:
                self.transport.close()  # not a byte of it: nobody to answer
            else:
                self._refuse_late(HEAD, self.guard.limits.head_timeout)
        elif self.waiting == HEAD and self.timed is self.scope and "method" not in self.scope:
            if cycle is None or cycle.response_complete:
                self._refuse_late(HEAD, self.guard.limits.head_timeout)
            else:
                self.transport.close()  # a pipelined head behind an answer being written
        elif self.waiting == BODY and self.timed is cycle and cycle.more_body:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the handler waiting for the body gets a disconnect
            cycle.message_event.set()
            self._refuse_late(BODY, self.guard.limits.body_timeout)

    def _refuse_late(self, part: str, seconds: float) -> None:
        self.refuse(408, "REQUEST_TIMEOUT", f"the request {part} must arrive within {seconds:g} s")

    def _refuse_head(self) -> None:
        limit = self.guard.limits.max_head_bytes
        self.refuse(431, "HEADERS_TOO_LARGE",
                    f"the request line and headers are limited to {limit} bytes")  # fmt: skip

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer with the error body, read nothing more, close after LINGER_SECONDS."""
        self.refused = True
        self.deadline = None
        self.guard.watched.discard(self)
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(error_answer(status, code, message))
        transport.pause_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, releasing the per-IP slot it took over."""

    slot: tuple[ConnectionSlots, str] | None = None

    def send_receive_event_to_app(self) -> None:
        """As uvicorn's, but a text message that is not UTF-8 is closed with 1007 (as
        RFC 6455 wants) without logging a traceback: any client can send one."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()  # messages are small (WS_MAX_MESSAGE_BYTES)
            except UnicodeDecodeError:
                self.frames = []
                self.logger.info("WebSocket closed with 1007: a text message was not UTF-8")
                self.conn.send_close(1007, "text messages must be UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            slots, key = self.slot
            self.slot = None
            slots.release(key)
        super().connection_lost(exc)


def protocols_for(limits: HttpConfig) -> tuple[type[GuardedHttpToolsProtocol], type]:
    """The HTTP and WebSocket protocol classes of one server (for ``uvicorn.Config``)."""
    guard = Guard(limits)
    http = type("MercatoHttpProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
    return http, GuardedWebSocketProtocol
