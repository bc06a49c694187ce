"""What a signed request signs, and the timestamp window (Binance's rules)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import pytest
from sqlalchemy import event, update

from mercato.auth import api_keys
from mercato.auth.api_keys import _signature_and_payload, _window
from mercato.auth.errors import AuthError
from mercato.auth.users import create_user
from mercato.store import create_engine, migrate, tables

MASTER_KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("query", "body", "signature", "payload"),
    [
        (b"symbol=BTC&timestamp=1&signature=AbC1", b"", "AbC1", b"symbol=BTC&timestamp=1"),
        (b"signature=ff", b"", "ff", b""),
        (b"symbol=BTC", b"qty=1&timestamp=1&signature=0a", "0a", b"symbol=BTCqty=1&timestamp=1"),
        (b"", b'{"raw": true}&signature=01', "01", b'{"raw": true}'),
    ],
)
def test_the_signature_covers_query_then_body_as_received(
    query: bytes, body: bytes, signature: str, payload: bytes
) -> None:
    assert _signature_and_payload(query, body) == (signature, payload)


def test_a_request_without_a_signature_is_refused() -> None:
    with pytest.raises(AuthError) as error:
        _signature_and_payload(b"timestamp=1&signatures=x", b"")
    assert error.value.code == "INVALID_SIGNATURE"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "INVALID_TIMESTAMP"),
        ({"timestamp": "soon"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "100000", "recvWindow": "60001"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "100000", "recvWindow": "0"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "94999"}, "TIMESTAMP_OUTSIDE_WINDOW"),
        ({"timestamp": "101000"}, "TIMESTAMP_OUTSIDE_WINDOW"),
        ({"timestamp": "80000", "recvWindow": "10000"}, "TIMESTAMP_OUTSIDE_WINDOW"),
    ],
)
def test_timestamp_window(params: dict[str, str], code: str) -> None:
    with pytest.raises(AuthError) as error:
        _window(params, now=100_000)
    assert error.value.code == code


@pytest.mark.parametrize(
    "params",
    [
        {"timestamp": "95000"},
        {"timestamp": "100999"},
        {"timestamp": "40000", "recvWindow": "60000"},
    ],
)
def test_timestamps_inside_the_window_pass(params: dict[str, str]) -> None:
    _window(params, now=100_000)


def _signed_query(secret: str) -> bytes:
    query = f"symbol=BTCUSDT&timestamp={int(time.time() * 1000)}"
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={signature}".encode()


def test_a_keys_signed_requests_read_it_once_and_a_deletion_stops_them_at_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            user = await create_user(db, "bot@example.com", "correct-horse-9", verified=True)
            key, secret = await api_keys.create_key(
                db, MASTER_KEY, user.id, "bot", ["read", "trade"], [], totp_code=None
            )
            reads: list[str] = []

            def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if "FROM api_keys" in statement:
                    reads.append(statement)

            event.listen(db.sync_engine, "before_cursor_execute", record)

            async def call() -> Any:
                return await api_keys.authenticate_signed(
                    db, MASTER_KEY, key.key_id, _signed_query(secret), b"", "127.0.0.1", False
                )

            first, second = await call(), await call()
            assert (first.user_id, first.permissions) == (user.id, ("read", "trade"))
            assert second == first and len(reads) == 1  # the second skipped the database
            with pytest.raises(AuthError) as forged:  # the cache never skips the signature
                await api_keys.authenticate_signed(
                    db, MASTER_KEY, key.key_id, b"timestamp=1&signature=00", b"", "", False
                )
            assert forged.value.code == "INVALID_SIGNATURE"

            await api_keys.delete_key(db, user.id, key.key_id)  # in this process: at once
            with pytest.raises(AuthError) as deleted:
                await call()
            assert deleted.value.code == "UNKNOWN_API_KEY"

            # Deleted by another process: trusted at most KEY_TRUST_SECONDS more.
            other, other_secret = await api_keys.create_key(
                db, MASTER_KEY, user.id, "bot2", ["read"], [], totp_code=None
            )
            monkeypatch.setattr(api_keys, "KEY_TRUST_SECONDS", 0.2)
            signed = _signed_query(other_secret)
            await api_keys.authenticate_signed(db, MASTER_KEY, other.key_id, signed, b"", "", False)
            async with db.begin() as connection:
                await connection.execute(
                    update(tables.api_keys).where(tables.api_keys.c.key_id == other.key_id)
                    .values(deleted_at=1)
                )  # fmt: skip
            await asyncio.sleep(0.25)
            with pytest.raises(AuthError) as gone:
                signed = _signed_query(other_secret)
                await api_keys.authenticate_signed(
                    db, MASTER_KEY, other.key_id, signed, b"", "", False
                )
            assert gone.value.code == "UNKNOWN_API_KEY"
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_a_caller_without_an_ip_address_is_outside_every_allowlist(database_url: str) -> None:
    """No peer address (a Unix socket: the API passes "") or a value that is not one is a
    403 IP_NOT_ALLOWED for a key with an allowlist, never an unhandled ValueError."""

    async def scenario() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            user = await create_user(db, "fenced@example.com", "correct-horse-9", verified=True)
            key, secret = await api_keys.create_key(
                db, MASTER_KEY, user.id, "bot", ["read"], ["10.0.0.0/8"], totp_code=None
            )
            for client_ip in ("", "unknown", "10.0.0.1:80"):
                with pytest.raises(AuthError) as refused:
                    await api_keys.authenticate_signed(
                        db, MASTER_KEY, key.key_id, _signed_query(secret), b"", client_ip, False
                    )
                assert refused.value.code == "IP_NOT_ALLOWED", client_ip
            inside = await api_keys.authenticate_signed(
                db, MASTER_KEY, key.key_id, _signed_query(secret), b"", "10.0.0.1", False
            )
            assert inside.user_id == user.id
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_concurrent_requests_of_a_key_share_one_lookup_and_a_revocation_starts_another(
    database_url: str,
) -> None:
    """Many requests of one key at the moment its trust runs out read the database once
    (not once each); a revocation during that read is not hidden from later requests."""

    async def scenario() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            user = await create_user(db, "bots@example.com", "correct-horse-9", verified=True)
            key, secret = await api_keys.create_key(
                db, MASTER_KEY, user.id, "bot", ["read"], [], totp_code=None
            )
            reads: list[str] = []

            def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if "FROM api_keys" in statement:
                    reads.append(statement)

            event.listen(db.sync_engine, "before_cursor_execute", record)

            async def call() -> Any:
                return await api_keys.authenticate_signed(
                    db, MASTER_KEY, key.key_id, _signed_query(secret), b"", "127.0.0.1", False
                )

            api_keys._SIGNING_KEYS.clear()
            callers = await asyncio.gather(*(call() for _ in range(20)))
            assert {c.user_id for c in callers} == {user.id} and len(reads) == 1

            api_keys._SIGNING_KEYS.clear()
            reading = [asyncio.create_task(call()) for _ in range(5)]
            await asyncio.sleep(0)  # the lookup has started
            await api_keys.delete_key(db, user.id, key.key_id)  # a new revocation generation
            with pytest.raises(AuthError) as deleted:
                await call()  # after the revocation: its own lookup, which finds no key
            assert deleted.value.code == "UNKNOWN_API_KEY"
            await asyncio.gather(*reading, return_exceptions=True)
        finally:
            await db.dispose()

    asyncio.run(scenario())
