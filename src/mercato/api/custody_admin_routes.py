"""`/api/v1/admin/custody/...`: the operator's view of custody (admin sessions only)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from mercato.api.auth_routes import SessionCaller, service_of
from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors, json_body, json_response
from mercato.application.custody_ops import AlertRecord, CustodyOps, HoldRecord
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


class ReleaseRequest(msgspec.Struct, forbid_unknown_fields=True):
    totp_code: Annotated[str, msgspec.Meta(max_length=64)] | None = None


def _ops(service: ExchangeService) -> CustodyOps:
    assert service.database is not None and service.secrets is not None
    return CustodyOps(service.database, service.secrets.master_key)


def _json(value: object) -> Response:
    return Response(msgspec.json.encode(value), media_type="application/json")


@router.get("/alerts", responses={**json_response(list[AlertRecord], 200, "Newest first"),
                                   **errors(*SIGNED_IN)})  # fmt: skip
async def alerts_route(
    caller: SessionCaller, request: Request, open_only: bool = Query(True, alias="open")
) -> Response:
    """Custody alerts, newest first (``open=false`` includes acknowledged ones): reversed
    deposits, rejected credits, a hot wallet below its floor (docs/custody.md)."""
    require_admin(caller)
    found = await _ops(service_of(request)).alerts(open_only)
    return _json(found)


@router.post("/alerts/{alert_id}/acknowledge",
             responses={**json_response(AlertRecord, 200, "Acknowledged"),
                        **errors(*SIGNED_IN, 404, 409)})  # fmt: skip
async def acknowledge_route(
    caller: SessionCaller, request: Request, alert_id: int = Path(ge=1, le=2**62)
) -> Response:
    """Mark an alert seen (audited); a second acknowledgement is 409 ALERT_ACKNOWLEDGED."""
    require_admin(caller)
    ip = request.client.host if request.client else None
    alert = await _ops(service_of(request)).acknowledge_alert(caller.user_id, alert_id, ip)
    return _json(alert)


@router.get("/withdrawal-holds", responses={**json_response(list[HoldRecord], 200, "Newest first"),
                                             **errors(*SIGNED_IN)})  # fmt: skip
async def holds_route(
    caller: SessionCaller, request: Request, active: bool = Query(True)
) -> Response:
    """Withdrawal holds on a user's asset (a credited deposit was reversed by a reorg);
    ``active=false`` includes released ones."""
    require_admin(caller)
    found = await _ops(service_of(request)).holds(active)
    return _json(found)


@router.post("/withdrawal-holds/{hold_id}/release", openapi_extra=json_body(ReleaseRequest),
             responses={**json_response(HoldRecord, 200, "Released"),
                        **errors(*SIGNED_IN, 400, 404, 409)})  # fmt: skip
async def release_route(
    caller: SessionCaller, request: Request, hold_id: int = Path(ge=1, le=2**62)
) -> Response:
    """Let the user withdraw the asset again (the admin's 2FA code; audited)."""
    require_admin(caller)
    body = await request.body()
    try:
        payload = msgspec.json.decode(body or b"{}", type=ReleaseRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ApiError(400, "INVALID_REQUEST", str(error)) from None
    ip = request.client.host if request.client else None
    hold = await _ops(service_of(request)).release_hold(
        caller.user_id, hold_id, payload.totp_code, ip
    )
    return _json(hold)
