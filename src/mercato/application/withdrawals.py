"""Withdrawals as a user and an admin meet them (docs/custody.md, "Withdrawals").

A request is checked in the documented order, each refusal a stable code with nothing
held or written; the checks that read what another request could change at the same
moment (the 2FA step, the address book, the daily limit) run in ONE store transaction
under a lock of the user's row (PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: every
write transaction begins IMMEDIATE and is exclusive), which also inserts the
withdrawal. Only then is the engine asked to hold amount + fee; the row records the
answer (``hold_state``), and :meth:`Withdrawals.recover` finishes what a crash
interrupted.

The address book: a request to an address the user never used adds it (cooling off for
``address_cooloff_seconds``) and is refused with ``ADDRESS_COOLING_OFF``. That addition
is committed with the 2FA step that authorised it, so the code is spent: the request
after the cool-off needs a fresh one (as every request does).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Row, Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.totp import check_second_factor
from mercato.config import CustodyAssetConfig, CustodyConfig
from mercato.core.errors import CodedError, ErrorKind
from mercato.core.money import MoneyError, atoms_per_unit, format_amount, to_units
from mercato.custody.chains.base import ChainAdapter
from mercato.custody.holds import audit, hold_command, now_ms, release_hold
from mercato.custody.units import atoms_to_chain
from mercato.port import ExchangePort
from mercato.store.tables import (
    WITHDRAWAL_STATUSES,
    custody_address_book,
    custody_approvals,
    custody_attempts,
    custody_outgoing,
    custody_withdrawal_holds,
    custody_withdrawals,
    users,
)

DAY_MS = 86_400_000
WITHDRAWAL_ID = re.compile(r"w[0-9a-f]{32}")
#: A REQUESTED row whose hold is still PENDING this long after the request is taken to
#: have been interrupted (the request's own hold takes milliseconds).
RECOVER_AFTER_MS = 5_000
CANCELABLE = ("REQUESTED", "APPROVAL_REQUIRED", "APPROVED")
#: Statuses that no longer count against the daily limit and whose hold goes back.
UNDONE = ("REJECTED", "CANCELED", "FAILED")
ADMIN_ROLES = ("admin", "superadmin")


class WithdrawalError(CodedError):
    """A refused withdrawal action; ``kind`` picks the HTTP status."""

    def __init__(self, code: str, message: str, kind: ErrorKind = ErrorKind.INVALID) -> None:
        super().__init__(code, message, kind)


class WithdrawalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A withdrawal as its row has it; amounts in atoms."""

    withdrawal_id: str
    user_id: int
    asset: str
    chain: str
    address: str
    amount: int
    fee: int
    status: str
    hold_state: str
    approvals_required: int
    reason: str | None
    requested_at: int
    updated_at: int
    txid: str | None = None  # the transaction that was mined, else the latest signed one


class AddressEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    chain: str
    address: str
    label: str
    created_at: int
    usable_at: int


def _record(row: Row[tuple[object, ...]]) -> WithdrawalRecord:
    values: dict[str, Any] = {
        name: getattr(row, name, None) for name in WithdrawalRecord.__struct_fields__
    }
    return WithdrawalRecord(**values)


def _with_txid() -> Select[Any]:
    """custody_withdrawals with ``txid``: the mined attempt's, else the newest signed."""
    o, a = custody_outgoing.c, custody_attempts.c
    latest = (
        select(a.txid)
        .where(a.outgoing_id == custody_withdrawals.c.outgoing_id)
        .order_by(a.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    mined = select(o.txid).where(o.id == custody_withdrawals.c.outgoing_id).scalar_subquery()
    return select(custody_withdrawals, func.coalesce(mined, latest).label("txid"))


class Withdrawals:
    """Requests, cancels, admin decisions and reads of withdrawals. ``adapters`` are the
    chain adapters by configured chain name (used here to check addresses only); an
    asset whose chain has none answers CUSTODY_UNAVAILABLE."""

    def __init__(
        self,
        db: AsyncEngine,
        port: ExchangePort,
        custody: CustodyConfig,
        adapters: Mapping[str, ChainAdapter],
        master_key: bytes,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self._port = port
        self._custody = custody
        self._adapters = adapters
        self._master_key = master_key
        self._clock = clock

    # -- checks without the store ---------------------------------------------------------

    def _asset(self, symbol: str) -> tuple[CustodyAssetConfig, ChainAdapter, int]:
        config = self._custody.asset(symbol)
        known = self._port.view.asset(symbol)
        adapter = None if config is None else self._adapters.get(config.chain)
        if config is None or adapter is None or known is None:
            raise WithdrawalError(
                "CUSTODY_UNAVAILABLE", f"{symbol} cannot be withdrawn here", ErrorKind.CONFLICT
            )
        return config, adapter, known.decimals

    @staticmethod
    def _config_atoms(text: str, decimals: int) -> int | None:
        """A configured amount (empty: none) in atoms."""
        return (
            None
            if not text
            else to_units(text, atoms_per_unit(decimals), "config", allow_zero=True)
        )

    def _amount(self, text: str, config: CustodyAssetConfig, decimals: int) -> int:
        try:
            atoms = to_units(text, atoms_per_unit(decimals), "amount")
        except MoneyError as error:
            raise WithdrawalError("INVALID_AMOUNT", error.message) from None
        minimum = self._config_atoms(config.min_withdrawal, decimals) or 0
        if atoms < minimum:
            raise WithdrawalError(
                "INVALID_AMOUNT",
                f"the smallest {config.symbol} withdrawal is {format_amount(minimum, decimals)}",
            )
        atoms_to_chain(atoms, config.chain_decimals, decimals)  # INVALID_AMOUNT if finer
        return atoms

    async def _refuse_if_held(self, user: int, asset: str) -> None:
        h = custody_withdrawal_holds.c
        async with self._db.connect() as connection:
            held = await connection.scalar(
                select(h.reason)
                .where(h.user_id == user, h.asset == asset, h.released_at.is_(None))
                .limit(1)
            )
        if held is not None:
            raise WithdrawalError(
                "WITHDRAWALS_HELD",
                f"your {asset} withdrawals are on hold ({held}); contact support",
                ErrorKind.FORBIDDEN,
            )

    # -- request --------------------------------------------------------------------------

    async def request(
        self,
        user: int,
        asset: str,
        amount: str,
        address: str,
        totp_code: str | None,
        ip: str | None = None,
    ) -> WithdrawalRecord:
        """Request a withdrawal of ``amount`` (what arrives) to ``address``; the fee is
        held on top. Returns the row after the engine's hold."""
        config, adapter, decimals = self._asset(asset)
        atoms = self._amount(amount, config, decimals)
        fee = self._config_atoms(config.withdrawal_fee, decimals) or 0
        address = adapter.normalize_address(address)
        await self._refuse_if_held(user, asset)
        threshold = self._config_atoms(config.approval_threshold, decimals)
        needs = config.approvals_required if threshold is not None and atoms > threshold else 0
        withdrawal_id = "w" + uuid.uuid4().hex
        cooling_until = None
        async with self._db.begin() as connection:
            await _lock_user(connection, user)
            await check_second_factor(connection, self._master_key, user, totp_code)
            cooling_until = await self._address_usable(connection, user, config, address, ip)
            if cooling_until is None:
                await self._check_daily_limit(connection, user, config, atoms, decimals)
                self._check_balance(user, asset, atoms + fee, decimals)
                now = self._clock()
                await connection.execute(
                    insert(custody_withdrawals).values(
                        withdrawal_id=withdrawal_id,
                        user_id=user,
                        asset=asset,
                        chain=config.chain,
                        address=address,
                        amount=atoms,
                        fee=fee,
                        status="REQUESTED",
                        hold_state="PENDING",
                        approvals_required=needs,
                        requested_at=now,
                        updated_at=now,
                    )
                )
                await audit(
                    connection,
                    "withdrawal.request",
                    user_id=user,
                    actor_id=user,
                    ip=ip,
                    withdrawal_id=withdrawal_id,
                    asset=asset,
                    address=address,
                    amount=format_amount(atoms, decimals),
                    fee=format_amount(fee, decimals),
                )
        if cooling_until is not None:
            raise self._cooling(address, cooling_until)
        return await self._hold(withdrawal_id)

    async def _address_usable(
        self,
        connection: AsyncConnection,
        user: int,
        config: CustodyAssetConfig,
        address: str,
        ip: str | None,
    ) -> int | None:
        """None if ``address`` is usable now; else when it will be. An address not in the
        book is added here (the caller commits it, then refuses, unless the cool-off is 0:
        then it is usable at once and the request goes on)."""
        b = custody_address_book.c
        usable_at = await connection.scalar(
            select(b.usable_at).where(
                b.user_id == user, b.chain == config.chain, b.address == address
            )
        )
        now = self._clock()
        if usable_at is None:
            usable_at = await self._add_address(connection, user, config.chain, address, "", ip)
            return int(usable_at) if self._custody.address_cooloff_seconds > 0 else None
        if usable_at > now:
            raise self._cooling(address, int(usable_at))
        return None

    async def _add_address(
        self,
        connection: AsyncConnection,
        user: int,
        chain: str,
        address: str,
        label: str,
        ip: str | None,
    ) -> int:
        now = self._clock()
        usable_at = now + self._custody.address_cooloff_seconds * 1000
        await connection.execute(
            insert(custody_address_book).values(
                user_id=user,
                chain=chain,
                address=address,
                label=label,
                created_at=now,
                usable_at=usable_at,
            )
        )
        await audit(
            connection,
            "withdrawal_address.add",
            user_id=user,
            actor_id=user,
            ip=ip,
            chain=chain,
            address=address,
            usable_at=usable_at,
        )
        return usable_at

    @staticmethod
    def _cooling(address: str, usable_at: int) -> WithdrawalError:
        return WithdrawalError(
            "ADDRESS_COOLING_OFF",
            f"{address} is new in your address book: withdrawals to it are possible from "
            f"{_utc(usable_at)} ({usable_at} ms since the epoch)",
            ErrorKind.CONFLICT,
        )

    async def _check_daily_limit(
        self,
        connection: AsyncConnection,
        user: int,
        config: CustodyAssetConfig,
        atoms: int,
        decimals: int,
    ) -> None:
        """The limit counts what the user withdraws (amounts, not fees) over the last 24 h
        of their withdrawals of the asset that were not undone."""
        limit = self._config_atoms(config.daily_limit, decimals)
        if limit is None:
            return
        w = custody_withdrawals.c
        used = await connection.scalar(
            select(func.coalesce(func.sum(w.amount), 0)).where(
                w.user_id == user,
                w.asset == config.symbol,
                w.status.not_in(UNDONE),
                w.requested_at > self._clock() - DAY_MS,
            )
        )
        left = max(0, limit - int(used or 0))
        if atoms > left:
            raise WithdrawalError(
                "DAILY_LIMIT_EXCEEDED",
                f"over the daily {config.symbol} limit of {format_amount(limit, decimals)}: "
                f"{format_amount(left, decimals)} left for the next 24 h",
            )

    def _check_balance(self, user: int, asset: str, total: int, decimals: int) -> None:
        available = self._port.view.balance(user, asset)[0]
        if total > available:
            raise WithdrawalError(
                "INSUFFICIENT_BALANCE",
                f"the withdrawal with its fee needs {format_amount(total, decimals)} {asset}, "
                f"{format_amount(available, decimals)} available",
            )

    async def _hold(self, withdrawal_id: str) -> WithdrawalRecord:
        """Ask the engine to hold amount + fee, and record its answer."""
        row = await self._row(withdrawal_id)
        result = await self._port.submit(
            hold_command(
                row.user_id,
                row.asset,
                row.amount + row.fee,
                withdrawal_id,
                row.fee,
                row.requested_at,
            )
        )
        if result.status == "ACCEPTED" or result.code == "DUPLICATE_WITHDRAWAL":
            await self._held(row)
            return await self.get(row.user_id, withdrawal_id)
        async with self._db.begin() as connection:
            await self._update(
                connection, withdrawal_id, ("REQUESTED",), status="REJECTED", reason=result.message
            )
            await connection.execute(
                update(custody_withdrawals)
                .where(custody_withdrawals.c.withdrawal_id == withdrawal_id)
                .values(hold_state="NONE")
            )
        raise WithdrawalError(result.code, result.message)

    async def _held(self, row: Row[tuple[object, ...]]) -> None:
        after = "APPROVAL_REQUIRED" if row.approvals_required else "APPROVED"
        async with self._db.begin() as connection:
            w = custody_withdrawals.c
            await connection.execute(
                update(custody_withdrawals)
                .where(w.withdrawal_id == row.withdrawal_id, w.hold_state == "PENDING")
                .values(hold_state="HELD", updated_at=self._clock())
            )
            advanced = await self._update(
                connection, row.withdrawal_id, ("REQUESTED",), status=after
            )
        if not advanced:  # canceled while the hold was being placed: give it back
            await release_hold(self._db, self._port, row.withdrawal_id)

    # -- cancel ---------------------------------------------------------------------------

    async def cancel(
        self, user: int, withdrawal_id: str, ip: str | None = None
    ) -> WithdrawalRecord:
        """Cancel before signing (the sender's APPROVED -> SIGNED races this: one wins)."""
        async with self._db.begin() as connection:
            w = custody_withdrawals.c
            moved = await connection.execute(
                update(custody_withdrawals)
                .where(
                    w.withdrawal_id == withdrawal_id, w.user_id == user, w.status.in_(CANCELABLE)
                )
                .values(status="CANCELED", reason="canceled by the user", updated_at=self._clock())
            )
            if moved.rowcount:
                await audit(
                    connection,
                    "withdrawal.cancel",
                    user_id=user,
                    actor_id=user,
                    ip=ip,
                    withdrawal_id=withdrawal_id,
                )
        row = await self.get(user, withdrawal_id)
        if not moved.rowcount:
            raise WithdrawalError(
                "WITHDRAWAL_NOT_CANCELABLE",
                f"withdrawal {withdrawal_id} is {row.status}: only a withdrawal not yet "
                "signed can be canceled",
                ErrorKind.CONFLICT,
            )
        if row.hold_state == "HELD":
            await release_hold(self._db, self._port, withdrawal_id)
        return await self.get(user, withdrawal_id)

    # -- admin decisions ------------------------------------------------------------------

    async def approve(
        self, admin: int, withdrawal_id: str, totp_code: str | None, ip: str | None = None
    ) -> WithdrawalRecord:
        """One admin's approval; APPROVED once enough live approvals of other admins."""
        try:
            async with self._db.begin() as connection:
                row = await self._decidable(connection, admin, withdrawal_id, totp_code)
                await self._record_decision(connection, admin, withdrawal_id, "APPROVE")
                live = await self._live_approvals(connection, row)
                approved = live >= row.approvals_required and await self._update(
                    connection, withdrawal_id, ("APPROVAL_REQUIRED",), status="APPROVED"
                )
                await audit(
                    connection,
                    "withdrawal.approve",
                    user_id=row.user_id,
                    actor_id=admin,
                    ip=ip,
                    withdrawal_id=withdrawal_id,
                    live_approvals=live,
                    approved=approved,
                )
        except IntegrityError:
            raise _already_decided(withdrawal_id) from None
        return _record(await self._row(withdrawal_id))

    async def reject(
        self,
        admin: int,
        withdrawal_id: str,
        reason: str,
        totp_code: str | None,
        ip: str | None = None,
    ) -> WithdrawalRecord:
        """One rejection rejects; the hold goes back (once: the engine drops it)."""
        try:
            async with self._db.begin() as connection:
                row = await self._decidable(
                    connection, admin, withdrawal_id, totp_code, ("APPROVAL_REQUIRED", "APPROVED")
                )
                await self._record_decision(connection, admin, withdrawal_id, "REJECT")
                rejected = await self._update(
                    connection,
                    withdrawal_id,
                    ("APPROVAL_REQUIRED", "APPROVED"),
                    status="REJECTED",
                    reason=reason or "rejected by an admin",
                )
                await audit(
                    connection,
                    "withdrawal.reject",
                    user_id=row.user_id,
                    actor_id=admin,
                    ip=ip,
                    withdrawal_id=withdrawal_id,
                    reason=reason,
                )
        except IntegrityError:
            raise _already_decided(withdrawal_id) from None
        if rejected:  # always, as the row was locked; never a release of a signed one
            await release_hold(self._db, self._port, withdrawal_id)
        return _record(await self._row(withdrawal_id))

    async def _decidable(
        self,
        connection: AsyncConnection,
        admin: int,
        withdrawal_id: str,
        totp_code: str | None,
        statuses: tuple[str, ...] = ("APPROVAL_REQUIRED",),
    ) -> Row[tuple[object, ...]]:
        """The withdrawal row locked (decisions on it are serialised), after the admin's
        role and 2FA are checked and the code spent."""
        person = (await connection.execute(select(users).where(users.c.id == admin))).one()
        if person.role not in ADMIN_ROLES:
            raise WithdrawalError(
                "ADMIN_REQUIRED", "only an admin decides on withdrawals", ErrorKind.FORBIDDEN
            )
        if not person.totp_enabled:
            raise WithdrawalError(
                "ADMIN_2FA_REQUIRED",
                "enable 2FA before deciding on withdrawals",
                ErrorKind.FORBIDDEN,
            )
        w = custody_withdrawals.c
        row = (
            await connection.execute(
                select(custody_withdrawals)
                .where(w.withdrawal_id == withdrawal_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise _not_found(withdrawal_id)
        if row.user_id == admin:
            raise WithdrawalError(
                "SELF_APPROVAL",
                "the requester never decides on their own withdrawal",
                ErrorKind.FORBIDDEN,
            )
        if row.status not in statuses:
            raise WithdrawalError(
                "WITHDRAWAL_NOT_PENDING",
                f"withdrawal {withdrawal_id} is {row.status}: nothing to decide",
                ErrorKind.CONFLICT,
            )
        await check_second_factor(connection, self._master_key, admin, totp_code)
        return row

    async def _record_decision(
        self, connection: AsyncConnection, admin: int, withdrawal_id: str, decision: str
    ) -> None:
        """One decision per admin (unique constraint). An approval that expired may be
        given again: its time is renewed."""
        a = custody_approvals.c
        mine = (a.withdrawal_id == withdrawal_id, a.admin_id == admin)
        previous = (await connection.execute(select(custody_approvals).where(*mine))).one_or_none()
        now = self._clock()
        expired = now - self._custody.approval_ttl_seconds * 1000
        if previous is None:
            await connection.execute(
                insert(custody_approvals).values(
                    withdrawal_id=withdrawal_id, admin_id=admin, decision=decision, created_at=now
                )
            )
        elif previous.decision == "APPROVE" and previous.created_at <= expired:
            await connection.execute(
                update(custody_approvals).where(*mine).values(decision=decision, created_at=now)
            )
        else:
            raise _already_decided(withdrawal_id)

    async def _live_approvals(
        self, connection: AsyncConnection, row: Row[tuple[object, ...]]
    ) -> int:
        a = custody_approvals.c
        since = self._clock() - self._custody.approval_ttl_seconds * 1000
        count = await connection.scalar(
            select(func.count()).where(
                a.withdrawal_id == row.withdrawal_id,
                a.decision == "APPROVE",
                a.admin_id != row.user_id,
                a.created_at > since,
            )
        )
        return int(count or 0)

    # -- reads ----------------------------------------------------------------------------

    async def _row(self, withdrawal_id: str) -> Row[tuple[object, ...]]:
        if not WITHDRAWAL_ID.fullmatch(withdrawal_id):
            raise _not_found(withdrawal_id)  # not one of ours: no query (NUL, huge text)
        async with self._db.connect() as connection:
            row = (
                await connection.execute(
                    select(custody_withdrawals).where(
                        custody_withdrawals.c.withdrawal_id == withdrawal_id
                    )
                )
            ).one_or_none()
        if row is None:
            raise _not_found(withdrawal_id)
        return row

    async def get(self, user: int, withdrawal_id: str) -> WithdrawalRecord:
        """The user's withdrawal (another user's is not found either), with its txid."""
        w = custody_withdrawals.c
        async with self._db.connect() as connection:
            row = (
                await connection.execute(_with_txid().where(w.withdrawal_id == withdrawal_id))
            ).one_or_none()
        if row is None or row.user_id != user:
            raise _not_found(withdrawal_id)
        return _record(row)

    async def list(
        self, user: int | None, status: str | None = None, limit: int = 100
    ) -> builtins.list[WithdrawalRecord]:
        """Newest first: the user's (``user`` None: everyone's, for admins)."""
        if status is not None and status not in WITHDRAWAL_STATUSES:
            raise WithdrawalError(
                "INVALID_STATUS", f"status must be one of {', '.join(WITHDRAWAL_STATUSES)}"
            )
        w = custody_withdrawals.c
        query = _with_txid().order_by(w.id.desc()).limit(limit)
        if user is not None:
            query = query.where(w.user_id == user)
        if status is not None:
            query = query.where(w.status == status)
        async with self._db.connect() as connection:
            return [_record(row) for row in await connection.execute(query)]

    # -- address book ---------------------------------------------------------------------

    async def addresses(self, user: int) -> builtins.list[AddressEntry]:
        b = custody_address_book.c
        async with self._db.connect() as connection:
            rows = await connection.execute(
                select(custody_address_book).where(b.user_id == user).order_by(b.id)
            )
            return [
                AddressEntry(
                    id=r.id,
                    chain=r.chain,
                    address=r.address,
                    label=r.label,
                    created_at=r.created_at,
                    usable_at=r.usable_at,
                )
                for r in rows
            ]

    async def add_address(
        self,
        user: int,
        asset: str,
        address: str,
        label: str,
        totp_code: str | None,
        ip: str | None = None,
    ) -> AddressEntry:
        """Add an address for ``asset``'s chain (2FA when enabled); usable after the
        cool-off. An address already there is refused as ADDRESS_EXISTS."""
        config, adapter, _ = self._asset(asset)
        address = adapter.normalize_address(address)
        try:
            async with self._db.begin() as connection:
                await check_second_factor(connection, self._master_key, user, totp_code)
                await self._add_address(connection, user, config.chain, address, label, ip)
        except IntegrityError:
            raise WithdrawalError(
                "ADDRESS_EXISTS", f"{address} is in your address book already", ErrorKind.CONFLICT
            ) from None
        return next(
            e
            for e in await self.addresses(user)
            if e.chain == config.chain and e.address == address
        )

    async def remove_address(self, user: int, entry_id: int, ip: str | None = None) -> None:
        b = custody_address_book.c
        async with self._db.begin() as connection:
            gone = await connection.execute(
                delete(custody_address_book).where(b.id == entry_id, b.user_id == user)
            )
            if not gone.rowcount:
                raise WithdrawalError(
                    "ADDRESS_NOT_FOUND",
                    f"no address {entry_id} in your address book",
                    ErrorKind.NOT_FOUND,
                )
            await audit(
                connection,
                "withdrawal_address.remove",
                user_id=user,
                actor_id=user,
                ip=ip,
                entry_id=entry_id,
            )

    # -- recovery -------------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a crash interrupted: holds never recorded (REQUESTED, PENDING) and
        holds of undone withdrawals never given back (REJECTED/CANCELED/FAILED, HELD)."""
        w = custody_withdrawals.c
        async with self._db.connect() as connection:
            pending = (
                (
                    await connection.execute(
                        select(custody_withdrawals.c.withdrawal_id).where(
                            w.hold_state == "PENDING",
                            w.requested_at < self._clock() - RECOVER_AFTER_MS,
                        )
                    )
                )
                .scalars()
                .all()
            )
            undone = (
                (
                    await connection.execute(
                        select(custody_withdrawals.c.withdrawal_id).where(
                            w.hold_state == "HELD", w.status.in_(UNDONE)
                        )
                    )
                )
                .scalars()
                .all()
            )
        for withdrawal_id in pending:
            # The engine may refuse the hold now (the balance moved): the row says REJECTED.
            with contextlib.suppress(WithdrawalError):
                await self._recover_hold(withdrawal_id)
        for withdrawal_id in undone:
            await release_hold(self._db, self._port, withdrawal_id)

    async def _recover_hold(self, withdrawal_id: str) -> None:
        row = await self._row(withdrawal_id)
        held = getattr(self._port.view, "held_withdrawal", None)
        if held is not None and held(withdrawal_id) is not None:
            await self._held(row)
            return
        if row.status == "REQUESTED":
            await self._hold(withdrawal_id)  # a duplicate id is taken as held
            return
        # Canceled before its hold was recorded: a resubmitted Release answers whether
        # there was one (UNKNOWN_WITHDRAWAL: there was not).
        async with self._db.begin() as connection:
            await connection.execute(
                update(custody_withdrawals)
                .where(w_id(withdrawal_id), custody_withdrawals.c.hold_state == "PENDING")
                .values(hold_state="HELD")
            )
        await release_hold(self._db, self._port, withdrawal_id)

    async def _update(
        self,
        connection: AsyncConnection,
        withdrawal_id: str,
        before: tuple[str, ...],
        **values: object,
    ) -> bool:
        """Compare-and-set of the row's status from one of ``before``."""
        moved = await connection.execute(
            update(custody_withdrawals)
            .where(w_id(withdrawal_id), custody_withdrawals.c.status.in_(before))
            .values(updated_at=self._clock(), **values)
        )
        return bool(moved.rowcount)


def w_id(withdrawal_id: str):  # type: ignore[no-untyped-def]
    return custody_withdrawals.c.withdrawal_id == withdrawal_id


async def _lock_user(connection: AsyncConnection, user: int) -> None:
    """Serialise this user's withdrawal requests (SQLite: the transaction already is)."""
    await connection.execute(select(users.c.id).where(users.c.id == user).with_for_update())


def _not_found(withdrawal_id: str) -> WithdrawalError:
    return WithdrawalError(
        "WITHDRAWAL_NOT_FOUND", f"no withdrawal {withdrawal_id}", ErrorKind.NOT_FOUND
    )


def _already_decided(withdrawal_id: str) -> WithdrawalError:
    return WithdrawalError(
        "ALREADY_DECIDED", f"you decided on withdrawal {withdrawal_id} already", ErrorKind.CONFLICT
    )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
