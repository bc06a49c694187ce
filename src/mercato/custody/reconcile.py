"""Holdings on chain against what the ledger and the custody tables say they must be.

Per custody asset, in the finer of its chain and ledger units (``units.fine_unit_scale``),
so chain balances and ledger atoms add up exactly (docs/custody.md, "Reconciliation")::

    holdings = deposit addresses + hot wallet + cold address            (on chain now)
    expected = users available + users locked + fees earned
             + known dust + uncredited deposits + treasury
             - network fees paid - withdrawals sent, not yet settled
    surplus  = holdings - expected                                      (0: balanced)

The ledger totals come from a ``LedgerSource`` (the engine's own totals, or the SQL
projection's ``ledger_balances`` once caught up); everything else from the custody
tables and the chains. Nothing is written. Balances, the store and the ledger are read
one after another, not in one snapshot: a transfer that lands between the reads shows as
a passing difference, which the next run no longer has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.config import CustodyAssetConfig, CustodyConfig
from mercato.core.money import format_amount
from mercato.custody.chains.base import ChainAdapter, ChainAsset
from mercato.custody.units import fine_unit_scale
from mercato.store.tables import (
    custody_addresses,
    custody_attempts,
    custody_deposits,
    custody_outgoing,
    custody_withdrawals,
    ledger_balances,
)

#: Deposits on our addresses that the ledger does not (yet, or ever) owe to a user.
UNCREDITED_STATUSES = ("PENDING", "CONFIRMED", "BELOW_MINIMUM")
#: Outgoing transfers not yet tracked to the end: one of their attempts may be mined.
IN_FLIGHT_STATUSES = ("SIGNED", "BROADCAST")
BALANCE_CONCURRENCY = 16  # balance calls in flight at once per chain


@dataclass(frozen=True)
class LedgerTotals:
    """An asset's ledger accounts summed (engine atoms), as ``EngineState.total_balances``
    reports them; the external accounts are shown, not used by the formula."""

    users_available: int
    users_locked: int
    fees: int
    external_deposits: int = 0
    external_withdrawals: int = 0


LedgerSource = Callable[[str], Awaitable[LedgerTotals]]

#: The components in the order they are reported, with their sign in ``expected``
#: (holdings components have no sign: they make up ``holdings``).
HOLDINGS = ("deposit_addresses", "hot_wallet", "cold_address")
EXPECTED = {
    "users_available": 1,
    "users_locked": 1,
    "fees": 1,
    "known_dust": 1,
    "uncredited_deposits": 1,
    "treasury": 1,
    "network_fees": -1,
    "withdrawals_unsettled": -1,
}


@dataclass(frozen=True)
class AssetReconciliation:
    """One asset's reconciliation. ``components`` are integers in fine units
    (10^-``fine_decimals`` of the asset), each non-negative, signed by ``EXPECTED``."""

    asset: str
    chain: str
    fine_decimals: int
    components: Mapping[str, int]

    @property
    def holdings(self) -> int:
        return sum(self.components[name] for name in HOLDINGS)

    @property
    def expected(self) -> int:
        return sum(sign * self.components[name] for name, sign in EXPECTED.items())

    @property
    def surplus(self) -> int:
        return self.holdings - self.expected

    @property
    def balanced(self) -> bool:
        return self.surplus == 0

    def amount(self, fine: int) -> str:
        """``fine`` units as a decimal string in the asset's units."""
        return format_amount(fine, self.fine_decimals)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the CLI's ``--json`` and the admin endpoint: every component,
        holdings, expected and surplus, each as ``{"amount": "1.5", "fine": 15}``."""
        values = {**self.components, "holdings": self.holdings, "expected": self.expected,
                  "surplus": self.surplus}  # fmt: skip
        return {
            "asset": self.asset,
            "chain": self.chain,
            "fine_decimals": self.fine_decimals,
            "balanced": self.balanced,
            **{name: {"amount": self.amount(v), "fine": v} for name, v in values.items()},
        }


async def reconcile(
    db: AsyncEngine,
    adapters: Mapping[str, ChainAdapter],
    custody: CustodyConfig,
    ledger_decimals: Mapping[str, int],
    ledger: LedgerSource,
) -> list[AssetReconciliation]:
    """Reconcile every custody asset (in configuration order). Raises ChainUnavailable
    if a node does not answer, KeyError if an asset's chain has no adapter."""
    reports = []
    for asset in custody.assets:
        reports.append(
            await _reconcile_asset(
                db, adapters[asset.chain], custody, asset, ledger_decimals[asset.symbol], ledger
            )
        )
    return reports


async def _reconcile_asset(
    db: AsyncEngine,
    adapter: ChainAdapter,
    custody: CustodyConfig,
    asset: CustodyAssetConfig,
    ledger_decimal_places: int,
    ledger: LedgerSource,
) -> AssetReconciliation:
    chain_scale, atom_scale = fine_unit_scale(asset.chain_decimals, ledger_decimal_places)
    on_chain = ChainAsset(asset.symbol, asset.contract, asset.chain_decimals)
    async with db.connect() as connection:
        addresses = await _our_addresses(connection, asset.chain)
        store = await _store_components(connection, asset)
        in_flight = await _in_flight(connection, adapter, asset)
    deposit_held, hot_held = await _address_balances(adapter, on_chain, addresses)
    cold = custody.chain(asset.chain).cold_address
    cold_held = await adapter.balance(cold, on_chain) if cold else 0
    totals = await ledger(asset.symbol)
    chain_units = {
        "deposit_addresses": deposit_held,
        "hot_wallet": hot_held,
        "cold_address": cold_held,
        "known_dust": store["known_dust"],
        "uncredited_deposits": store["uncredited_deposits"],
        "treasury": store["treasury"],
        "network_fees": store["network_fees"] + in_flight[0],
        "withdrawals_unsettled": store["withdrawals_unsettled"] + in_flight[1],
    }
    atoms = {
        "users_available": totals.users_available,
        "users_locked": totals.users_locked,
        "fees": totals.fees,
    }
    components = {name: value * chain_scale for name, value in chain_units.items()}
    components |= {name: value * atom_scale for name, value in atoms.items()}
    ordered = {name: components[name] for name in (*HOLDINGS, *EXPECTED)}
    fine_decimals = max(asset.chain_decimals, ledger_decimal_places)
    return AssetReconciliation(asset.symbol, asset.chain, fine_decimals, ordered)


async def _our_addresses(connection: AsyncConnection, chain: str) -> list[tuple[str, str]]:
    """(role, address) of every address of ours on ``chain``: deposit addresses and the
    hot wallet."""
    rows = await connection.execute(
        select(custody_addresses.c.role, custody_addresses.c.address).where(
            custody_addresses.c.chain == chain
        )
    )
    return [(row.role, row.address) for row in rows]


async def _address_balances(
    adapter: ChainAdapter, asset: ChainAsset, addresses: list[tuple[str, str]]
) -> tuple[int, int]:
    """(Σ deposit addresses, Σ hot wallet) of ``asset``: one balance call per address,
    ``BALANCE_CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(BALANCE_CONCURRENCY)

    async def one(address: str) -> int:
        async with gate:
            return await adapter.balance(address, asset)

    held = await asyncio.gather(*(one(address) for _, address in addresses))
    deposit = sum(v for (role, _), v in zip(addresses, held, strict=True) if role != "hot")
    hot = sum(v for (role, _), v in zip(addresses, held, strict=True) if role == "hot")
    return deposit, hot


async def _column_sum(connection: AsyncConnection, column: object, *where: object) -> int:
    """Σ of a TEXT column of chain units (summed in Python: wei exceed BIGINT)."""
    rows = await connection.execute(select(column).where(*where))  # type: ignore[call-overload]
    return sum(int(value) for (value,) in rows if value)


async def _store_components(
    connection: AsyncConnection, asset: CustodyAssetConfig
) -> dict[str, int]:
    """The components the custody tables know, in chain units."""
    deposits = custody_deposits.c
    of_asset = and_(deposits.chain == asset.chain, deposits.asset == asset.symbol)
    outgoing = custody_outgoing.c
    withdrawals = custody_withdrawals.c
    fees = 0
    if not asset.contract:  # gas is paid in the native coin, whatever the transfer moved
        fees = await _column_sum(connection, outgoing.fee_paid_chain, outgoing.chain == asset.chain)
    unsettled = await connection.execute(
        select(outgoing.amount_chain)
        .select_from(
            custody_outgoing.join(custody_withdrawals, withdrawals.withdrawal_id == outgoing.ref)
        )
        .where(
            outgoing.kind == "WITHDRAWAL",
            outgoing.chain == asset.chain,
            outgoing.asset == asset.symbol,
            outgoing.status == "COMPLETED",
            withdrawals.hold_state == "HELD",
        )
    )
    return {
        "known_dust": await _column_sum(
            connection, deposits.dust_chain, of_asset, deposits.status == "CREDITED"
        ),
        "uncredited_deposits": await _column_sum(
            connection,
            deposits.amount_chain,
            of_asset,
            deposits.status.in_(UNCREDITED_STATUSES),
        ),
        "treasury": await _column_sum(
            connection, deposits.amount_chain, of_asset, deposits.status == "TREASURY"
        ),
        "network_fees": fees,
        "withdrawals_unsettled": sum(int(value) for (value,) in unsettled),
    }


async def _in_flight(
    connection: AsyncConnection, adapter: ChainAdapter, asset: CustodyAssetConfig
) -> tuple[int, int]:
    """(network fees, withdrawal amounts) of outgoing transfers the sender has not yet
    tracked to COMPLETED although one of their attempts is already on chain: the chain
    has moved the value, the store does not say so yet. Asked of the node, attempt by
    attempt (there are few such transfers at any time)."""
    outgoing = custody_outgoing.c
    rows = await connection.execute(
        select(outgoing.id, outgoing.kind, outgoing.asset, outgoing.amount_chain,
               custody_attempts.c.txid)
        .join(custody_attempts, custody_attempts.c.outgoing_id == outgoing.id)
        .where(outgoing.chain == asset.chain, outgoing.status.in_(IN_FLIGHT_STATUSES))
    )  # fmt: skip
    fees = amounts = 0
    for row in rows.all():
        status = await adapter.status(row.txid)
        if status.state not in ("MINED", "FAILED"):
            continue
        if not asset.contract:
            fees += status.fee_paid
        if status.state == "MINED" and row.kind == "WITHDRAWAL" and row.asset == asset.symbol:
            amounts += int(row.amount_chain)
    return fees, amounts


async def projection_totals(connection: AsyncConnection, asset: str) -> LedgerTotals:
    """An asset's ledger totals from the SQL projection (``ledger_balances``: users'
    available and locked rows, and user 0's system accounts). Current only once the
    projection has caught up with the engine: the caller waits for that first."""
    rows = await connection.execute(
        select(ledger_balances.c.user_id, ledger_balances.c.account, ledger_balances.c.balance)
        .where(ledger_balances.c.asset == asset)
    )  # fmt: skip
    sums: dict[str, int] = {}
    for user_id, account, balance in rows:
        key = account if user_id == 0 else f"users_{account}"
        sums[key] = sums.get(key, 0) + int(balance)
    return LedgerTotals(
        users_available=sums.get("users_available", 0),
        users_locked=sums.get("users_locked", 0),
        fees=sums.get("fees", 0),
        external_deposits=sums.get("external_deposits", 0),
        external_withdrawals=sums.get("external_withdrawals", 0),
    )


def engine_totals(total_balances: Mapping[str, Any]) -> LedgerSource:
    """A LedgerSource over ``EngineState.total_balances()``'s report, or rows of the port
    view's ``asset_totals`` (a mapping or an object with the same names)."""

    async def totals(asset: str) -> LedgerTotals:
        row = total_balances.get(asset) or {}

        def field(name: str) -> int:
            value = row.get(name, 0) if isinstance(row, Mapping) else getattr(row, name, 0)
            return int(value)

        return LedgerTotals(
            users_available=field("users_available"),
            users_locked=field("users_locked"),
            fees=field("fees"),
            external_deposits=field("external_deposits"),
            external_withdrawals=field("external_withdrawals"),
        )

    return totals
