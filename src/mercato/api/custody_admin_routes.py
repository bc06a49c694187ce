"""`/api/v1/admin/custody/...`: the operator's view of custody (admin sessions only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mercato.api.auth_routes import SessionCaller, service_of
from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors
from mercato.custody.chains.base import ChainAdapter, ChainUnavailable
from mercato.custody.reconcile import (
    LedgerSource,
    LedgerTotals,
    engine_totals,
    projection_totals,
    reconcile,
)
from mercato.service import ExchangeService

router = APIRouter(prefix="/api/v1/admin/custody", tags=["admin"])

ADMIN_ROLES = ("admin", "superadmin")


def require_admin(caller: SessionCaller) -> None:
    if caller.role not in ADMIN_ROLES:
        raise ApiError(403, "ADMIN_REQUIRED", "this needs an admin or superadmin session")


def _adapters(service: ExchangeService) -> dict[str, ChainAdapter]:
    """The custody runtime's adapters by chain name (``service.custody_adapters``, set when
    the custody workers start); 409 CUSTODY_UNAVAILABLE if a configured chain has none."""
    adapters: dict[str, ChainAdapter] = dict(getattr(service, "custody_adapters", None) or {})
    missing = sorted({a.chain for a in service.config.custody.assets} - set(adapters))
    if missing:
        raise ApiError(409, "CUSTODY_UNAVAILABLE",
                       f"custody is not running for chain {', '.join(missing)}")  # fmt: skip
    return adapters


async def _ledger(service: ExchangeService) -> LedgerSource:
    """The engine's own totals where the port's view offers them (``asset_totals``),
    otherwise the SQL projection's ``ledger_balances`` once it has caught up with every
    acknowledged command."""
    assert service.port is not None and service.projection is not None
    asset_totals = getattr(service.port.view, "asset_totals", None)
    if asset_totals is not None:
        return engine_totals(
            {a.symbol: asset_totals(a.symbol) for a in service.config.custody.assets}
        )
    projection = service.projection
    await projection.caught_up()

    async def from_projection(asset: str) -> LedgerTotals:
        async with projection.connect() as connection:
            return await projection_totals(connection, asset)

    return from_projection


@router.get("/reconciliation", responses=errors(*SIGNED_IN, 409, 503))
async def reconciliation(caller: SessionCaller, request: Request) -> dict[str, Any]:
    """Per custody asset: on-chain holdings against what the ledger owes, each component
    as a decimal string in the asset's units and an integer of the finer of chain and
    ledger units (docs/custody.md, "Reconciliation"); ``balanced`` when every surplus is 0.
    Meaningful on production servers: ``dev`` says the faucet is on."""
    require_admin(caller)
    service = service_of(request)
    assert service.port is not None and service.database is not None
    adapters = _adapters(service)
    view = service.port.view
    decimals = {}
    for asset in service.config.custody.assets:
        known = view.asset(asset.symbol)
        if known is None:
            raise ApiError(409, "CUSTODY_UNAVAILABLE", f"the engine has no asset {asset.symbol}")
        decimals[asset.symbol] = known.decimals
    ledger = await _ledger(service)
    try:
        reports = await reconcile(
            service.database, adapters, service.config.custody, decimals, ledger
        )
    except ChainUnavailable as error:
        raise ApiError(
            503, "CHAIN_UNAVAILABLE", f"a chain's node did not answer: {error}"
        ) from None
    return {
        "balanced": all(report.balanced for report in reports),
        "dev": service.config.server.dev,
        "assets": [report.as_dict() for report in reports],
    }
