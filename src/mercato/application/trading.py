"""Trading for users: who may trade, orders from decimal strings, placement that a
client order id makes idempotent, amends, cancel-all and the development faucet.

The placement path is lean on purpose: eligibility is remembered, the command is built
from the view's rules in memory, and the journal is the durability point, so placing an
order makes no database round trip (a client order id that the Bloom filter of used ids
may know costs one read).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol

from sqlalchemy import select

from mercato.application.errors import ServiceError
from mercato.application.projection import ProjectionReads
from mercato.core.commands import AmendOrder, CancelAll, CreditDeposit, PlaceOrder
from mercato.core.events import OrderUpdated
from mercato.core.model import MAX_PRICE_TICKS, MAX_SUPPLY, OrderType, Side, StpMode, TimeInForce
from mercato.core.money import MoneyError, parse_amount
from mercato.core.results import Result
from mercato.port import ExchangePort
from mercato.store import queries
from mercato.store.tables import users

FAUCET_MAX_UNITS = 1_000_000  # per call, in whole units of the asset

#: A placement's outcome: the new order's result, or (order id, seq of its placement) of
#: the order that already has the client order id.
Placement = Result | tuple[int, int]


class OrderTicket(Protocol):
    """An order as a client writes it: decimal strings for every amount (the API's
    ``OrderRequest`` is one)."""

    market: str
    side: Side
    type: OrderType
    quantity: str | None
    price: str | None
    quote_quantity: str | None
    stop_price: str | None
    iceberg_quantity: str | None
    time_in_force: TimeInForce
    expire_at: int
    client_order_id: str
    stp: StpMode | None


class UsedClientIds(Protocol):
    """The Bloom filter of every client order id ever used (no false negatives)."""

    def may_contain(self, user: int, client_order_id: str) -> bool: ...


def parse_field(text: str | None, parse: Callable[[str, str], int], what: str,
                largest: int = MAX_SUPPLY) -> int:  # fmt: skip
    """``parse(text, what)`` (0 for an absent field), refused as INVALID_<WHAT> with the
    field's name in the message."""
    if text is None:
        return 0
    try:
        value = parse(text, what)
    except MoneyError as error:
        raise ServiceError(f"INVALID_{what.upper()}", error.message) from None
    if value > largest:
        raise ServiceError(f"INVALID_{what.upper()}", f"{what} {text} is too large")
    return value


class Eligibility:
    """Which users may trade: those with a verified email address. A verification is
    never undone, so a user found verified is remembered for the life of the process and
    the order path does not ask the database again. The user's standing (frozen,
    deleted) is not kept here: the credential check refuses a user who is not active
    (auth/sessions.py, within its 2 s trust window)."""

    def __init__(self, projection: ProjectionReads) -> None:
        self._projection = projection
        self._verified: set[int] = set()

    async def require_trader(self, user_id: int) -> None:
        if user_id in self._verified:
            return
        async with self._projection.connect() as connection:
            verified_at = (
                await connection.execute(
                    select(users.c.email_verified_at).where(users.c.id == user_id)
                )
            ).scalar_one_or_none()
        if verified_at is None:
            raise ServiceError("EMAIL_NOT_VERIFIED", "verify your email address before trading")
        self._verified.add(user_id)


class ClientOrderIds:
    """Makes ``client_order_id`` an idempotency key: a (user, id) places at most one order.

    A placement claims its key before its first await, so a concurrent repeat waits for it
    rather than racing it. Orders placed since the start are remembered here until the
    projection holds them; older ones are found in the projection, which caught up with
    the journal before the service became ready, and only asked when the Bloom filter of
    used ids says the key may have been used. A rejected placement leaves the key free.
    """

    KEEP = 50_000  # remembered keys before those already projected are dropped

    def __init__(
        self, port: ExchangePort, projection: ProjectionReads, used: UsedClientIds
    ) -> None:
        self._port = port
        self._projection = projection
        self._used = used
        self._placed: dict[tuple[int, str], tuple[int, int]] = {}  # -> (order_id, seq)
        self._pending: dict[tuple[int, str], asyncio.Future[tuple[int, int] | None]] = {}

    async def place_once(self, command: PlaceOrder) -> Placement:
        """The new order's result, or (order id, seq) of the order that has the key."""
        key = (command.user, command.client_order_id)
        while True:
            pending = self._pending.get(key)
            if pending is None:
                break
            found = await asyncio.shield(pending)
            if found is not None:
                return found
        if key in self._placed:
            return self._placed[key]
        claim: asyncio.Future[tuple[int, int] | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = claim
        try:
            found = await self._projected(key)
            if found is not None:
                claim.set_result(found)
                return found
            result = await self._port.submit(command)
            if result.status != "ACCEPTED":
                claim.set_result(None)
                raise ServiceError.rejected(result)
            self._remember(key, (result.order_id, result.seq))
            claim.set_result((result.order_id, result.seq))
            return result
        finally:
            if not claim.done():
                claim.set_result(None)
            del self._pending[key]

    async def _projected(self, key: tuple[int, str]) -> tuple[int, int] | None:
        if not self._used.may_contain(*key):
            return None  # never used: the common case needs no database read
        async with self._projection.connect() as connection:
            record = await queries.get_order(connection, key[0], client_order_id=key[1])
        return None if record is None else (record.order_id, record.created_seq)

    def _remember(self, key: tuple[int, str], placed: tuple[int, int]) -> None:
        if len(self._placed) >= self.KEEP:
            projected = self._projection.cursor
            self._placed = {k: v for k, v in self._placed.items() if v[1] > projected}
        self._placed[key] = placed


class Trading:
    """The trading service of one exchange (see the module doc)."""

    def __init__(self, port: ExchangePort, projection: ProjectionReads, used: UsedClientIds,
                 *, faucet: bool = False) -> None:  # fmt: skip
        self._port = port
        self._view = port.view
        self._projection = projection
        self._faucet = faucet
        self.eligibility = Eligibility(projection)
        self.client_order_ids = ClientOrderIds(port, projection, used)

    def require_trader(self, user_id: int) -> Awaitable[None]:
        """EMAIL_NOT_VERIFIED unless the user may trade (the eligibility's own coroutine:
        the order path pays no extra frame)."""
        return self.eligibility.require_trader(user_id)

    # -- placing ----------------------------------------------------------------------------

    def order_command(self, user: int, ticket: OrderTicket) -> PlaceOrder:
        """The engine command for ``ticket``; amounts must be exact multiples of the
        market's tick and step sizes (and of the quote asset's atom), never rounded."""
        view = self._view
        rules = view.rules(ticket.market)
        spec = view.spec(ticket.market)
        if rules is None or spec is None:
            raise ServiceError.unknown_market(ticket.market)
        quote = view.asset(spec.quote)
        assert quote is not None, "a market's assets exist"
        quote_decimals = quote.decimals
        return PlaceOrder(
            user,
            ticket.market,
            ticket.side,
            ticket.type,
            parse_field(ticket.quantity, rules.parse_quantity, "quantity"),
            parse_field(ticket.price, rules.parse_price, "price", MAX_PRICE_TICKS),
            ticket.time_in_force,
            ticket.client_order_id,
            parse_field(
                ticket.quote_quantity,
                lambda t, w: parse_amount(t, quote_decimals, w),
                "quote_quantity",
            ),
            parse_field(ticket.stop_price, rules.parse_price, "stop_price", MAX_PRICE_TICKS),
            ticket.expire_at,
            parse_field(ticket.iceberg_quantity, rules.parse_quantity, "iceberg_quantity"),
            ticket.stp,
        )

    async def place(self, command: PlaceOrder) -> Placement:
        """Place ``command`` (refused with the engine's code). With a client order id
        already used by an order of the user, nothing is placed and that order's (order id,
        seq) is the answer."""
        if command.client_order_id:
            return await self.client_order_ids.place_once(command)
        result = await self._port.submit(command)
        if result.status != "ACCEPTED":
            raise ServiceError.rejected(result)
        return result

    async def original(
        self, user: int, order_id: int, seq: int
    ) -> tuple[queries.OrderRecord, list[queries.FillRecord]]:
        """The order a repeated client order id refers to, as it is now, with all its
        fills (oldest first)."""
        await self._projection.caught_up(max(seq, self._port.last_seq))
        order = await self.order_record(user, order_id=order_id)
        async with self._projection.connect() as connection:
            page = await queries.user_fills(
                connection, user, order_id=order_id, limit=queries.MAX_LIMIT
            )
        return order, list(reversed(page.items))

    async def order_record(
        self, user: int, *, order_id: int | None = None, client_order_id: str | None = None
    ) -> queries.OrderRecord:
        """One of the user's orders from the projection (UNKNOWN_ORDER if there is none:
        someone else's order is not found either)."""
        async with self._projection.connect() as connection:
            record = await queries.get_order(
                connection, user, order_id=order_id, client_order_id=client_order_id
            )
        if record is None:
            raise ServiceError("UNKNOWN_ORDER", "you have no such order")
        return record

    # -- changing ---------------------------------------------------------------------------

    async def why_not_open(self, user: int, order_id: int, client_order_id: str) -> NoReturn:
        """Why an order cannot be changed: ORDER_NOT_OPEN if it is the user's and
        finished, else UNKNOWN_ORDER (another user's order is indistinguishable from no
        order)."""
        record = await self._projection.current(
            queries.get_order, user, order_id=order_id or None,
            client_order_id=client_order_id or None,
        )  # fmt: skip
        if record is not None:
            raise ServiceError("ORDER_NOT_OPEN", f"the order is {record.status} already")
        raise ServiceError("UNKNOWN_ORDER", "you have no such open order")

    async def amend_command(
        self,
        user: int,
        order_id: int,
        price: str | None,
        quantity: str | None,
        *,
        keep_priority: bool = False,
    ) -> AmendOrder:
        """The command that amends the user's open order ``order_id`` to ``price`` and/or
        the new total ``quantity`` (decimal strings on the market's sizes). With
        ``keep_priority`` (Binance's order amend keep priority) the engine takes only a
        smaller quantity at the same price and refuses a larger one
        (``AMEND_QUANTITY_INCREASE``)."""
        order = self._view.order(order_id)
        if order is None or order.user != user:
            await self.why_not_open(user, order_id, "")
        rules = self._view.rules(order.market)
        assert rules is not None, "an open order's market exists"
        return AmendOrder(
            user, order_id,
            quantity=parse_field(quantity, rules.parse_quantity, "quantity"),
            price=parse_field(price, rules.parse_price, "price", MAX_PRICE_TICKS),
            keep_priority=keep_priority,
        )  # fmt: skip

    def check_market(self, market: str | None) -> str | None:
        """``market`` unless it names no market (UNKNOWN_MARKET); None stays None."""
        if market is not None and not self._view.has_market(market):
            raise ServiceError.unknown_market(market)
        return market

    async def cancel_all(self, user: int, market: str | None) -> list[int]:
        """Cancel the user's open orders (of one market); the ids cancelled."""
        self.check_market(market)
        result = await self._port.submit(CancelAll(user, market or ""))
        if result.status != "ACCEPTED":
            raise ServiceError.rejected(result)
        return [
            event.order_id
            for event in result.events
            if isinstance(event, OrderUpdated) and event.user == user
            and event.status == "CANCELED"
        ]  # fmt: skip

    # -- funds --------------------------------------------------------------------------------

    def require_faucet(self) -> None:
        """FAUCET_DISABLED unless the server runs with ``--dev``."""
        if not self._faucet:
            raise ServiceError(
                "FAUCET_DISABLED", "the faucet exists only on servers run with --dev"
            )

    async def faucet(self, user: int, asset: str, amount: str) -> None:
        """Credit test funds (servers run with ``--dev`` only), through the engine like a
        deposit: at most 1,000,000 units of the asset per call."""
        self.require_faucet()
        known = self._view.asset(asset)
        if known is None:
            raise ServiceError.unknown_asset(asset)
        decimals = known.decimals
        atoms = parse_field(amount, lambda t, w: parse_amount(t, decimals, w), "amount")
        if atoms > FAUCET_MAX_UNITS * 10**decimals:
            raise ServiceError(
                "INVALID_AMOUNT", f"the faucet gives at most {FAUCET_MAX_UNITS} {asset}"
            )
        external_id = f"faucet:{secrets.token_hex(12)}"
        issued_at = time.time_ns() // 1_000_000  # a fresh id: the window only needs now
        result = await self._port.submit(
            CreditDeposit(user, asset, atoms, external_id, issued_at=issued_at)
        )
        if result.status != "ACCEPTED":
            raise ServiceError.rejected(result)
