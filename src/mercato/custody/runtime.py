"""What custody needs at run time, built once by the service (or `mercato custody run`):
the signer over the unsealed seed, the adapters of the configured chains, and the
workers' tasks: a deposit watcher and a sweeper per chain, one sender over all chains.

Without configured chains, or before ``mercato custody init`` created the seed, custody
is unavailable: the runtime has no signer and starts nothing, and the deposit and
withdrawal endpoints answer CUSTODY_UNAVAILABLE. The adapters exist whenever chains are
configured (building one opens no connection), so addresses can be validated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.crypto import SealError
from mercato.config import CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.custody.chains.base import ChainAdapter, ChainAsset
from mercato.custody.keys import load_mnemonic
from mercato.custody.sender import Sender, create_outgoing
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.sweeper import Sweeper
from mercato.custody.watcher import DepositWatcher, ProjectionCatchUp, WatchedAsset
from mercato.port import FundingPort

log = logging.getLogger(__name__)


class CustodyError(RuntimeError):
    """Custody cannot start (the seed does not open with this master key)."""


def chain_assets(assets: Sequence[CustodyAssetConfig]) -> list[ChainAsset]:
    return [ChainAsset(a.symbol, a.contract, a.chain_decimals) for a in assets]


def build_adapter(chain: CustodyChainConfig, assets: Sequence[CustodyAssetConfig]) -> ChainAdapter:
    """The adapter of ``chain`` over its RPC node; ``assets`` are the chain's own. web3 and
    solana are imported only when a chain of their kind is configured (heavy imports)."""
    if chain.kind == "evm":
        from mercato.custody.chains.evm import EvmAdapter

        return EvmAdapter(chain.name, chain.rpc_url, chain_assets(assets))
    from mercato.custody.chains.solana import JsonRpcSolana, SolanaAdapter

    commitment = "finalized" if chain.use_finalized else "confirmed"
    return SolanaAdapter(
        chain.name, JsonRpcSolana(chain.rpc_url), chain_assets(assets), commitment=commitment
    )


def chain_adapters(config: CustodyConfig) -> dict[str, ChainAdapter]:
    """An adapter per configured chain (what `mercato custody reconcile` reads)."""
    return {
        chain.name: build_adapter(chain, [a for a in config.assets if a.chain == chain.name])
        for chain in config.chains
    }


Recover = Callable[[], Awaitable[None]]


class CustodyRuntime:
    """The custody part of one running exchange (see the module doc)."""

    def __init__(
        self,
        config: CustodyConfig,
        db: AsyncEngine,
        signer: LocalSeedSigner | None,
        adapters: dict[str, ChainAdapter] | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.signer = signer
        # Shared with the withdrawals service (address validation): filled in place.
        self.adapters: dict[str, ChainAdapter] = {} if adapters is None else adapters
        self.watchers: dict[str, DepositWatcher] = {}
        self.sweepers: dict[str, Sweeper] = {}
        self.sender: Sender | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        config: CustodyConfig,
        db: AsyncEngine,
        master_key: bytes,
        adapters: dict[str, ChainAdapter] | None = None,
    ) -> CustodyRuntime:
        """Build the adapters of the configured chains (into ``adapters`` when given) and
        unseal the seed once, if there is one."""
        runtime = cls(config, db, None, adapters)
        if not config.chains:
            return runtime
        for name, adapter in chain_adapters(config).items():
            runtime.adapters.setdefault(name, adapter)
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
            return runtime
        runtime.signer = LocalSeedSigner(mnemonic.seed())
        return runtime

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

    def start_workers(
        self, port: FundingPort, projection: ProjectionCatchUp, recover: Recover | None = None
    ) -> None:
        """A deposit watcher and a sweeper per configured chain, and the sender over all
        of them (``recover``, the withdrawals service's, runs before each of its passes)."""
        self.start_watchers(port, projection)
        assert self.signer is not None
        for chain in self.config.chains:
            sweeper = Sweeper(
                self.db, self.adapters[chain.name], self.signer, chain,
                self.assets_of(chain.name), create_outgoing,
            )  # fmt: skip
            self.sweepers[chain.name] = sweeper
            self._spawn(f"custody-sweeps-{chain.name}", self._loop(sweeper.run_once, chain))
        self.sender = Sender(self.db, port, self.config, self.adapters, self.signer)
        poll = min((chain.poll_seconds for chain in self.config.chains), default=2.0)
        self._spawn("custody-sender", self._sender_loop(self.sender, poll, recover))

    def start_watchers(self, port: FundingPort, projection: ProjectionCatchUp) -> None:
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
            self._spawn(f"custody-deposits-{chain.name}", watcher.run(self._stop))
        log.info("custody: workers on %s", ", ".join(self.watchers) or "no chain")

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _loop(
        self, one_pass: Callable[[], Awaitable[object]], chain: CustodyChainConfig
    ) -> None:
        """``one_pass`` every ``poll_seconds`` until stopped; a failed pass is logged and
        the next one retries (every pass is safe to repeat)."""
        while not self._stop.is_set():
            try:
                await one_pass()
            except Exception:
                log.exception("custody pass on %s failed; retrying", chain.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), chain.poll_seconds)

    def start_recovery(self, recover: Recover, poll_seconds: float = 2.0) -> None:
        """Only the withdrawals' recovery, in a serve whose workers run elsewhere (it
        needs the engine's state, which a separate custody process cannot read)."""
        self._spawn("custody-recovery", self._recovery_loop(recover, poll_seconds))

    async def _recovery_loop(self, recover: Recover, poll: float) -> None:
        while not self._stop.is_set():
            try:
                await recover()
            except Exception:
                log.exception("withdrawal recovery pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), poll)

    async def _sender_loop(self, sender: Sender, poll: float, recover: Recover | None) -> None:
        while not self._stop.is_set():
            try:
                if recover is not None:
                    await recover()
                await sender.run_once()
            except Exception:
                log.exception("custody sender pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), poll)

    async def stop(self) -> None:
        """Let the workers finish their pass (a pass is safe to kill too: the store), then
        close the adapters' connections."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        self._tasks.clear()
        for adapter in self.adapters.values():
            close = getattr(adapter, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
