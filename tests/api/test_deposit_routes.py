"""`GET /api/v1/deposit-address` and `GET /api/v1/deposits` on a real exchange served
in-process (uvicorn on a free port, both stores), with a deposit watcher over the
in-memory FakeChain filling the deposits the endpoints show."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from custody.fakechain import FakeChain
from marketdata.live import PASSWORD, live_exchange
from mercato.auth.api_keys import create_key
from mercato.auth.sessions import Client, login
from mercato.auth.users import create_user
from mercato.config import load_config
from mercato.custody.chains.base import ChainAsset, KeyRef
from mercato.custody.keys import init_seed, load_seed
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.watcher import DepositWatcher, WatchedAsset
from mercato.store import create_engine, migrate

MASTER_KEY = os.urandom(32)
CUSTODY_TOML = """
[custody]
run_in_serve = false   # the watcher is driven by the test

[[custody.chains]]
name = "ethereum"
kind = "evm"
rpc_url = "http://127.0.0.1:9"
confirmations = 3
start_height = 1

[[custody.assets]]
symbol = "ETH"
chain = "ethereum"
chain_decimals = 18
min_deposit = "0.01"

[[custody.assets]]
symbol = "USDT"
chain = "ethereum"
chain_decimals = 6
contract = "0xusdt"
min_deposit = "1"
"""


def environment(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "MERCATO_MASTER_KEY": MASTER_KEY.hex()}


def custody_config(tmp_path: Path) -> Path:
    path = tmp_path / "custody.toml"
    path.write_text(CUSTODY_TOML)
    return path


async def seeded(url: str, config_file: Path, data_dir: Path) -> LocalSeedSigner:
    """The store migrated and a seed created, as `mercato custody init` does."""
    await migrate(
        load_config(config_file, env=environment(url), data_dir=str(data_dir)).database_url
    )
    db = create_engine(url)
    try:
        await init_seed(db, MASTER_KEY)
        return LocalSeedSigner(await load_seed(db, MASTER_KEY))
    finally:
        await db.dispose()


async def session(live: Any, email: str, *, verified: bool = True) -> dict[str, str]:
    database, secrets = live.service.database, live.service.secrets
    user = await create_user(database, email, PASSWORD, verified=verified)
    live.__dict__.setdefault("user_ids", {})[email] = user.id  # for the API key part
    tokens = await login(
        database,
        secrets.jwt_key,
        email,
        PASSWORD,
        Client("127.0.0.1", "t"),
        master_key=secrets.master_key,
    )
    return {"Authorization": f"Bearer {tokens.access_token}"}


def test_deposit_addresses_and_deposits(database_url: str, tmp_path: Path) -> None:
    config_file, data_dir = custody_config(tmp_path), tmp_path / "data"

    async def scenario() -> None:
        signer = await seeded(database_url, config_file, data_dir)
        async with (
            live_exchange(data_dir, environment(database_url), config_file=config_file) as live,
            httpx.AsyncClient(base_url=live.url) as http,
        ):
            ann = await session(live, "ann@example.com")
            bob = await session(live, "bob@example.com")
            unverified = await session(live, "cy@example.com", verified=False)
            url = "/api/v1/deposit-address"

            # ten first calls at once: one address, the first index of the chain
            answers = await asyncio.gather(
                *(http.get(url, params={"asset": "ETH"}, headers=ann) for _ in range(10))
            )
            assert {a.status_code for a in answers} == {200}
            assert {a.text for a in answers} == {answers[0].text}
            first = answers[0].json()
            address = signer.address(KeyRef("evm", "deposit", 0))
            assert first == {"asset": "ETH", "chain": "ethereum", "address": address}
            # one address per chain: USDT lives on ethereum too
            usdt = (await http.get(url, params={"asset": "USDT"}, headers=ann)).json()
            assert usdt["address"] == address
            other = (await http.get(url, params={"asset": "ETH"}, headers=bob)).json()
            assert other["address"] == signer.address(KeyRef("evm", "deposit", 1))

            async def refused(params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
                answer = await http.get(url, params=params, headers=headers)
                return answer.status_code, answer.json()["code"]

            assert await refused({"asset": "BTC"}, ann) == (409, "CUSTODY_UNAVAILABLE")
            assert await refused({"asset": "NOPE"}, ann) == (404, "UNKNOWN_ASSET")
            assert await refused({"asset": "ETH"}, unverified) == (403, "EMAIL_NOT_VERIFIED")
            assert await refused({"asset": "ETH"}, {}) == (401, "UNAUTHORIZED")
            assert await refused({}, ann) == (400, "INVALID_REQUEST")

            # API keys: `read` is enough; a key without it is refused
            service = live.service
            for permissions, expected in ((["read"], 200), (["trade"], 403)):
                key, secret = await create_key(
                    service.database,
                    service.secrets.master_key,
                    live.user_ids["ann@example.com"],
                    "k",
                    permissions,
                    [],
                    totp_code=None,
                )
                query = f"asset=ETH&timestamp={int(time.time() * 1000)}&recvWindow=5000"
                signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
                answer = await http.get(
                    f"{url}?{query}&signature={signature}", headers={"X-MBX-APIKEY": key.key_id}
                )
                assert answer.status_code == expected, answer.text
                if expected == 200:
                    assert answer.json() == first
                else:
                    assert answer.json()["code"] == "MISSING_PERMISSION"

            # the watcher sees two deposits to ann's address
            chain = FakeChain(
                "ethereum", (ChainAsset("ETH", "", 18), ChainAsset("USDT", "0xusdt", 6))
            )
            service = live.service
            custody = service.custody
            assets = [WatchedAsset(a, 8) for a in custody.config.assets]
            watcher = DepositWatcher(
                service.database,
                chain,
                custody.config.chains[0],
                assets,
                service.port,
                service.projection,
                custody.signer,
            )
            eth_tx = chain.fund(address.lower(), "ETH", 15 * 10**17 + 7)
            chain.mine()
            usdt_tx = chain.fund(address.lower(), "USDT", 20 * 10**6)
            chain.mine()
            await watcher.run_once()
            page = (await http.get("/api/v1/deposits", headers=ann)).json()
            assert [(d["txid"], d["status"], d["confirmations"]) for d in page["items"]] == [
                (usdt_tx, "PENDING", 1),
                (eth_tx, "PENDING", 2),
            ]
            assert page["next_before"] is None
            chain.mine(5)
            await watcher.run_once()
            page = (await http.get("/api/v1/deposits", headers=ann)).json()
            eth = page["items"][1]
            assert {
                k: eth[k]
                for k in (
                    "asset",
                    "chain",
                    "status",
                    "amount",
                    "amount_chain",
                    "tx_index",
                    "address",
                    "block_height",
                    "confirmations",
                    "required_confirmations",
                )
            } == {
                "asset": "ETH",
                "chain": "ethereum",
                "status": "CREDITED",
                "amount": "1.5",
                "amount_chain": str(15 * 10**17 + 7),
                "tx_index": 0,
                "address": address.lower(),
                "block_height": 1,
                "confirmations": 3,
                "required_confirmations": 3,
            }
            assert page["items"][0]["amount"] == "20"
            balances = (await http.get("/api/v1/balances", headers=ann)).json()
            assert {b["asset"]: b["available"] for b in balances}["ETH"] == "1.5"

            only_eth = await http.get("/api/v1/deposits", params={"asset": "ETH"}, headers=ann)
            assert [d["txid"] for d in only_eth.json()["items"]] == [eth_tx]
            one = (await http.get("/api/v1/deposits", params={"limit": 1}, headers=ann)).json()
            assert [d["txid"] for d in one["items"]] == [usdt_tx] and one["next_before"]
            rest = (
                await http.get(
                    "/api/v1/deposits",
                    headers=ann,
                    params={"limit": 1, "before": one["next_before"]},
                )
            ).json()
            assert [d["txid"] for d in rest["items"]] == [eth_tx]
            assert (await http.get("/api/v1/deposits", headers=bob)).json()["items"] == []
            assert (await http.get("/api/v1/deposits")).status_code == 401

            schema = (await http.get("/openapi.json")).json()
            assert "409" in schema["paths"]["/api/v1/deposit-address"]["get"]["responses"]
            assert "/api/v1/deposits" in schema["paths"]

    asyncio.run(scenario())


@pytest.mark.parametrize("with_chains", [True, False])
def test_without_a_seed_or_chains_custody_is_unavailable(with_chains: bool, tmp_path: Path) -> None:
    config_file = custody_config(tmp_path) if with_chains else None

    async def scenario() -> None:
        env = {"MERCATO_MASTER_KEY": MASTER_KEY.hex()}
        async with live_exchange(tmp_path / "data", env, config_file=config_file) as live:
            assert live.service.custody is not None and not live.service.custody.available
            async with httpx.AsyncClient(base_url=live.url) as http:
                ann = await session(live, "ann@example.com")
                answer = await http.get(
                    "/api/v1/deposit-address", params={"asset": "ETH"}, headers=ann
                )
                assert (answer.status_code, answer.json()["code"]) == (409, "CUSTODY_UNAVAILABLE")
                listed = await http.get("/api/v1/deposits", headers=ann)
                assert (listed.status_code, listed.json()) == (
                    200,
                    {"items": [], "next_before": None},
                )

    asyncio.run(scenario())
