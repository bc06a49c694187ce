"""The running exchange: boots the store and the sequencer, owns them, stops them.

Boot order: the checks that can fail come before anything is written (:meth:`preflight`:
the data directory's lock, the store readable, and the store's identity against the data
directory and its journal; `mercato serve` runs them before it serves HTTP) -> secrets
-> SQL migrations -> the store's identity recorded -> sequencer recovery (snapshot +
journal tail) -> the SQL projection catches up from the journal -> market data loads its
history -> assets and markets of the configuration that the engine does not know yet ->
GTD tick loop and mail retry loop -> ready. `/health/ready` answers 200 only after all of
it (docs/operations.md). Stopping: refuse new work, stop both loops, commit and apply what
is queued, write a final snapshot, close the journal, drain the projection, close the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.application.deposits import Deposits
from mercato.application.history import History
from mercato.application.portfolio import Portfolio
from mercato.application.projection import ProjectionReads
from mercato.application.trading import Trading
from mercato.application.withdrawals import Withdrawals
from mercato.auth.mail import Mailer
from mercato.config import Config, Secrets, load_secrets, market_spec
from mercato.core.commands import Command, Tick, UpsertAsset, UpsertMarket
from mercato.custody.chains.base import ChainAdapter
from mercato.custody.runtime import CustodyRuntime
from mercato.journal import (
    AsyncSequencer,
    JournalError,
    journal_last_seq,
    journal_ts,
    lock_directory,
)
from mercato.marketdata.binance_feed import BinanceFeed
from mercato.marketdata.feed import MarketData
from mercato.marketdata.hub import Hub
from mercato.port import ExchangePort
from mercato.port.in_process import InProcessPort
from mercato.readmodels.client_ids import KnownClientIds
from mercato.readmodels.order_states import OrderStates
from mercato.runtime import tune_gc
from mercato.store import create_engine, identity, migrate
from mercato.store.projector_process import ProjectorProcess

log = logging.getLogger(__name__)

TICK_CHECK_SECONDS = 0.1
#: How often undelivered mail is looked at (the first retry is due 30 s after a failure).
MAIL_RETRY_SECONDS = 10.0


class BootError(RuntimeError):
    """The service cannot start; the message says why."""


async def verify_store(config: Config) -> None:
    """Raise BootError unless the configured store is the data directory's own
    (store/identity.py): read-only, it creates neither the store nor the data directory.
    ``serve`` runs it before it writes anything, ``mercato admin`` before it migrates."""
    try:
        identity.verify(
            config.data_dir,
            identity.read_recorded(config.data_dir),
            await identity.read_store(config.database_url),
            _describe_store(config),
            journal_last_seq(config.engine_dir),
            lambda seq: journal_ts(config.engine_dir, seq),
        )
    except (identity.StoreIdentityError, JournalError) as error:
        raise BootError(str(error)) from None


def _describe_store(config: Config) -> str:
    shown = identity.shown(config.database_url)
    if config.database.url:
        return shown
    return f"the SQLite store in the data directory, {shown} (DATABASE_URL is not set)"


class ExchangeService:
    def __init__(self, config: Config, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._env = env
        self.secrets: Secrets | None = None
        self.sequencer: AsyncSequencer | None = None  # owned here: opened, snapshot, closed
        self.port: ExchangePort | None = None  # what the adapters use (in-process here)
        self.database: AsyncEngine | None = None
        self.mailer: Mailer | None = None
        self.ready = False
        self.stopping = False
        self.failure: BaseException | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._mail_task: asyncio.Task[None] | None = None
        self.market_data: MarketData | None = None
        self.binance_feed: BinanceFeed | None = None
        self.projector: ProjectorProcess | None = None
        self.order_states = OrderStates()  # open orders folded, for cancel and amend answers
        self.known_client_ids = KnownClientIds()  # every client order id ever used
        self.reads: AsyncEngine | None = None  # queries of the projection (DEFERRED on SQLite)
        self.hub = Hub()  # WebSocket fan-out of the market data (replaceable before start)
        self.trading: Trading | None = None  # the application services, from start on
        self.portfolio: Portfolio | None = None
        self.history: History | None = None
        # Custody: the chain adapters by configured chain name (the custody runtime fills
        # it; empty: every asset answers CUSTODY_UNAVAILABLE), and the withdrawals service
        # when custody assets are configured.
        self.custody_adapters: dict[str, ChainAdapter] = {}
        self.withdrawals: Withdrawals | None = None
        self.projection: ProjectionReads | None = None  # reads of the SQL projection
        self.custody: CustodyRuntime | None = None  # signer, adapters, watchers
        self.deposits: Deposits | None = None
        self._lock_fd: int | None = None  # the data directory's lock, until the sequencer has it

    def reader(self) -> AsyncEngine:
        """The engine for reads of the projection and per-request credential lookups: on
        SQLite it begins DEFERRED, so a read never queues for the write lock."""
        assert self.reads is not None, "the service is not started"
        return self.reads

    async def preflight(self) -> None:
        """The checks that can fail, before anything but the lock file is written: take the
        data directory's lock (held from then on: a second server on it stops here, before
        it migrates anything), read the store without creating it, and check that it is
        the data directory's own (store/identity.py). Raises BootError. :meth:`start` runs
        it if it has not run."""
        config = self.config
        try:
            self._lock_fd = lock_directory(config.engine_dir)
        except JournalError:
            raise BootError(
                f"data directory {config.data_dir} is in use: another `mercato serve` (or a "
                f"sequencer) holds {config.engine_dir / 'LOCK'}"
            ) from None
        try:
            await verify_store(config)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def start(self) -> None:
        config = self.config
        if self._lock_fd is None:
            await self.preflight()
        self.secrets = load_secrets(config, self._env)
        revision = await migrate(config.database_url)
        store_id = await identity.claim(config.database_url, config.data_dir)
        self.database = create_engine(config.database_url)
        self.mailer = Mailer(self.database, config.smtp)
        lock_fd, self._lock_fd = self._lock_fd, None  # the sequencer owns it from here
        self.sequencer = await AsyncSequencer.open(
            config.engine_dir,
            max_batch=config.engine.max_batch,
            snapshot_every=config.engine.snapshot_every,
            lock_fd=lock_fd,
        )
        self.port = port = InProcessPort(self.sequencer)
        tune_gc()
        # The SQL projection follows every batch from now on and first catches up with
        # what the journal holds beyond its cursor (exactly once: docs/store.md).
        self.reads = create_engine(config.database_url, sqlite_begin="DEFERRED")
        self.projector = ProjectorProcess(config.database_url)
        port.subscribe(self.projector.on_batch)
        await self.projector.start(config.engine_dir, port.last_seq)
        await self.order_states.seed(self.reads)
        port.subscribe(self.order_states.on_batch)
        await self.known_client_ids.seed(self.reads)
        port.subscribe(self.known_client_ids.on_batch)
        # Market data follows every batch from now on (before the bootstrap submits), and
        # starts from the recent trades and candles of the SQL projection.
        self.market_data = MarketData(port.view, self.hub)
        self.binance_feed = BinanceFeed(self.market_data)
        port.subscribe(self.market_data.on_batch)
        await self.market_data.load_history(self.database)
        self.projection = projection = ProjectionReads(port, self.projector, self.reads)
        self.trading = Trading(port, projection, self.known_client_ids, faucet=config.server.dev)
        self.portfolio = Portfolio(port, projection)
        self.history = History(projection)
        if config.custody.assets:
            assert self.secrets is not None
            self.withdrawals = Withdrawals(
                self.database,
                port,
                config.custody,
                self.custody_adapters,
                self.secrets.master_key,
            )
        await self._bootstrap()
        await self._start_custody()
        self._tick_task = asyncio.create_task(self._tick_loop(), name="mercato-gtd-ticks")
        self._mail_task = asyncio.create_task(self._mail_loop(), name="mercato-mail-retry")
        self.ready = True
        log.info(
            "ready: data dir %s, store %s at revision %s, engine at seq %d",
            config.data_dir,
            store_id,
            revision,
            port.last_seq,
        )

    async def _bootstrap(self) -> None:
        """Create the configured assets and markets the engine does not have yet."""
        assert self.port is not None
        port = self.port
        view = port.view
        wanted: list[tuple[str, Command]] = [
            (f"asset {asset.symbol}", UpsertAsset(asset.symbol, asset.decimals))
            for asset in self.config.assets
            if view.asset(asset.symbol) is None
        ]
        wanted += [
            (f"market {spec.symbol}", UpsertMarket(spec))
            for spec in map(market_spec, self.config.markets)
            if not view.has_market(spec.symbol)
        ]
        if not wanted:
            return
        results = await port.submit_many([command for _, command in wanted])
        rejected = [
            f"{label}: {result.message}"
            for (label, _), result in zip(wanted, results, strict=True)
            if result.status == "REJECTED"
        ]
        if rejected:
            raise BootError("configuration rejected by the engine: " + "; ".join(rejected))
        log.info("created %d assets and markets from the configuration", len(wanted))

    async def _start_custody(self) -> None:
        """Custody (docs/custody.md): the adapters, the seed unsealed once, the deposit
        service, and the workers (watchers, sweepers, the sender with the withdrawals'
        recovery) when they run in this process. Without chains or seed, custody is
        unavailable and nothing starts."""
        assert self.database is not None and self.secrets is not None
        assert self.port is not None and self.projection is not None and self.reads is not None
        custody = self.config.custody
        self.custody = await CustodyRuntime.open(
            custody, self.database, self.secrets.master_key, self.custody_adapters
        )
        self.deposits = Deposits(self.custody, self.port, self.reads)
        recover = self.withdrawals.recover if self.withdrawals is not None else None
        if self.custody.available and custody.run_in_serve:
            self.custody.start_workers(self.port, self.projection, recover)
        elif self.custody.available and recover is not None:
            self.custody.start_recovery(recover)  # the workers run in `mercato custody run`

    async def _tick_loop(self) -> None:
        """Submit a Tick when a GTD order is due, so expiry does not wait for traffic."""
        assert self.port is not None
        port = self.port
        view = port.view
        while not self.stopping:
            await asyncio.sleep(TICK_CHECK_SECONDS)
            expiry = view.next_expiry()
            due = expiry is not None and expiry <= int(time.time() * 1000)
            if due and not self.stopping:
                await port.submit(Tick())

    async def _mail_loop(self) -> None:
        """Retry undelivered outbox mail when due (with backoff, see mercato.auth.mail).
        A failed pass (the database away for a moment) is logged and the loop goes on."""
        assert self.mailer is not None
        while not self.stopping:
            await asyncio.sleep(MAIL_RETRY_SECONDS)
            try:
                done = await self.mailer.retry_due()
            except Exception:
                log.exception("mail retry pass failed; trying again in %g s", MAIL_RETRY_SECONDS)
                continue
            if done.sent or done.given_up:
                log.info("mail retry: %d sent, %d to retry, %d given up", done.sent,
                         done.retry, done.given_up)  # fmt: skip

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        for task in (self._tick_task, self._mail_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.custody is not None:
            await self.custody.stop()  # before the sequencer closes: a pass may submit
        if self.market_data is not None:
            await self.market_data.hub.close_all()
        self._release_lock()  # if the start failed before the sequencer took it
        if self.sequencer is not None:
            await self.sequencer.close(snapshot=True)
            log.info("journal flushed and snapshot written at seq %d", self.sequencer.last_seq)
        if self.projector is not None:
            await self.projector.stop(timeout=30)  # the journal has the rest
            log.info("projection flushed at seq %d", self.projector.cursor)
        if self.reads is not None:
            await self.reads.dispose()
        if self.database is not None:
            await self.database.dispose()
