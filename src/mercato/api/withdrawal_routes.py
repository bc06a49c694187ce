"""`/api/v1/withdrawals`, `/api/v1/withdrawal-addresses` and the admins' approvals
(docs/custody.md, "Withdrawals"). Amounts are decimal strings in the asset's units."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import Response

from mercato.api.auth_routes import Caller, SessionCaller, caller_with, service_of
from mercato.api.errors import ApiError
from mercato.api.openapi import SIGNED_IN, errors, json_body, json_response
from mercato.api.trading_routes import Decimal40, Str32, decode
from mercato.application.withdrawals import (
    ADMIN_ROLES,
    AddressEntry,
    WithdrawalError,
    WithdrawalRecord,
    Withdrawals,
)
from mercato.auth.sessions import Principal
from mercato.core.errors import ErrorKind
from mercato.core.money import format_amount
from mercato.service import ExchangeService
from mercato.store.tables import WITHDRAWAL_STATUSES

STATUS_PATTERN = f"^({'|'.join(WITHDRAWAL_STATUSES)})$"
EntryId = Annotated[int, FastPath(ge=1, le=2**62)]
router = APIRouter(prefix="/api/v1", tags=["withdrawals"])

Text128 = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern="^[^\\x00]*$")]
Code = Annotated[str, msgspec.Meta(max_length=32)]
# PostgreSQL text cannot hold NUL: refused here (400), not in the store (500).
NO_NUL = "^[^\\x00]*$"


class WithdrawalRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: Str32
    amount: Decimal40
    address: Text128
    totp_code: Code | None = None


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    totp_code: Code | None = None


class RejectRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=256, pattern=NO_NUL)] = ""
    totp_code: Code | None = None


class AddressRequest(msgspec.Struct, forbid_unknown_fields=True):
    asset: Str32
    address: Text128
    label: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)] = ""
    totp_code: Code | None = None


class WithdrawalView(msgspec.Struct, kw_only=True):
    withdrawal_id: str
    asset: str
    chain: str
    address: str
    amount: str
    fee: str
    status: str
    approvals_required: int
    reason: str | None
    requested_at: int
    updated_at: int
    txid: str | None = None  # once signed: the transaction on chain (the mined one when done)


class AddressView(msgspec.Struct, kw_only=True):
    id: int
    chain: str
    address: str
    label: str
    created_at: int
    usable_at: int


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def _withdrawals(service: ExchangeService) -> Withdrawals:
    if service.withdrawals is None:
        raise WithdrawalError(
            "CUSTODY_UNAVAILABLE", "withdrawals are not configured here", ErrorKind.CONFLICT
        )
    return service.withdrawals


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _view(service: ExchangeService, record: WithdrawalRecord) -> WithdrawalView:
    assert service.port is not None
    known = service.port.view.asset(record.asset)
    decimals = known.decimals if known is not None else 0
    return WithdrawalView(
        withdrawal_id=record.withdrawal_id,
        asset=record.asset,
        chain=record.chain,
        address=record.address,
        amount=format_amount(record.amount, decimals),
        fee=format_amount(record.fee, decimals),
        status=record.status,
        approvals_required=record.approvals_required,
        reason=record.reason,
        requested_at=record.requested_at,
        updated_at=record.updated_at,
        txid=record.txid,
    )


def _address_view(entry: AddressEntry) -> AddressView:
    return AddressView(**msgspec.structs.asdict(entry))


async def withdrawer(request: Request) -> Principal:
    """A session, or an API key with the withdraw permission."""
    return await caller_with(request, "withdraw")


async def admin(caller: SessionCaller) -> Principal:
    """An admin's login session (never an API key)."""
    if caller.role not in ADMIN_ROLES:
        raise ApiError(403, "ADMIN_REQUIRED", "only an admin's session may do this")
    return caller


Withdrawer = Annotated[Principal, Depends(withdrawer)]
Admin = Annotated[Principal, Depends(admin)]


@router.post(
    "/withdrawals",
    status_code=201,
    openapi_extra=json_body(WithdrawalRequest),
    responses={
        **json_response(WithdrawalView, 201, "Requested and held"),
        **errors(*SIGNED_IN, 409),
    },
)
async def request_withdrawal(request: Request, caller: Withdrawer) -> Response:
    """Withdraw ``amount`` (what arrives) to ``address``; the asset's fee is held on top.
    A new address is added to the address book and refused until it has cooled off."""
    service = service_of(request)
    body: WithdrawalRequest = await decode(request, WithdrawalRequest)
    record = await _withdrawals(service).request(
        caller.user_id, body.asset, body.amount, body.address, body.totp_code, _ip(request)
    )
    return _json(_view(service, record), 201)


@router.get(
    "/withdrawals",
    responses={
        **json_response(list[WithdrawalView], 200, "Newest first"),
        **errors(*SIGNED_IN, 409),
    },
)
async def list_withdrawals(request: Request, caller: Caller) -> Response:
    """The caller's withdrawals, newest first."""
    service = service_of(request)
    records = await _withdrawals(service).list(caller.user_id)
    return _json([_view(service, r) for r in records])


@router.get(
    "/withdrawals/{withdrawal_id}",
    responses={
        **json_response(WithdrawalView, 200, "The withdrawal"),
        **errors(*SIGNED_IN, 404, 409),
    },
)
async def get_withdrawal(withdrawal_id: str, request: Request, caller: Caller) -> Response:
    service = service_of(request)
    return _json(_view(service, await _withdrawals(service).get(caller.user_id, withdrawal_id)))


@router.delete(
    "/withdrawals/{withdrawal_id}",
    responses={
        **json_response(WithdrawalView, 200, "Canceled; the hold released"),
        **errors(*SIGNED_IN, 404, 409),
    },
)
async def cancel_withdrawal(withdrawal_id: str, request: Request, caller: Withdrawer) -> Response:
    """Cancel a withdrawal that is not signed yet."""
    service = service_of(request)
    record = await _withdrawals(service).cancel(caller.user_id, withdrawal_id, _ip(request))
    return _json(_view(service, record))


@router.get(
    "/withdrawal-addresses",
    responses={
        **json_response(list[AddressView], 200, "The address book"),
        **errors(*SIGNED_IN, 409),
    },
)
async def list_addresses(request: Request, caller: Caller) -> Response:
    entries = await _withdrawals(service_of(request)).addresses(caller.user_id)
    return _json([_address_view(e) for e in entries])


@router.post(
    "/withdrawal-addresses",
    status_code=201,
    openapi_extra=json_body(AddressRequest),
    responses={
        **json_response(AddressView, 201, "Added; usable from usable_at"),
        **errors(*SIGNED_IN, 409),
    },
)
async def add_address(request: Request, caller: SessionCaller) -> Response:
    """Add a withdrawal address (2FA when enabled); usable after the cool-off."""
    body: AddressRequest = await decode(request, AddressRequest)
    entry = await _withdrawals(service_of(request)).add_address(
        caller.user_id, body.asset, body.address, body.label, body.totp_code, _ip(request)
    )
    return _json(_address_view(entry), 201)


@router.delete(
    "/withdrawal-addresses/{entry_id}", status_code=204, responses=errors(*SIGNED_IN, 404, 409)
)
async def remove_address(entry_id: EntryId, request: Request, caller: SessionCaller) -> Response:
    await _withdrawals(service_of(request)).remove_address(caller.user_id, entry_id, _ip(request))
    return Response(status_code=204)


@router.get(
    "/admin/withdrawals",
    responses={
        **json_response(list[WithdrawalView], 200, "Newest first"),
        **errors(*SIGNED_IN, 409),
    },
)
async def admin_list(
    request: Request,
    caller: Admin,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
) -> Response:
    """Every user's withdrawals, e.g. ``?status=APPROVAL_REQUIRED``."""
    service = service_of(request)
    records = await _withdrawals(service).list(None, status)
    return _json([_view(service, r) for r in records])


@router.post(
    "/admin/withdrawals/{withdrawal_id}/approve",
    openapi_extra=json_body(DecisionRequest),
    responses={
        **json_response(WithdrawalView, 200, "The approval counted"),
        **errors(*SIGNED_IN, 404, 409),
    },
)
async def approve(withdrawal_id: str, request: Request, caller: Admin) -> Response:
    """Approve (a fresh 2FA code needed; the requester never counts)."""
    service = service_of(request)
    body: DecisionRequest = await decode(request, DecisionRequest)
    record = await _withdrawals(service).approve(
        caller.user_id, withdrawal_id, body.totp_code, _ip(request)
    )
    return _json(_view(service, record))


@router.post(
    "/admin/withdrawals/{withdrawal_id}/reject",
    openapi_extra=json_body(RejectRequest),
    responses={
        **json_response(WithdrawalView, 200, "Rejected; the hold released"),
        **errors(*SIGNED_IN, 404, 409),
    },
)
async def reject(withdrawal_id: str, request: Request, caller: Admin) -> Response:
    service = service_of(request)
    body: RejectRequest = await decode(request, RejectRequest)
    record = await _withdrawals(service).reject(
        caller.user_id, withdrawal_id, body.reason, body.totp_code, _ip(request)
    )
    return _json(_view(service, record))
