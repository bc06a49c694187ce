"""`/api/v1/deposit-address` and `/api/v1/deposits`: where a user sends funds, and what
arrived (docs/custody.md, "Deposits"). A session or an API key with ``read``."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mercato.api.auth_routes import Caller, service_of
from mercato.api.openapi import SIGNED_IN, errors, json_response
from mercato.application.deposits import DepositFigures, Deposits
from mercato.core.money import format_amount
from mercato.service import ExchangeService

router = APIRouter(prefix="/api/v1", tags=["deposits"])

MAX_LIMIT = 500
Asset = Annotated[str, Query(min_length=1, max_length=32, description="an asset, e.g. ETH")]


class DepositAddressView(msgspec.Struct):
    asset: str
    chain: str
    address: str


class DepositView(msgspec.Struct, kw_only=True):
    """One transfer to the caller's deposit address. ``status``: PENDING (seen),
    CONFIRMED (deep enough, being credited), CREDITED, DROPPED (its block left the chain
    before the credit), REVERSED (after it), BELOW_MINIMUM (never credited)."""

    id: int
    asset: str
    chain: str
    status: str
    amount: str  # credited, in the asset's units (rounded down to the ledger's decimals)
    amount_chain: str  # what the chain carried, in its smallest unit
    txid: str
    tx_index: int
    address: str
    block_height: int
    confirmations: int
    required_confirmations: int
    seen_at: int
    updated_at: int


class DepositPageView(msgspec.Struct):
    items: list[DepositView]
    next_before: int | None


def _deposits(service: ExchangeService) -> Deposits:
    assert service.deposits is not None, "a ready service has its application services"
    return service.deposits


def _json(value: object) -> Response:
    return Response(msgspec.json.encode(value), media_type="application/json")


def deposit_view(figures: DepositFigures) -> DepositView:
    return DepositView(
        id=figures.id,
        asset=figures.asset,
        chain=figures.chain,
        status=figures.status,
        amount=format_amount(figures.amount, figures.decimals),
        amount_chain=str(figures.amount_chain),
        txid=figures.txid,
        tx_index=figures.tx_index,
        address=figures.address,
        block_height=figures.block_height,
        confirmations=figures.confirmations,
        required_confirmations=figures.required_confirmations,
        seen_at=figures.seen_at,
        updated_at=figures.updated_at,
    )


@router.get(
    "/deposit-address",
    responses={
        **json_response(DepositAddressView, 200, "The caller's address for the asset"),
        **errors(*SIGNED_IN, 404, 409),
    },
)
async def get_deposit_address(caller: Caller, request: Request, asset: Asset) -> Response:
    """The caller's deposit address for ``asset`` on its chain, the same on every call
    (created on the first). 409 CUSTODY_UNAVAILABLE when the exchange takes no deposits
    of the asset; 403 EMAIL_NOT_VERIFIED before the email is verified."""
    found = await _deposits(service_of(request)).address(caller.user_id, asset)
    return _json(DepositAddressView(found.asset, found.chain, found.address))


@router.get(
    "/deposits",
    responses={
        **json_response(DepositPageView, 200, "Newest first"),
        **errors(*SIGNED_IN, 404),
    },
)
async def list_deposits(
    caller: Caller,
    request: Request,
    asset: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="cursor: next_before")
    ] = None,
) -> Response:
    """The caller's deposits (all assets, or one), newest first, with their status and
    confirmations (the watcher's stored tip minus the deposit's block, capped at the
    required number)."""
    page = await _deposits(service_of(request)).list(caller.user_id, asset, limit, before)
    return _json(DepositPageView([deposit_view(item) for item in page.items], page.next_before))
