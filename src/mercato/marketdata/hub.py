"""Fan-out of market data to WebSocket clients: channels, bounded queues, batched frames.

The engine's listener only *enqueues*: :meth:`Hub.publish` appends an already encoded
message to the queue of every subscriber of a channel (one encoding per message, shared by
all subscribers) and never waits for a socket. Each client has a writer task that drains
its whole queue into one frame (a JSON object when one message is queued, else a JSON
array of messages), so a busy market costs frames per client per flush, not per message.

Flushes (waking the writers) happen at most every ``flush_interval`` seconds: at once
when the hub is quiet, coalesced under load. A flush that woke many writers is followed by
a longer gap, ``writers / max_frames_per_second``: the fan-out then writes at most about
that many frames per second, whatever the number of clients, and the rest of the event
loop (order entry) keeps its share. Fewer, fuller frames carry the same messages. ``before_flush``
callbacks run first (the market data merges its pending depth changes there).

A client whose queue reaches ``max_queue`` messages is a slow consumer: it is dropped
from every channel at once (it costs nothing more) and its connection is closed with
code 4001 and the reason. A client that sent nothing for ``idle_timeout`` seconds (the
server pings every ``ping_interval``; any message, such as ``{"op": "pong"}``, counts) is
closed with code 4002. Binance-dialect clients (``native`` False) get one message per
frame and no JSON pings: the server's WebSocket ping frames watch them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4001
CLOSE_IDLE = 4002
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_FLUSH_INTERVAL = 0.01
#: About 25 % of a core at the ~25 µs a frame costs here (docs/benchmarks.md).
DEFAULT_MAX_FRAMES_PER_SECOND = 10_000
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_IDLE_TIMEOUT = 60.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Client:
    """One WebSocket connection as the hub sees it."""

    __slots__ = (
        "auth_expires_at",
        "channels",
        "close_code",
        "close_reason",
        "dirty",
        "ip",
        "last_received",
        "last_sent",
        "native",
        "queue",
        "sent_frames",
        "sent_messages",
        "session",
        "user",
        "wake",
        "writer",
    )

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.queue: list[str] = []
        self.wake = asyncio.Event()
        self.dirty = False
        self.channels: set[str] = set()
        self.user = 0  # authenticated user id, 0 = anonymous
        self.session = ""  # the credential it signed in with (a login session or API key)
        self.auth_expires_at = 0  # ms; 0 = does not expire (API key)
        self.close_code = 0
        self.close_reason = ""
        self.last_received = time.monotonic()
        self.last_sent = time.monotonic()
        self.writer: asyncio.Task[None] | None = None
        self.sent_frames = 0
        self.sent_messages = 0
        self.native = True
        """Mercato's protocol: batched frames, JSON pings. False for the Binance dialect:
        one message per frame, and the WebSocket protocol's pings only (the server's)."""

    @property
    def closing(self) -> bool:
        return self.close_code != 0


class Hub:
    def __init__(
        self,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_frames_per_second: int = DEFAULT_MAX_FRAMES_PER_SECOND,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.max_frames_per_second = max_frames_per_second
        self.flush_gap = flush_interval
        """The least time from the last flush to the next (grows with the writers woken)."""
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.clients: set[Client] = set()
        self.subscribers: dict[str, dict[Client, None]] = {}
        """channel -> clients (insertion-ordered). Private channels are ``name:user``."""
        self.private_users: dict[int, int] = {}
        """user -> number of private-channel subscriptions (a quick test for the listener)."""
        self.before_flush: list[Callable[[], None]] = []
        self._dirty: list[Client] = []
        self._detach: list[Client] = []
        self._flush_handle: asyncio.Handle | None = None
        self._deadline: asyncio.TimerHandle | None = None  # a flush promised by flush_after
        self._last_flush = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        self.dropped_slow = 0

    # -- connections ------------------------------------------------------------------

    def connect(self, ip: str) -> Client:
        client = Client(ip)
        self.clients.add(client)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name="mercato-ws-heartbeat"
            )
        return client

    def disconnect(self, client: Client) -> None:
        for channel in list(client.channels):
            self.unsubscribe(client, channel)
        client.queue = []
        self.clients.discard(client)

    def subscribe(self, client: Client, channel: str) -> bool:
        """Add ``client`` to ``channel``; False if it was there already."""
        if channel in client.channels:
            return False
        client.channels.add(channel)
        self.subscribers.setdefault(channel, {})[client] = None
        if ":" in channel:
            self.private_users[client.user] = self.private_users.get(client.user, 0) + 1
        return True

    def unsubscribe(self, client: Client, channel: str) -> bool:
        if channel not in client.channels:
            return False
        client.channels.discard(channel)
        subscribers = self.subscribers.get(channel)
        if subscribers is not None:
            subscribers.pop(client, None)
            if not subscribers:
                del self.subscribers[channel]
        if ":" in channel:
            left = self.private_users.get(client.user, 0) - 1
            if left > 0:
                self.private_users[client.user] = left
            else:
                self.private_users.pop(client.user, None)
        return True

    # -- delivery (synchronous: safe to call from the engine's listener) --------------

    def publish(self, channel: str, message: str) -> None:
        """Queue an encoded message for every subscriber of ``channel``."""
        subscribers = self.subscribers.get(channel)
        if subscribers:
            send = self.send
            for client in subscribers:
                send(client, message)

    def send(self, client: Client, message: str) -> None:
        """Queue one encoded message for one client (flushed at the next flush)."""
        if client.close_code:
            return
        queue = client.queue
        if len(queue) >= self.max_queue:
            self.close(client, CLOSE_SLOW_CONSUMER,
                       f"slow consumer: {len(queue)} messages were waiting to be sent")  # fmt: skip
            return
        queue.append(message)
        if not client.dirty:
            client.dirty = True
            self._dirty.append(client)
            if self._flush_handle is None:
                self._schedule_flush()

    def close(self, client: Client, code: int, reason: str) -> None:
        """Close ``client`` with ``code``: it leaves every channel now, its queue is
        dropped, and its writer (even one blocked on a full socket) sends the close."""
        if client.close_code:
            return
        if code == CLOSE_SLOW_CONSUMER:
            self.dropped_slow += 1
            log.info("closing a slow WebSocket consumer from %s: %s", client.ip, reason)
        client.close_code = code
        client.close_reason = reason
        # It may be closed from inside publish(), which iterates over the subscribers:
        # it leaves its channels at the next flush (until then send() skips it).
        self._detach.append(client)
        self.request_flush()
        client.queue = []
        writer = client.writer
        if writer is not None and not writer.done():
            writer.cancel()
        client.wake.set()

    def request_flush(self) -> None:
        """Make sure a flush is scheduled (the listener calls it after each batch)."""
        if self._flush_handle is None:
            self._schedule_flush()

    def flush_after(self, delay: float) -> None:
        """Make sure a flush happens within ``delay`` seconds, without holding back the
        flushes due sooner: this deadline has a timer of its own, so messages queued
        meanwhile still leave within ``flush_interval``."""
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(delay, self._deadline_due)

    def _deadline_due(self) -> None:
        self._deadline = None
        self.request_flush()

    def _schedule_flush(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._last_flush + self.flush_gap - loop.time()
        if delay <= 0:
            self._flush_handle = loop.call_soon(self.flush)
        else:
            self._flush_handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Run the ``before_flush`` callbacks, then wake the writer of every client with
        queued messages."""
        self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        if self._detach:
            detach, self._detach = self._detach, []
            for closed in detach:
                for channel in list(closed.channels):
                    self.unsubscribe(closed, channel)
        for callback in self.before_flush:
            try:
                callback()
            except Exception:
                log.exception("market data flush callback failed")
        dirty = self._dirty
        self.flush_gap = max(self.flush_interval, len(dirty) / self.max_frames_per_second)
        if dirty:
            self._dirty = []
            for client in dirty:
                client.dirty = False
                client.wake.set()

    # -- per-client writer --------------------------------------------------------------

    async def run_writer(self, client: Client, send_text: Callable[[str], object],
                         close: Callable[[int, str], object]) -> None:  # fmt: skip
        """Send ``client``'s queue, one frame per wake-up, until it is closed. ``send_text``
        and ``close`` are the connection's coroutine functions."""
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                if client.close_code:
                    break
                queue = client.queue
                if not queue:
                    continue
                client.queue = []
                client.sent_messages += len(queue)
                if client.native:
                    client.sent_frames += 1
                    frame = queue[0] if len(queue) == 1 else "[" + ",".join(queue) + "]"
                    await send_text(frame)  # type: ignore[misc]
                else:
                    client.sent_frames += len(queue)
                    for message in queue:
                        await send_text(message)  # type: ignore[misc]
                client.last_sent = time.monotonic()
        except asyncio.CancelledError:
            if not client.close_code:
                raise
        # Closing: the close frame waits behind what the socket already holds; a client
        # that reads nothing at all is left to the transport after a few seconds.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(close(client.close_code, client.close_reason), 5)  # type: ignore[arg-type]

    # -- heartbeats -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Every ``ping_interval``: ping each client, close the idle ones, end the private
        channels of expired sessions."""
        while True:
            await asyncio.sleep(self.ping_interval)
            self.heartbeat()

    def heartbeat(self) -> None:
        now = time.monotonic()
        ping = f'{{"type":"ping","ts":{_now_ms()}}}'
        for client in list(self.clients):
            if client.close_code or not client.native:
                continue  # a Binance client: the server's protocol pings watch it
            if now - client.last_received >= self.idle_timeout:
                self.close(client, CLOSE_IDLE,
                           f"idle: nothing received for {self.idle_timeout:g} s "
                           "(answer pings with {\"op\": \"pong\"})")  # fmt: skip
                continue
            if 0 < client.auth_expires_at <= _now_ms():
                self.expire_session(client)
            self.send(client, ping)

    def expire_session(self, client: Client) -> None:
        """The client's access token expired: its private channels end (it may sign in
        again, as the same user, and resubscribe)."""
        self.end_private(client, "TOKEN_EXPIRED", "the access token expired")

    def end_private(self, client: Client, code: str, why: str) -> None:
        """End the client's private channels and its sign-in, telling it ``code``; it may
        sign in again, as the same user, and resubscribe."""
        ended = sorted(c for c in client.channels if ":" in c)
        for channel in ended:
            self.unsubscribe(client, channel)
        client.auth_expires_at = -1
        names = ", ".join(c.partition(":")[0] for c in ended) or "none"
        self.send(client, json.dumps({
            "type": "error", "id": None, "code": code,
            "message": f"{why}; authenticate again and resubscribe (ended: {names})"}))  # fmt: skip

    async def close_all(self) -> None:
        """Close every client (going away) and stop the heartbeat."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for client in list(self.clients):
            self.close(client, CLOSE_GOING_AWAY, "the server is stopping")
        for handle in (self._flush_handle, self._deadline):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._deadline = None
