"""What custody needs at run time, built once by the service: the signer over the
unsealed seed, the adapters of the configured chains and the watchers' tasks.

Without configured chains, or before ``mercato custody init`` created the seed, custody
is unavailable: the runtime has no signer and starts nothing, and the deposit endpoints
answer CUSTODY_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.crypto import SealError
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.custody.chains.base import ChainAdapter
from mercato.custody.keys import load_mnemonic
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.watcher import DepositWatcher, ProjectionCatchUp, WatchedAsset
from mercato.port import ExchangePort

log = logging.getLogger(__name__)

#: The adapter class of each chain kind, imported only when a chain of that kind is
#: configured (web3 and solana are heavy imports).
ADAPTERS = {
    "evm": ("mercato.custody.chains.evm", "EvmAdapter"),
    "solana": ("mercato.custody.chains.solana", "SolanaAdapter"),
}


class CustodyError(RuntimeError):
    """Custody cannot start (the seed does not open with this master key)."""


def build_adapter(chain: CustodyChainConfig, assets: Sequence[CustodyAssetConfig]) -> ChainAdapter:
    """The adapter of ``chain`` over its RPC node; ``assets`` are the chain's own."""
    module, name = ADAPTERS[chain.kind]
    adapter_type = getattr(importlib.import_module(module), name)
    adapter: ChainAdapter = adapter_type.from_config(chain, list(assets))
    return adapter


class CustodyRuntime:
    """The custody part of one running exchange (see the module doc)."""

    def __init__(
        self, config: CustodyConfig, db: AsyncEngine, signer: LocalSeedSigner | None
    ) -> None:
        self.config = config
        self.db = db
        self.signer = signer
        self.adapters: dict[str, ChainAdapter] = {}
        self.watchers: dict[str, DepositWatcher] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls, config: CustodyConfig, db: AsyncEngine, master_key: bytes
    ) -> CustodyRuntime:
        """Unseal the seed once (if chains are configured and a seed exists)."""
        if not config.chains:
            return cls(config, db, None)
        try:
            mnemonic = await load_mnemonic(db, master_key)
        except SealError:
            raise CustodyError(
                "the custody seed does not open with this master key (MERCATO_MASTER_KEY)"
            ) from None
        if mnemonic is None:
            log.warning(
                "custody chains are configured but there is no seed: custody is "
                "unavailable until `mercato custody init`"
            )
            return cls(config, db, None)
        return cls(config, db, LocalSeedSigner(mnemonic.seed()))

    @property
    def available(self) -> bool:
        return self.signer is not None

    def chain_of(self, symbol: str) -> tuple[CustodyAssetConfig, CustodyChainConfig] | None:
        """The custody asset ``symbol`` and its chain, or None when it has none."""
        asset = self.config.asset(symbol)
        if asset is None:
            return None
        return asset, self.config.chain(asset.chain)

    def assets_of(self, chain: str) -> list[CustodyAssetConfig]:
        return [asset for asset in self.config.assets if asset.chain == chain]

    def start_watchers(self, port: ExchangePort, projection: ProjectionCatchUp) -> None:
        """One deposit watcher task per configured chain."""
        assert self.signer is not None, "custody without a seed starts nothing"
        for chain in self.config.chains:
            assets = []
            for asset in self.assets_of(chain.name):
                known = port.view.asset(asset.symbol)
                if known is None:
                    log.error(
                        "custody asset %s is not an asset of the engine: not watched", asset.symbol
                    )
                    continue
                assets.append(WatchedAsset(asset, known.decimals))
            adapter = self.adapters.get(chain.name) or build_adapter(
                chain, self.assets_of(chain.name)
            )
            self.adapters[chain.name] = adapter
            watcher = DepositWatcher(self.db, adapter, chain, assets, port, projection, self.signer)
            self.watchers[chain.name] = watcher
            task = asyncio.create_task(
                watcher.run(self._stop), name=f"custody-deposits-{chain.name}"
            )
            self._tasks.append(task)
        log.info("custody: deposit watchers on %s", ", ".join(self.watchers) or "no chain")

    async def stop(self) -> None:
        """Let the watchers finish their pass (a pass is safe to kill too: the store)."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        self._tasks.clear()
