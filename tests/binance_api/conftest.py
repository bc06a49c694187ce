"""A real `mercato serve --dev` for the Binance-compatible API tests, with two verified
users (ann and bob), each holding an API key (read + trade) and funds from the faucet,
and the real clients (CCXT, python-binance) pointed at it by their URLs only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from service.conftest import Backend, Server, backend, env, servers  # noqa: F401
from service.test_sessions import PASSWORD, bearer

FUNDS = {"ann@example.com": {"USDT": "1000000", "BTC": "10"},
         "bob@example.com": {"USDT": "1000000", "BTC": "10", "ETH": "100"}}  # fmt: skip


@dataclass(frozen=True)
class Account:
    email: str
    key: str  # X-MBX-APIKEY
    secret: str
    session: dict[str, str]  # a signed-in native session's headers


@dataclass(frozen=True)
class Exchange:
    url: str  # http://127.0.0.1:<port>
    ws_url: str  # ws://127.0.0.1:<port>
    ann: Account
    bob: Account
    server: Server


def point_at(value: Any, http_base: str, ws_base: str) -> Any:
    """Every Binance URL in a client's ``urls`` table (nested dicts and strings) with its
    scheme and host replaced by the Mercato server's: the one change the clients need."""
    if isinstance(value, dict):
        return {k: point_at(v, http_base, ws_base) for k, v in value.items()}
    if isinstance(value, str):
        if value.startswith(("wss://", "ws://")):
            return re.sub(r"^wss?://[^/]+", ws_base, value)
        if value.startswith(("https://", "http://")):
            return re.sub(r"^https?://[^/]+", http_base, value)
    return value


def ccxt_binance(exchange: Exchange, account: Account | None = None, *, pro: bool = False) -> Any:
    """An unmodified ``ccxt.binance`` (or ``ccxt.pro.binance``) whose URLs are Mercato's."""
    import ccxt
    import ccxt.pro

    cls = ccxt.pro.binance if pro else ccxt.binance
    config: dict[str, Any] = {}
    if account is not None:
        config = {"apiKey": account.key, "secret": account.secret}
    client = cls(config)
    client.urls["api"] = point_at(client.urls["api"], exchange.url, exchange.ws_url)
    return client


def python_binance() -> tuple[Any, Any, Any, Any]:
    """python-binance's ``binance.client``, ``binance.exceptions``, ``binance.async_client``
    and ``binance.ws.streams`` modules."""
    import binance.async_client
    import binance.client
    import binance.exceptions
    import binance.ws.streams

    return binance.client, binance.exceptions, binance.async_client, binance.ws.streams


def python_binance_client(exchange: Exchange, account: Account | None = None) -> Any:
    """python-binance's ``Client`` with its URL class attributes set to Mercato's."""
    Client = python_binance()[0].Client

    class MercatoClient(Client):
        API_URL = f"{exchange.url}/api"

    return MercatoClient(account.key if account else None, account.secret if account else None)


def _account(server: Server, email: str) -> Account:
    http = httpx.Client(base_url=f"{server.url}/api/v1", timeout=30)
    login = http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    headers = bearer(login.json()["access_token"])
    for asset, amount in FUNDS[email].items():
        funded = http.post("/dev/faucet", headers=headers, json={"asset": asset, "amount": amount})
        assert funded.status_code == 200, funded.text
    created = http.post("/account/api-keys", headers=headers,
                        json={"label": "bot", "permissions": ["read", "trade"]})  # fmt: skip
    assert created.status_code == 201, created.text
    key = created.json()
    return Account(email, key["key_id"], key["secret"], headers)


def _create_users(backend: Backend) -> None:  # noqa: F811
    """The verified users, written to the store before the server starts (in this process:
    a `mercato admin create-user` subprocess per user costs seconds per test)."""
    from mercato.auth.users import create_user
    from mercato.store import create_engine, migrate

    async def create() -> None:
        backend.data.mkdir(parents=True, exist_ok=True)
        await migrate(backend.url)
        db = create_engine(backend.url)
        try:
            for email in FUNDS:
                await create_user(db, email, PASSWORD, verified=True)
        finally:
            await db.dispose()

    asyncio.run(create())


def start_exchange(backend: Backend, servers: list[Server]) -> Exchange:  # noqa: F811
    _create_users(backend)
    server = Server(backend.data, backend.env, "--dev")
    servers.append(server)
    server.wait_ready()
    ws_url = server.url.replace("http://", "ws://")
    return Exchange(server.url, ws_url, _account(server, "ann@example.com"),
                    _account(server, "bob@example.com"), server)  # fmt: skip


@pytest.fixture
def sqlite_backend(tmp_path: Any, env: dict[str, str]) -> Backend:  # noqa: F811
    from mercato.store import sqlite_url

    data = tmp_path / "data"
    return Backend("sqlite", data, env, sqlite_url(data / "mercato.db"))


@pytest.fixture
def exchange(sqlite_backend: Backend, servers: list[Server]) -> Iterator[Exchange]:  # noqa: F811
    """The exchange on SQLite (the clients' behaviour does not depend on the store; the
    money paths' concurrency is tested on PostgreSQL by the native tests)."""
    yield start_exchange(sqlite_backend, servers)
