"""The client's address behind trusted reverse proxies (replaces uvicorn's proxy headers).

A request from a trusted proxy names its client in ``X-Forwarded-For``: each proxy
appends the address it received the request from, so the header's right end is written
by the proxies we trust and its left end by whoever sent the request. The client is the
right-most hop that is not a trusted proxy (nginx's ``real_ip_recursive on``); hops
further left are the client's own claims and are never read. The rules, and why an
unreadable hop is refused rather than guessed, are in docs/configuration.md ("The
client's address").

Every address that leaves here is canonical (``ipaddress``' text form, IPv4-mapped IPv6
as IPv4), so the rate-limit buckets and the API-key allowlists see one spelling per
address, and an allowlist check can never meet a string that is not an address.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.api.limits import send_error

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForwardedForError(ValueError):
    """A hop of X-Forwarded-For that a trusted proxy sent is not an address."""


def parse_address(text: str) -> Address | None:
    """An address as peers and proxies write it, or None: ``203.0.113.7``,
    ``203.0.113.7:5000``, ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:443``.
    IPv6 zone ids (``fe80::1%eth0``) are refused: they mean nothing off the host."""
    host = text.strip()
    if host.startswith("["):
        host, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    elif host.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        return address.ipv4_mapped or address
    return address


class TrustedProxies:
    """The addresses and networks whose X-Forwarded-For is believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in entries
        )

    def __contains__(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: Address, forwarded_for: list[bytes]) -> Address:
        """The client of a request ``peer`` sent with these X-Forwarded-For values (all
        of its lines, in order). ForwardedForError if a hop that must be read is not an
        address."""
        if peer not in self:
            return peer  # a client's own X-Forwarded-For is never believed
        lines = b",".join(forwarded_for).decode("latin-1")
        address = peer
        hops = [hop.strip() for hop in lines.split(",")]
        for hop in reversed([hop for hop in hops if hop]):  # empty list elements are ignored
            parsed = parse_address(hop)
            if parsed is None:
                shown = hop if len(hop) <= 64 else hop[:64] + "..."
                raise ForwardedForError(f"X-Forwarded-For hop {shown!r} is not an IP address")
            address = parsed
            if address not in self:
                break  # the first hop no trusted proxy vouches for: the client
        return address


class ClientAddress:
    """ASGI middleware: puts the canonical client address into ``scope["client"]``
    (port 0 when it came from X-Forwarded-For) and the scheme from a trusted proxy's
    ``X-Forwarded-Proto``. A trusted proxy's unreadable X-Forwarded-For is answered 400
    ``INVALID_FORWARDED_FOR`` (a WebSocket handshake too), before anything else runs."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted
        # Peers are few and come back with every request: parse and classify each once.
        self._peer = functools.lru_cache(maxsize=4096)(self._classify)

    def _classify(self, host: str) -> tuple[Address | None, str, bool]:
        peer = parse_address(host)
        if peer is None:
            return None, host, False
        return peer, str(peer), peer in self.trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] not in ("http", "websocket") or not client:
            await self.app(scope, receive, send)
            return
        host, port = client
        peer, canonical, trusted = self._peer(host)
        if peer is None:  # not an IP peer (a Unix socket): nothing to derive
            await self.app(scope, receive, send)
            return
        if not trusted:  # a client's own X-Forwarded-For is never believed
            scope["client"] = (canonical, port)
            await self.app(scope, receive, send)
            return
        forwarded: list[bytes] = []
        proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
        scope["client"] = (canonical, port)
        if forwarded:
            try:
                address = self.trusted.client(peer, forwarded)
            except ForwardedForError as error:
                await _refuse(scope, send, str(error))
                return
            if address != peer:
                scope["client"] = (str(address), 0)
        if proto is not None:
            _forwarded_scheme(scope, proto)
        await self.app(scope, receive, send)


def _forwarded_scheme(scope: Scope, proto: bytes) -> None:
    scheme = proto.decode("latin-1").strip().lower()
    if scheme in ("http", "https", "ws", "wss"):
        secure = scheme in ("https", "wss")
        if scope["type"] == "websocket":
            scope["scheme"] = "wss" if secure else "ws"
        else:
            scope["scheme"] = "https" if secure else "http"


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    message += "; the proxy in front must append the address it received the request from"
    if scope["type"] == "websocket":  # an HTTP answer to the handshake (ASGI denial response)
        send = _as_denial(send)
    await send_error(send, 400, "INVALID_FORWARDED_FOR", message)


def _as_denial(send: Send) -> Send:
    async def deny(message: Message) -> None:
        await send({**message, "type": "websocket." + str(message["type"])})

    return deny
