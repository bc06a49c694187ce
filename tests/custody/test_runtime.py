"""The custody runtime runs one watcher task per chain over a real in-process exchange,
and stops them with the service's stop."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec
import pytest

from custody.fakechain import FakeChain
from custody.test_watcher import ETH, SIGNER
from mercato import service as service_module
from mercato.config import CustodyConfig, load_config
from mercato.custody.addresses import deposit_address
from mercato.custody.chains.base import ChainAsset
from mercato.custody.keys import Mnemonic, init_seed
from mercato.custody.runtime import CustodyError, CustodyRuntime
from mercato.service import ExchangeService
from mercato.store import create_engine

CUSTODY = {
    "chains": [
        {
            "name": "fake",
            "kind": "evm",
            "rpc_url": "memory://",
            "confirmations": 2,
            "start_height": 0,
            "poll_seconds": 0.02,
        }
    ],
    "assets": [{"symbol": "ETH", "chain": "fake", "chain_decimals": 18}],
}


def test_watchers_run_per_chain_until_stopped(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "tune_gc", lambda: None)
    config = load_config(env={"DATABASE_URL": database_url}, data_dir=str(tmp_path / "data"))

    async def scenario() -> None:
        service = ExchangeService(config, env={})
        await service.start()
        try:
            assert service.custody is not None and not service.custody.available  # no chains
            assert service.database is not None and service.port is not None
            custody = CustodyRuntime(
                msgspec.convert(CUSTODY, CustodyConfig), service.database, SIGNER
            )
            chain = FakeChain("fake", (ChainAsset("ETH", "", 18),))
            custody.adapters["fake"] = chain
            custody.start_watchers(service.port, service.projection)  # type: ignore[arg-type]
            watcher_tasks = list(custody._tasks)
            address = await deposit_address(service.database, SIGNER, "evm", "fake", 5)
            chain.fund(address.lower(), "ETH", 2 * ETH)
            chain.mine(2)
            deadline = time.monotonic() + 30
            while service.port.view.balance(5, "ETH")[0] == 0:
                assert time.monotonic() < deadline, "not credited within 30 s"
                await asyncio.sleep(0.02)
            assert service.port.view.balance(5, "ETH")[0] == 200_000_000
            await custody.stop()
            assert watcher_tasks and all(task.done() for task in watcher_tasks)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_a_seed_that_does_not_open_with_the_master_key_stops_the_start(migrated: str) -> None:
    async def scenario() -> None:
        db = create_engine(migrated)
        try:
            await init_seed(db, os.urandom(32), Mnemonic(" ".join(["abandon"] * 11 + ["about"])))
            config = msgspec.convert(CUSTODY, CustodyConfig)
            with pytest.raises(CustodyError, match="master key"):
                await CustodyRuntime.open(config, db, os.urandom(32))
            assert not (await CustodyRuntime.open(CustodyConfig(), db, os.urandom(32))).available
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_start_workers_runs_a_sweeper_per_chain_over_its_own_assets(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chain's sweeper gets that chain's assets (its native coin among them, which
    token sweeps need for gas) and the chain's adapter; the sender covers every chain."""
    monkeypatch.setattr(service_module, "tune_gc", lambda: None)
    config = load_config(env={"DATABASE_URL": database_url}, data_dir=str(tmp_path / "data"))
    two_chains = {
        "chains": [CUSTODY["chains"][0], {**CUSTODY["chains"][0], "name": "other"}],  # type: ignore[index]
        "assets": [
            *CUSTODY["assets"],
            {"symbol": "USDT", "chain": "fake", "chain_decimals": 6, "contract": "0xusdt"},
            {"symbol": "BTC", "chain": "other", "chain_decimals": 8},
        ],
    }

    async def scenario() -> None:
        service = ExchangeService(config, env={})
        await service.start()
        try:
            assert service.database is not None and service.port is not None
            custody = CustodyRuntime(
                msgspec.convert(two_chains, CustodyConfig), service.database, SIGNER
            )
            for name in ("fake", "other"):
                custody.adapters[name] = FakeChain(name, (ChainAsset("ETH", "", 18),))
            custody.start_workers(service.port, service.projection)  # type: ignore[arg-type]
            fake, other = custody.sweepers["fake"], custody.sweepers["other"]
            assert [a.config.symbol for a in fake.assets] == ["ETH", "USDT"]
            assert fake.native is not None and fake.native.config.symbol == "ETH"
            assert [a.config.symbol for a in other.assets] == ["BTC"]
            assert fake.adapter is custody.adapters["fake"]
            assert other.adapter is custody.adapters["other"]
            assert custody.sender is not None
            names = sorted(task.get_name() for task in custody._tasks)
            assert names == ["custody-deposits-fake", "custody-deposits-other", "custody-sender",
                             "custody-sweeps-fake", "custody-sweeps-other"]  # fmt: skip
            await custody.stop()
        finally:
            await service.stop()

    asyncio.run(scenario())
