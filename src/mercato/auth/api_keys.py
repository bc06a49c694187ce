"""API keys and Binance-style signed requests.

A key has a public id (sent as ``X-MBX-APIKEY``) and a secret shown once and stored
sealed with the master key. A signed request carries ``timestamp`` (ms), optionally
``recvWindow`` (default 5000, at most 60000) and ``signature``: the hex HMAC-SHA256,
keyed with the secret, of the exact query string followed by the exact body, without
the signature parameter. It is verified over the bytes as received, never over a
re-serialised form, so any client that signs for Binance signs for Mercato.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import secrets
import time
from decimal import Decimal
from urllib.parse import unquote_plus

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.crypto import seal, unseal
from mercato.auth.errors import AuthError
from mercato.auth.sessions import LIVE_SESSIONS, Principal
from mercato.auth.totp import check_second_factor
from mercato.auth.users import UserError, standing_refusal
from mercato.core.errors import ErrorKind
from mercato.store.tables import api_keys, users

PERMISSIONS = ("read", "trade", "withdraw")
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60000
MAX_KEYS_PER_USER = 30
_SIGNATURE = re.compile(rb"(^|&)signature=([0-9a-fA-F]*)$")


class ApiKey(msgspec.Struct, frozen=True):
    key_id: str
    label: str
    permissions: list[str]
    ip_allowlist: list[str]
    created_at: int


def _context(key_id: str) -> bytes:
    return f"apikey:{key_id}".encode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _split(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part]


def _checked(label: str, permissions: list[str], ip_allowlist: list[str]) -> None:
    if not 1 <= len(label) <= 64:
        raise UserError("INVALID_API_KEY", "label has 1 to 64 characters")
    if not permissions or any(p not in PERMISSIONS for p in permissions):
        raise UserError("INVALID_API_KEY", f"permissions are some of {', '.join(PERMISSIONS)}")
    for entry in ip_allowlist:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise UserError(
                "INVALID_API_KEY", f"{entry!r} is not an IP address or network"
            ) from None


async def create_key(
    db: AsyncEngine, master_key: bytes, user_id: int, label: str, permissions: list[str],
    ip_allowlist: list[str], *, totp_code: str | None,
) -> tuple[ApiKey, str]:  # fmt: skip
    """A new key and its secret (returned this once only). With 2FA on, ``totp_code`` must
    be a current code or a recovery code; a refusal creates nothing and spends no code."""
    _checked(label, permissions, ip_allowlist)
    permissions = sorted(set(permissions), key=PERMISSIONS.index)
    key_id, secret, now = secrets.token_hex(32), secrets.token_hex(32), _now_ms()
    async with db.begin() as connection:
        await check_second_factor(connection, master_key, user_id, totp_code)
        live = await connection.execute(
            select(api_keys.c.id).where(
                api_keys.c.user_id == user_id, api_keys.c.deleted_at.is_(None)
            )
        )
        if len(live.all()) >= MAX_KEYS_PER_USER:
            raise UserError("TOO_MANY_API_KEYS", f"at most {MAX_KEYS_PER_USER} keys per user")
        await connection.execute(
            insert(api_keys).values(
                user_id=user_id, key_id=key_id, label=label,
                secret_enc=seal(master_key, secret.encode(), _context(key_id)),
                permissions=",".join(permissions), ip_allowlist=",".join(ip_allowlist) or None,
                created_at=now,
            )
        )  # fmt: skip
    return ApiKey(key_id, label, permissions, ip_allowlist, now), secret


async def list_keys(db: AsyncEngine, user_id: int) -> list[ApiKey]:
    async with db.connect() as connection:
        rows = await connection.execute(
            select(api_keys)
            .where(api_keys.c.user_id == user_id, api_keys.c.deleted_at.is_(None))
            .order_by(api_keys.c.id)
        )
        return [ApiKey(r.key_id, r.label, _split(r.permissions), _split(r.ip_allowlist),
                       r.created_at) for r in rows]  # fmt: skip


async def delete_key(db: AsyncEngine, user_id: int, key_id: str) -> None:
    """Delete one of the user's keys; another user's key is reported as unknown."""
    async with db.begin() as connection:
        done = await connection.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.user_id == user_id,
                   api_keys.c.deleted_at.is_(None))
            .values(deleted_at=_now_ms())
        )  # fmt: skip
        if done.rowcount == 0:
            raise UserError("UNKNOWN_API_KEY", "no such API key", ErrorKind.NOT_FOUND)
    LIVE_SESSIONS.revoked()  # ends the key's open WebSocket private channels


def _signature_and_payload(query: bytes, body: bytes) -> tuple[str, bytes]:
    """The signature parameter (last, in the query or else the body) and the exact bytes
    it signs: the query string followed by the body, without that parameter."""
    for part, other_first in ((query, False), (body, True)):
        found = _SIGNATURE.search(part)
        if found:
            unsigned = part[: found.start()]
            payload = (query + unsigned) if other_first else (unsigned + body)
            return found.group(2).decode(), payload
    raise AuthError("INVALID_SIGNATURE", "the request carries no signature parameter")


def form_fields(data: bytes, into: dict[str, str] | None = None) -> dict[str, str]:
    """The ``name=value`` pairs of a query string or form body (later names win; blank
    values kept), as ``urllib.parse.parse_qsl`` reads them but several times faster: only
    a pair holding ``%`` or ``+`` is unquoted (signed requests are parsed on every call)."""
    fields = {} if into is None else into
    for pair in data.decode("latin-1").split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        fields[name] = value
    return fields


def _recv_window(text: str | None) -> Decimal:
    """``recvWindow`` in ms: Binance takes up to three decimal places (``6000.346``)."""
    if not text:
        return Decimal(DEFAULT_RECV_WINDOW_MS)
    if not _RECV_WINDOW.match(text):
        raise ValueError(text)
    return Decimal(text)


_RECV_WINDOW = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,3})?$")


def _window(params: dict[str, str], now: int) -> None:
    try:
        timestamp = int(params["timestamp"])
        window = _recv_window(params.get("recvWindow"))
    except (KeyError, ValueError):
        raise AuthError(
            "INVALID_TIMESTAMP",
            "send timestamp (ms) and optionally recvWindow (ms, up to 3 decimals)",
            kind=ErrorKind.INVALID,
        ) from None
    if not 0 < window <= MAX_RECV_WINDOW_MS:
        raise AuthError(
            "INVALID_TIMESTAMP", f"recvWindow is 1..{MAX_RECV_WINDOW_MS} ms", kind=ErrorKind.INVALID
        )
    if timestamp >= now + 1000 or now - timestamp > window:  # Binance's rule
        message = f"timestamp {timestamp} is outside the {window} ms window around {now}"
        raise AuthError("TIMESTAMP_OUTSIDE_WINDOW", message, kind=ErrorKind.INVALID)


class _SigningKey(msgspec.Struct, frozen=True):
    """What checking a signature needs of a key, its secret unsealed."""

    user_id: int
    role: str
    user_status: str
    secret: bytes
    ip_allowlist: list[str]
    permissions: tuple[str, ...]


# Keys recently read -> (key, trusted until (monotonic), revocation generation): a bot's
# signed requests skip the database read and the unsealing, like sessions' liveness. Any
# revocation in this process (a key deleted, a session ended) voids every entry; other
# processes see a deletion within KEY_TRUST_SECONDS.
_SIGNING_KEYS: dict[str, tuple[_SigningKey, float, int]] = {}
_SIGNING_KEYS_CAPACITY = 10_000
KEY_TRUST_SECONDS = 2.0


# Lookups in flight, by (key, revocation generation): a bot's concurrent requests whose
# trust ran out at the same moment share one database read (as sessions' liveness does).
_LOOKUPS: dict[tuple[str, int], asyncio.Future[_SigningKey | None]] = {}


async def _signing_key(db: AsyncEngine, master_key: bytes, key_id: str) -> _SigningKey | None:
    cached = _SIGNING_KEYS.get(key_id)
    if (cached is not None and cached[2] == LIVE_SESSIONS.generation
            and cached[1] > time.monotonic()):  # fmt: skip
        return cached[0]
    lookup = (key_id, LIVE_SESSIONS.generation)
    pending = _LOOKUPS.get(lookup)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[_SigningKey | None] = asyncio.get_running_loop().create_future()
    _LOOKUPS[lookup] = future
    try:
        key = await _read_signing_key(db, master_key, key_id)
    except BaseException as error:
        future.set_exception(error)
        future.exception()  # retrieved: the waiters (if any) re-raise it
        raise
    else:
        future.set_result(key)
        return key
    finally:
        del _LOOKUPS[lookup]


async def _read_signing_key(db: AsyncEngine, master_key: bytes, key_id: str
                            ) -> _SigningKey | None:  # fmt: skip
    generation = LIVE_SESSIONS.generation
    async with db.connect() as connection:
        row = (
            await connection.execute(
                select(api_keys, users.c.role, users.c.status)
                .join(users, users.c.id == api_keys.c.user_id)
                .where(api_keys.c.key_id == key_id, api_keys.c.deleted_at.is_(None))
            )
        ).first()
    if row is None:
        return None
    key = _SigningKey(
        row.user_id, row.role, row.status, unseal(master_key, row.secret_enc, _context(key_id)),
        _split(row.ip_allowlist), tuple(_split(row.permissions)),
    )  # fmt: skip
    if len(_SIGNING_KEYS) >= _SIGNING_KEYS_CAPACITY:
        _SIGNING_KEYS.clear()
    # A revocation that committed during the read voids this entry (generation moved on).
    _SIGNING_KEYS[key_id] = (key, time.monotonic() + KEY_TRUST_SECONDS, generation)
    return key


def _allowed(client_ip: str, allowlist: list[str]) -> bool:
    """``client_ip`` is in one of the allowlist's networks. A caller without an IP address
    (a Unix socket peer: the API layer passes "") is in none, rather than an error."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allowlist)


async def authenticate_signed(
    db: AsyncEngine, master_key: bytes, key_id: str, query: bytes, body: bytes, client_ip: str,
    form_body: bool, params: dict[str, str] | None = None,
) -> Principal:  # fmt: skip
    """The principal of a signed request, or AuthError with a distinct code. ``db`` is
    only read (on SQLite, pass an engine that begins DEFERRED). ``params``: the query's
    and the form body's fields, if the caller has parsed them already."""
    signature, payload = _signature_and_payload(query, body)
    key = await _signing_key(db, master_key, key_id)
    if key is None:
        raise AuthError("UNKNOWN_API_KEY", "no such API key (X-MBX-APIKEY)")
    expected = hmac.digest(key.secret, payload, "sha256").hex()
    if not hmac.compare_digest(expected, signature.lower()):
        raise AuthError("INVALID_SIGNATURE", "signature does not match query string + body")
    if params is None:
        params = form_fields(query)
        if form_body:
            form_fields(body, params)
    _window(params, _now_ms())
    if key.ip_allowlist and not _allowed(client_ip, key.ip_allowlist):
        raise AuthError(
            "IP_NOT_ALLOWED",
            f"this key does not accept requests from {client_ip}",
            kind=ErrorKind.FORBIDDEN,
        )
    refusal = standing_refusal(key.user_status)
    if refusal is not None:
        raise refusal
    return Principal(key.user_id, key.role, f"apikey:{key_id}", key.permissions)
