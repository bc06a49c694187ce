"""Deposit addresses -> hot wallet, hot wallet -> cold address, and the hot floor alert.

Every transfer goes through the sender's ``create_outgoing`` (one ``custody_outgoing``
row per (kind, ref), signed and stored before any broadcast: never sent twice); the
sender's loop broadcasts and tracks it. The sweeper only decides what to send, from
balances on chain and the outgoing rows already there. It never calls the engine and
never touches a user's balance: a sweep moves value between our own addresses
(docs/custody.md, "Sweeps and hot/cold").

Rules, per pass and chain:

- A deposit address holding more than ``sweep_threshold`` of an asset is swept to the
  hot wallet, unless a sweep of that address and asset is still open (SIGNED or
  BROADCAST). The sweep's ref is ``chain:address:asset:n``, ``n`` the number of earlier
  sweeps of that address and asset, so every sweep has its own ref and a pass that runs
  twice (or twice at once) makes the same ref, which the unique (kind, ref) refuses.
- What is swept is the balance less the deposits still PENDING on the address (not yet
  deep enough: a reorg may take them back, and a sweep of more than is there fails).
- The native coin is swept less the most the transfer's fee can cost, so it pays for
  itself; it waits while a token of the address is being swept (that needs its gas).
- A token sweep needs native gas on the deposit address. Short of it, the hot wallet
  first sends a ``GAS`` outgoing (ref ``gas:<sweep ref>``, then ``gas:<sweep ref>:k``
  if more is needed later) of twice the quoted fee, for headroom against a fee rise;
  the sweep is made only in a later pass, once no gas transfer to the address is open
  (the gas is COMPLETED: deep enough on chain).
- Solana: SOL is swept like ETH (the deposit address pays its own fee). SPL sweeps are
  not made yet: they need the hot wallet as the fee payer of a transfer signed by the
  deposit key, which the adapter interface (one key per ``Spend``) cannot express.
- Hot wallet above ``hot_ceiling`` (and a ``cold_address`` configured): a ``COLD``
  outgoing brings it down to the midpoint of floor and ceiling, so that neither the
  next deposits nor the next withdrawals trigger another transfer at once.
- Hot wallet below ``hot_floor``: one ``HOT_WALLET_LOW`` warning in ``custody_alerts``
  while it stays low (not one per pass); once the balance is back at or above the floor
  the alert is resolved by the sweeper (``acknowledged_at`` set, ``acknowledged_by``
  NULL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.config import CustodyAssetConfig, CustodyChainConfig
from mercato.core.money import to_units
from mercato.custody.chains.base import ChainAdapter, ChainAsset, FeeQuote, KeyRef, Signer
from mercato.store.tables import (
    custody_addresses,
    custody_alerts,
    custody_deposits,
    custody_outgoing,
)

log = logging.getLogger(__name__)

OPEN_STATUSES = ("SIGNED", "BROADCAST")
GAS_HEADROOM = 2  # a gas top-up covers this many times the quoted fee
HOT_WALLET_LOW = "HOT_WALLET_LOW"

CreateOutgoing = Callable[..., Awaitable[int]]


@dataclass
class SweepPass:
    """What one pass created (refs by kind) and raised, for logs and tests."""

    created: dict[str, list[str]] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)

    def add(self, kind: str, ref: str) -> None:
        self.created.setdefault(kind, []).append(ref)


@dataclass(frozen=True)
class _Asset:
    config: CustodyAssetConfig
    chain: ChainAsset
    threshold: int  # chain units
    floor: int
    ceiling: int | None


def chain_units(text: str, chain_decimals: int, what: str) -> int:
    """A configured amount (decimal string, asset units) in chain units; "" -> 0."""
    unit = Decimal(1).scaleb(-chain_decimals)
    return to_units(text or "0", unit, what, allow_zero=True)


def max_fee_cost(kind: str, fee: FeeQuote) -> int:
    """The most one transfer can charge its fee payer, in native chain units."""
    return fee.gas_limit * fee.max_fee if kind == "evm" else fee.max_fee


class Sweeper:
    def __init__(
        self,
        db: AsyncEngine,
        adapter: ChainAdapter,
        signer: Signer,
        chain: CustodyChainConfig,
        assets: Sequence[CustodyAssetConfig],
        create_outgoing: CreateOutgoing,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.db = db
        self.adapter = adapter
        self.signer = signer
        self.chain = chain
        self.create_outgoing = create_outgoing
        self.now_ms = now_ms
        self.assets = [self._asset(a) for a in assets if a.chain == chain.name]
        self.native = next((a for a in self.assets if not a.config.contract), None)
        self._hot_key = self._key("hot", 0)  # the stored index, read at each pass

    @staticmethod
    def _asset(config: CustodyAssetConfig) -> _Asset:
        decimals = config.chain_decimals
        ceiling = config.hot_ceiling
        return _Asset(
            config,
            ChainAsset(config.symbol, config.contract, decimals),
            chain_units(config.sweep_threshold, decimals, f"{config.symbol} sweep_threshold"),
            chain_units(config.hot_floor, decimals, f"{config.symbol} hot_floor"),
            chain_units(ceiling, decimals, f"{config.symbol} hot_ceiling") if ceiling else None,
        )

    def _key(self, role: str, index: int) -> KeyRef:
        return KeyRef(self.adapter.kind, role, index)  # type: ignore[arg-type]

    async def run_once(self) -> SweepPass:
        """One pass over every deposit address and the hot wallet of the chain."""
        done = SweepPass()
        found = await self._hot_address()
        if found is None:
            return done  # no hot wallet yet: nothing can be swept anywhere
        hot_index, hot = found
        self._hot_key = self._key("hot", hot_index)
        for index, address in await self._deposit_addresses():
            await self._sweep_address(index, address, hot, done)
        for asset in self.assets:
            await self._hot_wallet(asset, hot, done)
        return done

    # ------------------------------------------------------------ deposit addresses

    async def _sweep_address(self, index: int, address: str, hot: str, done: SweepPass) -> None:
        busy = await self._gas_open(address)
        for asset in self.assets:
            if asset.config.contract:
                busy |= await self._sweep_token(asset, index, address, hot, busy, done)
        if self.native is not None and not busy:
            await self._sweep_native(self.native, index, address, hot, done)

    async def _sweep_native(
        self, asset: _Asset, index: int, address: str, hot: str, done: SweepPass
    ) -> None:
        ref = await self._next_ref("SWEEP", address, asset)
        if ref is None:
            return
        balance = await self._sweepable(address, asset)
        if balance <= asset.threshold:
            return
        cost = max_fee_cost(self.adapter.kind, await self.adapter.fees(asset.chain))
        if balance <= cost:
            return
        await self._send(done, "SWEEP", ref, self._key("deposit", index), address, hot,
                         asset, balance - cost)  # fmt: skip

    async def _sweep_token(
        self, asset: _Asset, index: int, address: str, hot: str, gas_open: bool, done: SweepPass
    ) -> bool:
        """Sweep (or fund the sweep of) one token; True while the address's native coin
        is needed for it (a gas transfer or the sweep open, or a sweep due)."""
        if self.adapter.kind != "evm" or self.native is None:
            return False  # SPL sweeps: not yet (module docstring); no native asset configured
        ref = await self._next_ref("SWEEP", address, asset)
        if ref is None:
            return True
        balance = await self._sweepable(address, asset)
        if balance <= asset.threshold:
            return False
        if gas_open:
            return True  # the gas is on its way; sweep once it is COMPLETED
        cost = max_fee_cost(self.adapter.kind, await self.adapter.fees(asset.chain))
        gas = await self.adapter.balance(address, self.native.chain)
        if gas >= cost:
            await self._send(done, "SWEEP", ref, self._key("deposit", index), address, hot,
                             asset, balance)  # fmt: skip
            return True
        gas_ref = await self._gas_ref(address, ref)
        if gas_ref is not None:
            await self._send(done, "GAS", gas_ref, self._hot_key, hot, address,
                             self.native, GAS_HEADROOM * cost - gas)  # fmt: skip
        return True

    # ------------------------------------------------------------ hot wallet

    async def _hot_wallet(self, asset: _Asset, hot: str, done: SweepPass) -> None:
        balance = await self.adapter.balance(hot, asset.chain)
        await self._floor_alert(asset, balance, done)
        cold = self.chain.cold_address
        if asset.ceiling is None or not cold or balance <= asset.ceiling:
            return
        ref = await self._next_ref("COLD", hot, asset)
        if ref is None:
            return  # one open COLD transfer at a time
        target = (asset.floor + asset.ceiling) // 2
        await self._send(done, "COLD", ref, self._hot_key, hot, cold, asset,
                         balance - target)  # fmt: skip

    async def _floor_alert(self, asset: _Asset, balance: int, done: SweepPass) -> None:
        """Raise HOT_WALLET_LOW once while the hot wallet is below its floor; resolve it
        when the balance is back."""
        subject = f"{self.chain.name}:{asset.config.symbol}"
        alerts = custody_alerts.c
        unresolved = (
            alerts.kind == HOT_WALLET_LOW,
            alerts.chain == self.chain.name,
            alerts.subject == subject,
            alerts.acknowledged_at.is_(None),
        )
        async with self.db.begin() as connection:
            # The hot wallet's row, locked: two passes at once check and raise one at a time.
            await connection.execute(
                select(custody_addresses.c.id)
                .where(custody_addresses.c.chain == self.chain.name,
                       custody_addresses.c.role == "hot")
                .with_for_update()
            )  # fmt: skip
            raised = (await connection.execute(select(alerts.id).where(*unresolved))).first()
            low = balance < asset.floor
            if low and raised is None:
                detail = (f"hot wallet holds {balance} {asset.config.symbol} chain units, "
                          f"below the floor of {asset.floor}")  # fmt: skip
                await connection.execute(insert(custody_alerts).values(
                    severity="warning", kind=HOT_WALLET_LOW, chain=self.chain.name,
                    subject=subject, detail=detail, created_at=self.now_ms(),
                ))  # fmt: skip
                done.alerts.append(subject)
            elif not low and raised is not None:
                await connection.execute(
                    update(custody_alerts).where(*unresolved).values(acknowledged_at=self.now_ms())
                )

    # ------------------------------------------------------------ the store

    async def _send(
        self,
        done: SweepPass,
        kind: str,
        ref: str,
        key: KeyRef,
        from_address: str,
        to_address: str,
        asset: _Asset,
        amount: int,
    ) -> None:
        made: list[int] = []

        async def mine(connection: object, outgoing_id: int) -> bool:
            made.append(outgoing_id)  # called only for the row this call inserts
            return True

        try:
            await self.create_outgoing(
                self.db, self.adapter, self.signer, kind=kind, ref=ref, key=key,
                from_address=from_address, to_address=to_address, asset=asset.chain,
                amount_chain=amount, on_signed=mine,
            )  # fmt: skip
        except IntegrityError:
            made.clear()
        if not made:
            # Another pass (a second worker, a retry) made this very (kind, ref) first:
            # the sender's create_outgoing returns that row rather than a second one.
            log.info("%s %s already exists", kind, ref)
            return
        done.add(kind, ref)

    async def _sweepable(self, address: str, asset: _Asset) -> int:
        """The balance less the deposits not yet deep enough (PENDING): a reorg may still
        take those away, and a sweep of more than is there fails on chain (its fee lost)."""
        deposits = custody_deposits.c
        async with self.db.connect() as connection:
            pending = await connection.execute(select(deposits.amount_chain).where(
                deposits.chain == self.chain.name, deposits.address == address,
                deposits.asset == asset.config.symbol, deposits.status == "PENDING"))  # fmt: skip
            shallow = sum(int(amount) for (amount,) in pending)
        return await self.adapter.balance(address, asset.chain) - shallow

    async def _hot_address(self) -> tuple[int, str] | None:
        """(derivation index, address) of the chain's hot wallet, if it has one yet."""
        async with self.db.connect() as connection:
            row = (await connection.execute(
                select(custody_addresses.c.derivation_index, custody_addresses.c.address).where(
                    custody_addresses.c.chain == self.chain.name,
                    custody_addresses.c.role == "hot",
                )
            )).first()  # fmt: skip
        return None if row is None else (int(row.derivation_index), row.address)

    async def _deposit_addresses(self) -> list[tuple[int, str]]:
        addresses = custody_addresses.c
        async with self.db.connect() as connection:
            rows = await connection.execute(
                select(addresses.derivation_index, addresses.address)
                .where(addresses.chain == self.chain.name, addresses.role == "deposit")
                .order_by(addresses.derivation_index)
            )
            return [(row.derivation_index, row.address) for row in rows]

    def _outgoing_filter(self, **columns: Any) -> list[Any]:
        outgoing = custody_outgoing.c
        where = [outgoing.chain == self.chain.name]
        where += [getattr(outgoing, name) == value for name, value in columns.items()]
        return where

    async def _count(self, *extra: Any, **columns: Any) -> int:
        where = [*self._outgoing_filter(**columns), *extra]
        async with self.db.connect() as connection:
            query = select(func.count()).select_from(custody_outgoing).where(*where)
            return int((await connection.execute(query)).scalar_one())

    async def _gas_open(self, address: str) -> bool:
        open_gas = custody_outgoing.c.status.in_(OPEN_STATUSES)
        return await self._count(open_gas, kind="GAS", to_address=address) > 0

    async def _next_ref(self, kind: str, from_address: str, asset: _Asset) -> str | None:
        """The ref of the next ``kind`` transfer of ``asset`` from ``from_address``
        (SWEEP ``chain:address:asset:n``, COLD ``cold:chain:asset:n``, ``n`` the number of
        earlier ones), or None while one is open. One statement counts both: a pass
        running at the same time either sees the other's open row or makes the same ref,
        which the unique (kind, ref) refuses: never a second transfer of one balance."""
        outgoing = custody_outgoing.c
        symbol = asset.config.symbol
        where = self._outgoing_filter(kind=kind, from_address=from_address, asset=symbol)
        is_open = case((outgoing.status.in_(OPEN_STATUSES), 1), else_=0)
        query = (
            select(func.count(), func.coalesce(func.sum(is_open), 0))
            .select_from(custody_outgoing)
            .where(*where)
        )
        async with self.db.connect() as connection:
            total, still_open = (await connection.execute(query)).one()
        if still_open:
            return None
        if kind == "SWEEP":
            return f"{self.chain.name}:{from_address}:{symbol}:{int(total)}"
        return f"cold:{self.chain.name}:{symbol}:{int(total)}"

    async def _gas_ref(self, address: str, sweep_ref: str) -> str | None:
        """``gas:<sweep ref>`` for the first top-up of a sweep, ``gas:<sweep ref>:k`` for
        the k-th more (a fee rise past the first one's headroom); None while a gas transfer
        to ``address`` is open. One statement, for the reason ``_next_ref`` gives."""
        first = f"gas:{sweep_ref}"
        outgoing = custody_outgoing.c
        of_sweep = (outgoing.ref == first) | outgoing.ref.like(f"{first}:%")
        is_open = case((outgoing.status.in_(OPEN_STATUSES), 1), else_=0)
        query = (
            select(func.coalesce(func.sum(case((of_sweep, 1), else_=0)), 0),
                   func.coalesce(func.sum(is_open), 0))
            .select_from(custody_outgoing)
            .where(*self._outgoing_filter(kind="GAS", to_address=address))
        )  # fmt: skip
        async with self.db.connect() as connection:
            earlier, still_open = (await connection.execute(query)).one()
        if still_open:
            return None
        return first if not earlier else f"{first}:{int(earlier)}"
