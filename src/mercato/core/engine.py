"""The deterministic exchange engine: ledger, order books, matching, stops, expiry.

``Engine.apply(seq, ts, command)`` is the only way to change state. It reads no clock,
does no I/O and draws no random numbers: time and sequence come with the command, so
the same command stream always yields the same events and the same ``state_hash()``.
A command is validated completely before anything changes; a failed check raises
:class:`Rejection`, which becomes a REJECTED result with nothing applied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

import msgspec

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core.book import BookSide, MarketState, Order
from mercato.core.commands import CancelOrder, PlaceOrder

# The hot path's classes are imported by name: compiled, a module attribute costs a
# generic attribute lookup on every use.
from mercato.core.events import OrderAccepted, OrderUpdated, Trade, Transfer
from mercato.core.model import (
    AVAILABLE,
    DEPOSIT,
    EXTERNAL_DEPOSITS,
    EXTERNAL_WITHDRAWALS,
    FEE,
    FEES,
    LIMIT_PRICED_TYPES,
    LOCKED,
    RELEASE,
    RESERVE,
    STOP_TYPES,
    WITHDRAWAL,
    Asset,
    MarketRules,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)
from mercato.core.money import (
    FEE_RATE_DENOMINATOR,
    MoneyError,
    format_amount,
    format_units,
    parse_fee_rate,
)
from mercato.core.results import Rejection, Result

MAX_PRICE_TICKS = 10**15
# Every amount must fit a signed 64-bit integer (msgpack, SQL BIGINT). Bounding what
# was ever deposited of an asset bounds every balance, fee and reservation of it.
MAX_SUPPLY = 2**63 - 1
MAX_ASSET_DECIMALS = 30
MARKET_TYPES = frozenset({"MARKET", "STOP_LOSS", "TAKE_PROFIT"})
# Binance's ICEBERG_PARTS filter, fixed for every market: an iceberg shows at least
# 1/MAX_ICEBERG_PARTS of its quantity, which bounds the slices (and the fills) one
# order can produce in a single sweep.
MAX_ICEBERG_PARTS = 100
# Stops that fire when the last price rises to the stop price; the others fire on a fall.
_FIRES_ON_RISE = {
    ("BUY", "STOP_LOSS"),
    ("BUY", "STOP_LOSS_LIMIT"),
    ("SELL", "TAKE_PROFIT"),
    ("SELL", "TAKE_PROFIT_LIMIT"),
}
_QUOTE_BUY_SENTINEL = 1 << 62  # "as many lots as the quote amount buys"

Handler = Callable[[int, int, Any, list[e.Event]], Result]


# Rejection messages speak the API's units: prices in quote, quantities in base, amounts
# of an asset with its symbol (exact decimal strings, never atoms, ticks or lots).


def _price_text(market: MarketState, ticks: int) -> str:
    return f"{format_units(ticks, market.rules.tick_size)} {market.quote}"


def _price_range(market: MarketState) -> str:
    tick = market.rules.tick_size
    return f"{format_units(1, tick)}..{format_units(MAX_PRICE_TICKS, tick)} {market.quote}"


def _quantity_text(market: MarketState, lots: int) -> str:
    return f"{format_units(lots, market.rules.step_size)} {market.base}"


def _quantity_range(market: MarketState) -> str:
    step = market.rules.step_size
    low, high = format_units(market.min_lots, step), format_units(market.max_lots, step)
    return f"{low}..{high} {market.base}"


class Engine:
    """One single-threaded state machine for all markets and balances."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.last_ts = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, MarketState] = {}
        # balances[user][asset] = [available, locked]
        self.balances: dict[int, dict[str, list[int]]] = {}
        self.fees: dict[str, int] = {}
        self.external_deposits: dict[str, int] = {}  # minus everything ever deposited
        self.external_withdrawals: dict[str, int] = {}  # everything ever withdrawn
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[tuple[int, str], int] = {}
        self.fee_tiers: dict[int, tuple[int, int]] = {}
        self.user_tiers: dict[int, int] = {}
        self.frozen: set[int] = set()
        self.kill_switch = "OFF"
        self.deposit_ids: set[str] = set()
        self.withdrawals: dict[
            str, tuple[int, str, int, int]
        ] = {}  # id -> user, asset, amount, fee
        self.finished_withdrawals: set[str] = set()
        self.gtd: list[tuple[int, int]] = []  # heap of (expire_at, order_id)
        self._handlers: dict[type, Handler] = {
            c.PlaceOrder: self._place,
            c.CancelOrder: self._cancel,
            c.CancelAll: self._cancel_all,
            c.AmendOrder: self._amend,
            c.CreditDeposit: self._deposit,
            c.HoldWithdrawal: self._hold_withdrawal,
            c.SettleWithdrawal: self._settle_withdrawal,
            c.ReleaseWithdrawal: self._release_withdrawal,
            c.UpsertAsset: self._upsert_asset,
            c.UpsertMarket: self._upsert_market,
            c.SetMarketStatus: self._set_market_status,
            c.SetFeeTier: self._set_fee_tier,
            c.SetUserFeeTier: self._set_user_fee_tier,
            c.FreezeUser: self._freeze,
            c.UnfreezeUser: self._unfreeze,
            c.SetKillSwitch: self._set_kill_switch,
            c.Tick: self._tick,
        }

    # ------------------------------------------------------------------ entry point

    def apply(self, seq: int, ts: int, command: c.Command) -> Result:
        """Apply one sequenced command. Never raises for bad input: it rejects.

        GTD orders whose time has come expire first, whatever the command; their events
        lead the result's events even when the command itself is rejected.
        """
        self.last_seq = seq
        if ts > self.last_ts:
            self.last_ts = ts
        events: list[e.Event] = []
        gtd = self.gtd
        if gtd and gtd[0][0] <= ts:
            self._expire_due(ts, events)
        try:
            # The two commands of almost every flow go straight to their handlers.
            if type(command) is PlaceOrder:
                return self._place(seq, ts, command, events)
            if type(command) is CancelOrder:
                return self._cancel(seq, ts, command, events)
        except Rejection as rejection:
            return Result(seq, "REJECTED", events, rejection.code, rejection.message)
        handler = self._handlers.get(type(command))
        if handler is None:
            return Result(
                seq, "REJECTED", events, "UNKNOWN_COMMAND", f"{command!r} is not a command"
            )
        try:
            return handler(seq, ts, command, events)
        except Rejection as rejection:
            return Result(seq, "REJECTED", events, rejection.code, rejection.message)

    # ------------------------------------------------------------------ helpers

    def _account(self, user: int, asset: str) -> list[int]:
        try:
            return self.balances[user][asset]
        except KeyError:
            return self.balances.setdefault(user, {}).setdefault(asset, [0, 0])

    def _amount_text(self, atoms: int, asset: str) -> str:
        return f"{format_amount(atoms, self.assets[asset].decimals)} {asset}"

    def _notional_too_small(self, market: MarketState, what: str, atoms: int) -> Rejection:
        return Rejection(
            "NOTIONAL_TOO_SMALL",
            f"{what} {self._amount_text(atoms, market.quote)} is below min notional "
            f"{self._amount_text(market.min_notional, market.quote)}",
        )

    def _market(self, symbol: str) -> MarketState:
        market = self.markets.get(symbol)
        if market is None:
            raise Rejection("UNKNOWN_MARKET", f"market {symbol!r} does not exist")
        return market

    def _trading_status(self, market: MarketState) -> str:
        """The market's status after the global kill switch is applied."""
        if self.kill_switch == "HALT" or market.status == "HALTED":
            return "HALTED"
        if self.kill_switch == "CANCEL_ONLY" or market.status == "CANCEL_ONLY":
            return "CANCEL_ONLY"
        return "TRADING"

    def _require_can_trade(self, market: MarketState, user: int) -> None:
        status = self._trading_status(market)
        if status == "HALTED":
            raise Rejection("MARKET_HALTED", f"market {market.symbol} is halted")
        if status == "CANCEL_ONLY":
            raise Rejection("MARKET_CANCEL_ONLY", f"market {market.symbol} accepts only cancels")
        if user in self.frozen:
            raise Rejection("USER_FROZEN", f"user {user} is frozen")

    def _fee_rates(self, user: int, market: MarketState) -> tuple[int, int]:
        """(maker, taker) fee rates in ppm: the user's tier, else the market's."""
        tier = self.user_tiers.get(user)
        if tier:
            return self.fee_tiers[tier]
        return market.maker_fee, market.taker_fee

    def _order_for(self, user: int, order_id: int, client_order_id: str) -> Order:
        if order_id:
            order = self.orders.get(order_id)
        elif client_order_id:
            found = self.client_ids.get((user, client_order_id))
            order = self.orders.get(found) if found else None
        else:
            raise Rejection("INVALID_ORDER", "give order_id or client_order_id")
        # Another user's order is reported exactly like a missing one.
        if order is None or order.user != user:
            raise Rejection("UNKNOWN_ORDER", "no such open order")
        return order

    def _reserve_asset(self, market: MarketState, side: str) -> str:
        return market.quote if side == "BUY" else market.base

    def _required_reserve(self, market: MarketState, order: Order, lots: int) -> int:
        if order.side == "BUY":
            return order.price * lots * market.notional_unit
        return lots * market.lot_atoms

    def _release(
        self, market: MarketState, order: Order, amount: int, events: list[e.Event]
    ) -> None:
        """Move ``amount`` of the order's reservation back to available."""
        if amount <= 0:
            return
        asset = market.quote if order.side == "BUY" else market.base
        account = self.balances[order.user][asset]  # exists: it holds the reservation
        account[0] += amount
        account[1] -= amount
        order.reserved -= amount
        events.append(
            Transfer(
                asset, amount, LOCKED, order.user, AVAILABLE, order.user, RELEASE, order.order_id
            )
        )

    def _close(self, order: Order, status: OrderStatus, reason: str, events: list[e.Event]) -> None:
        """Give ``order`` a final status: it leaves the open orders, its client id frees up."""
        order.status = status
        del self.orders[order.order_id]
        if order.client_order_id:
            self.client_ids.pop((order.user, order.client_order_id), None)
        events.append(
            OrderUpdated(
                order.order_id,
                order.user,
                order.market,
                status,
                order.filled,
                order.quantity,
                reason,
            )
        )

    def _finish_removed(
        self,
        market: MarketState,
        order: Order,
        status: OrderStatus,
        reason: str,
        events: list[e.Event],
    ) -> None:
        """Close an order already out of the book and return all it still reserves."""
        self._release(market, order, order.reserved, events)
        self._close(order, status, reason, events)

    def _unplace(self, market: MarketState, order: Order) -> None:
        """Take an open order out of the book or out of the untriggered stops."""
        if order.in_book:
            self._side(market, order.side).remove(order)
        elif order.status == "UNTRIGGERED":
            self._remove_stop(market, order)

    def _side(self, market: MarketState, side: str) -> BookSide:
        return market.bids if side == "BUY" else market.asks

    # ------------------------------------------------------------------ placing orders

    def _place(self, seq: int, ts: int, cmd: c.PlaceOrder, events: list[e.Event]) -> Result:
        market = self.markets.get(cmd.market)
        if market is None:
            raise Rejection("UNKNOWN_MARKET", f"market {cmd.market!r} does not exist")
        user = cmd.user
        if market.status != "TRADING" or self.kill_switch != "OFF" or user in self.frozen:
            self._require_can_trade(market, user)
        order = self._validated_order(market, ts, cmd)
        buy = order.side == "BUY"
        if not buy:
            asset = market.base
            reserve = order.quantity * market.lot_atoms
        elif order.type in LIMIT_PRICED_TYPES:
            asset = market.quote
            reserve = order.price * order.quantity * market.notional_unit
        else:
            asset = market.quote
            reserve = self._market_buy_reserve(market, order)
        # No account answers as an emptied one: snapshots keep no zero balances, and an
        # engine restored from one must give the same results as the one that wrote it.
        accounts = self.balances.get(user)
        account = accounts.get(asset) if accounts is not None else None
        available = account[0] if account is not None else 0
        if account is None or reserve > available or (available == 0 and order.type == "MARKET"):
            # A market buy into an empty book reserves nothing, but it needs some funds.
            needs = self._amount_text(reserve, asset) if reserve else f"some {asset}"
            raise Rejection(
                "INSUFFICIENT_BALANCE",
                f"order needs {needs}, {self._amount_text(available, asset)} available",
            )
        # Validated: from here on the command applies in full.
        order_id = order.order_id = self.next_order_id
        self.next_order_id = order_id + 1
        self.orders[order_id] = order
        if order.client_order_id:
            self.client_ids[(user, order.client_order_id)] = order_id
        if order.time_in_force == "GTD":
            heappush(self.gtd, (order.expire_at, order_id))
        events.append(
            OrderAccepted(
                order_id,
                user,
                order.market,
                order.side,
                order.type,
                order.quantity,
                order.price,
                order.time_in_force,
                order.client_order_id,
                order.quote_quantity,
                order.stop_price,
                order.expire_at,
                order.iceberg_quantity,
                order.stp,
                order.status,
                ts,
            )
        )
        if reserve:
            account[0] = available - reserve
            account[1] += reserve
            order.reserved = reserve
            events.append(
                Transfer(asset, reserve, AVAILABLE, user, LOCKED, user, RESERVE, order_id)
            )
        if order.status == "UNTRIGGERED":
            self._add_stop(market, order)
        elif order.type == "LIMIT" and order.time_in_force in ("GTC", "GTD"):
            # The common case, a limit order that does not cross: straight into the book.
            keys = (market.asks if buy else market.bids).keys
            if not keys or ((-keys[-1] > order.price) if buy else (keys[-1] < order.price)):
                iceberg = order.iceberg_quantity
                order.display = iceberg if iceberg else order.quantity
                (market.bids if buy else market.asks).add(order)
            else:
                self._execute(market, order, ts, events)
        else:
            self._execute(market, order, ts, events)
        return Result(seq, "ACCEPTED", events, "", "", order_id)

    def _validated_order(self, market: MarketState, ts: int, cmd: c.PlaceOrder) -> Order:
        """Check every field of a new order; return it, not yet placed anywhere."""
        # One C call instead of a dozen attribute lookups (field order of PlaceOrder); the
        # declarations keep the locals typed (native ints when compiled).
        user: int
        side: Side
        otype: OrderType
        qty: int
        price: int
        tif: TimeInForce
        cid: str
        quote_qty: int
        stop_price: int
        expire_at: int
        iceberg: int
        stp: StpMode | None
        (user, _market, side, otype, qty, price, tif, cid,
         quote_qty, stop_price, expire_at, iceberg, stp) = msgspec.structs.astuple(cmd)  # fmt: skip
        if side != "BUY" and side != "SELL":
            raise Rejection("INVALID_ORDER", "side must be BUY or SELL")
        if (
            otype == "LIMIT"
            and tif == "GTC"
            and not (stop_price or quote_qty or iceberg or expire_at)
        ):
            # The common case, a plain GTC limit order, needs only its price checked here.
            if not 0 < price <= MAX_PRICE_TICKS:
                raise Rejection("INVALID_PRICE", f"LIMIT needs a price of {_price_range(market)}")
        else:
            self._validate_order_features(market, ts, cmd)
        if not quote_qty and not market.min_lots <= qty <= market.max_lots:
            raise Rejection(
                "INVALID_QUANTITY",
                f"quantity must be within {_quantity_range(market)}, "
                f"got {_quantity_text(market, qty)}",
            )
        if price and price * qty * market.notional_unit < market.min_notional:
            raise self._notional_too_small(
                market, "order value", price * qty * market.notional_unit
            )
        if stp is None:
            stp = market.default_stp
        elif stp not in market.allowed_stp:
            raise Rejection("STP_MODE_NOT_ALLOWED", f"{stp} is not allowed on {market.symbol}")
        if cid:
            if len(cid) > 64:
                raise Rejection("INVALID_ORDER", "client_order_id is longer than 64 characters")
            if (user, cid) in self.client_ids:
                raise Rejection("DUPLICATE_CLIENT_ORDER_ID", f"an open order already uses {cid!r}")
        status: OrderStatus = "UNTRIGGERED" if otype in STOP_TYPES else "NEW"
        return Order(0, user, market.symbol, side, otype, qty, price, tif, cid, quote_qty,
                     stop_price, expire_at, iceberg, stp, status, ts)  # fmt: skip

    def _validate_order_features(self, market: MarketState, ts: int, cmd: c.PlaceOrder) -> None:
        """Checks for everything beyond a plain GTC limit: order types, time in force,
        stops, icebergs, GTD expiry and market buys by quote amount."""
        otype = cmd.type
        tif = cmd.time_in_force
        price = cmd.price
        is_market = otype in MARKET_TYPES
        if otype in LIMIT_PRICED_TYPES:
            if not 0 < price <= MAX_PRICE_TICKS:
                raise Rejection("INVALID_PRICE", f"{otype} needs a price of {_price_range(market)}")
        elif not is_market:
            raise Rejection("INVALID_ORDER", f"unknown order type {otype!r}")
        elif price:
            raise Rejection("INVALID_ORDER", f"{otype} orders take no price")
        if otype in STOP_TYPES:
            if not 0 < cmd.stop_price <= MAX_PRICE_TICKS:
                raise Rejection(
                    "INVALID_PRICE", f"{otype} needs a stop_price of {_price_range(market)}"
                )
            last = market.last_price
            if last and self._stop_holds(cmd.side, otype, cmd.stop_price, last):
                raise Rejection(
                    "ORDER_WOULD_TRIGGER_IMMEDIATELY",
                    f"last price {_price_text(market, last)} already meets stop_price "
                    f"{_price_text(market, cmd.stop_price)}",
                )
        elif cmd.stop_price:
            raise Rejection("INVALID_ORDER", f"{otype} orders take no stop_price")
        if cmd.quote_quantity:
            # As on Binance (quoteOrderQty), only a MARKET order spends a quote amount: a
            # stop by quote amount would wait with no quantity and no reservation rule.
            if otype != "MARKET" or cmd.side != "BUY":
                raise Rejection(
                    "INVALID_ORDER",
                    f"quote_quantity is only for MARKET buys; a {otype} {cmd.side} takes a "
                    "quantity",
                )
            if cmd.quantity:
                raise Rejection("INVALID_ORDER", "give quote_quantity or quantity, not both")
            if cmd.quote_quantity < market.min_notional:
                raise self._notional_too_small(market, "quote_quantity", cmd.quote_quantity)
            if tif == "FOK":
                raise Rejection("INVALID_ORDER", "a market buy by quote amount cannot be FOK")
        if is_market and tif == "GTD":
            raise Rejection("INVALID_ORDER", "market orders cannot be GTD")
        if tif not in ("GTC", "IOC", "FOK", "GTD"):
            raise Rejection("INVALID_ORDER", f"unknown time_in_force {tif!r}")
        if tif == "GTD":
            if cmd.expire_at <= ts:
                raise Rejection("INVALID_EXPIRY", "expire_at must be in the future for GTD")
        elif cmd.expire_at:
            raise Rejection("INVALID_EXPIRY", "expire_at is only for GTD orders")
        if cmd.iceberg_quantity:
            self._validate_iceberg(market, cmd)
        if otype == "LIMIT_MAKER":
            if tif != "GTC":
                raise Rejection("INVALID_ORDER", "LIMIT_MAKER orders are always GTC")
            if self._crosses(market, cmd.side, price):
                raise Rejection("ORDER_WOULD_TAKE", "a LIMIT_MAKER order would trade immediately")

    def _validate_iceberg(self, market: MarketState, cmd: c.PlaceOrder) -> None:
        """Binance's iceberg rules: a resting limit type; a visible slice that is a valid
        quantity by itself (LOT_SIZE: at least min_qty; being in lots, it is on the step),
        below the total, in at most MAX_ICEBERG_PARTS parts. The last slice is what
        remains and may be below min_qty, as on Binance."""
        if cmd.type not in LIMIT_PRICED_TYPES or cmd.time_in_force not in ("GTC", "GTD"):
            raise Rejection(
                "INVALID_ORDER", "iceberg orders must be resting limit orders (GTC or GTD)"
            )
        visible, total = cmd.iceberg_quantity, cmd.quantity
        if not 0 < visible < total:
            raise Rejection(
                "INVALID_QUANTITY",
                f"iceberg_quantity must be above 0 and below the quantity "
                f"{_quantity_text(market, total)}, got {_quantity_text(market, visible)}",
            )
        if visible < market.min_lots:
            raise Rejection(
                "INVALID_QUANTITY",
                f"iceberg_quantity {_quantity_text(market, visible)} is below min_qty "
                f"{_quantity_text(market, market.min_lots)}",
            )
        self._check_iceberg_parts(market, visible, total)

    @staticmethod
    def _check_iceberg_parts(market: MarketState, visible: int, total: int) -> None:
        if -(-total // visible) > MAX_ICEBERG_PARTS:
            smallest = -(-total // MAX_ICEBERG_PARTS)
            raise Rejection(
                "INVALID_QUANTITY",
                f"an iceberg has at most {MAX_ICEBERG_PARTS} parts: iceberg_quantity must be "
                f"at least {_quantity_text(market, smallest)} for a quantity of "
                f"{_quantity_text(market, total)}",
            )

    @staticmethod
    def _stop_holds(side: str, otype: str, stop_price: int, last: int) -> bool:
        if (side, otype) in _FIRES_ON_RISE:
            return last >= stop_price
        return last <= stop_price

    def _crosses(self, market: MarketState, side: str, price: int) -> bool:
        if side == "BUY":
            best = market.asks.best()
            return best != 0 and best <= price
        best = market.bids.best()
        return best != 0 and best >= price

    def _protection_limit(self, market: MarketState, side: str, reference: int) -> int:
        """The worst price a market order may trade at, from ``reference`` (ticks)."""
        bps = market.protection_bps
        if side == "BUY":
            return reference * (10_000 + bps) // 10_000
        return -(-reference * (10_000 - bps) // 10_000)

    def _market_buy_reserve(self, market: MarketState, order: Order) -> int:
        """What a market buy locks: its quote amount, or its quantity at the worst price
        the protection band allows (capped at what the user has; a stop reserves it in full
        at the band above its stop price, as the book at trigger time is unknown)."""
        if order.quote_quantity:
            return order.quote_quantity
        unit = market.notional_unit
        if order.type != "MARKET":
            return self._protection_limit(market, "BUY", order.stop_price) * order.quantity * unit
        best = market.asks.best()
        if not best:
            return 0  # nothing to buy: the order expires unfilled
        worst = self._protection_limit(market, "BUY", best) * order.quantity * unit
        return min(worst, self._account(order.user, market.quote)[0])

    # ------------------------------------------------------------------ matching

    def _execute(self, market: MarketState, order: Order, ts: int, events: list[e.Event]) -> None:
        """Match a live order as taker, then rest, expire or finish it; fire stops."""
        tif = order.time_in_force
        if order.type in MARKET_TYPES:
            opposite = market.asks if order.side == "BUY" else market.bids
            best = opposite.best()
            order.price = self._protection_limit(market, order.side, best) if best else 0
            if order.quote_quantity:
                order.quantity = _QUOTE_BUY_SENTINEL
            rests = False
        else:
            rests = tif == "GTC" or tif == "GTD"
        if tif == "FOK" and not self._can_fill_fully(market, order):
            self._finish_removed(market, order, "EXPIRED", "FOK_NOT_FILLABLE", events)
            return
        before = market.last_price
        stopped = self._match(market, order, ts, events)
        if order.quote_quantity:
            order.quantity = order.filled  # the placeholder quantity never leaves matching
        remaining = order.quantity - order.filled
        if rests and remaining and not stopped:
            self._rest(market, order, remaining, events)
        elif stopped == "STP":
            self._finish_removed(market, order, "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED", events)
        elif order.quote_quantity:
            # Spent down to less than one more lot: FILLED; stopped by the book or the band
            # with money left for more: EXPIRED.
            spent = stopped == "FUNDS_EXHAUSTED" or (
                order.reserved < market.last_price * market.notional_unit
            )
            if order.filled and spent:
                self._finish_removed(market, order, "FILLED", "", events)
            else:
                self._finish_removed(
                    market, order, "EXPIRED", stopped or "PROTECTION_LIMIT", events
                )
        elif remaining == 0:
            self._finish_removed(market, order, "FILLED", "", events)
        else:
            self._finish_removed(market, order, "EXPIRED", stopped or "IOC_REMAINDER", events)
        if market.last_price != before:
            self._trigger_stops(market, ts, events)

    def _rest(
        self, market: MarketState, order: Order, remaining: int, events: list[e.Event]
    ) -> None:
        """Put the unfilled part of a limit order in the book, keeping only its reservation."""
        excess = order.reserved - self._required_reserve(market, order, remaining)
        if excess:
            self._release(market, order, excess, events)
        order.display = (
            min(order.iceberg_quantity, remaining) if order.iceberg_quantity else remaining
        )
        (market.bids if order.side == "BUY" else market.asks).add(order)
        if order.filled and order.status != "PARTIALLY_FILLED":
            order.status = "PARTIALLY_FILLED"
            events.append(
                OrderUpdated(
                    order.order_id,
                    order.user,
                    order.market,
                    "PARTIALLY_FILLED",
                    order.filled,
                    order.quantity,
                    "",
                )
            )

    def _can_fill_fully(self, market: MarketState, order: Order) -> bool:
        """FOK dry run: walk the book as matching would, changing nothing. A market buy
        must also afford every lot from its reservation."""
        need = order.quantity - order.filled
        buy = order.side == "BUY"
        budget = order.reserved if buy and order.type in MARKET_TYPES else -1
        side = market.asks if buy else market.bids
        for price in side.prices_best_first():
            if (price > order.price) if buy else (price < order.price):
                return False
            for maker in side.levels[price].orders:
                if not maker.in_book:
                    continue
                if maker.user == order.user and order.stp != "NONE":
                    if order.stp == "EXPIRE_MAKER":
                        continue
                    return False
                take = min(need, maker.quantity - maker.filled)
                if budget >= 0:
                    budget -= take * price * market.notional_unit
                    if budget < 0:
                        return False
                need -= take
                if need == 0:
                    return True
        return False

    def _match(self, market: MarketState, taker: Order, ts: int, events: list[e.Event]) -> str:
        """Fill ``taker`` against the opposite side. Returns why matching stopped early:
        "STP" if self-trade prevention expired the taker, "FUNDS_EXHAUSTED" if a market buy
        ran out of reserved quote, "NO_LIQUIDITY" if a market order met an empty book, else
        "" (filled, or the book stopped crossing its limit price)."""
        limit = taker.price
        if limit == 0:
            return "NO_LIQUIDITY"
        buy = taker.side == "BUY"
        side = market.asks if buy else market.bids
        keys = side.keys
        if not keys or ((-keys[-1] > limit) if buy else (keys[-1] < limit)):
            return ""  # nothing crosses: the common case for a new limit order
        levels = side.levels
        unit = market.notional_unit
        lot = market.lot_atoms
        base = market.base
        quote = market.quote
        user = taker.user
        stp = taker.stp
        capped = buy and taker.type in MARKET_TYPES
        taker_rate = self._fee_rates(user, market)[1]
        market_maker_rate = market.maker_fee
        user_tiers = self.user_tiers
        fee_tiers = self.fee_tiers
        balances = self.balances
        account = self._account
        fees = self.fees
        symbol = market.symbol
        taker_side = taker.side
        taker_id = taker.order_id
        # The taker pays in one asset and receives the other; its two accounts are the
        # same for every fill (its paying account holds the reservation, so it exists).
        pay_asset, get_asset = (quote, base) if buy else (base, quote)
        taker_pays = balances[user][pay_asset]
        taker_gets = account(user, get_asset)
        taker_fees = 0
        append = events.append
        remaining = taker.quantity - taker.filled
        last = 0
        stopped = ""
        while remaining and keys:
            key = keys[-1]
            price = -key if buy else key
            if (price > limit) if buy else (price < limit):
                break
            level = levels[price]
            queue = level.orders
            while remaining and queue:
                maker = queue[0]
                if not maker.in_book:
                    queue.popleft()
                    continue
                if maker.user == user and stp != "NONE":
                    overlap = remaining
                    if capped:  # a market buy overlaps only as far as its money reaches
                        affordable = taker.reserved // (price * unit)
                        if affordable == 0:
                            stopped = "FUNDS_EXHAUSTED"
                            break
                        overlap = min(overlap, affordable)
                    outcome = self._prevent_self_trade(
                        market, side, level, taker, maker, overlap, events
                    )
                    remaining = taker.quantity - taker.filled
                    if outcome:
                        stopped = "STP"
                        break
                    continue
                fill = remaining if remaining < maker.display else maker.display
                notional = price * unit
                if capped:
                    affordable = taker.reserved // notional
                    if affordable < fill:
                        fill = affordable
                        if fill == 0:
                            stopped = "FUNDS_EXHAUSTED"
                            break
                notional *= fill
                qty_atoms = fill * lot
                trade_id = self.next_trade_id
                self.next_trade_id = trade_id + 1
                tier = user_tiers.get(maker.user)
                maker_rate = fee_tiers[tier][0] if tier else market_maker_rate
                if buy:
                    taker_paid, taker_got = notional, qty_atoms
                else:
                    taker_paid, taker_got = qty_atoms, notional
                # Fees are charged on what each side receives, rounded up to the atom.
                taker_fee = -(-taker_got * taker_rate // FEE_RATE_DENOMINATOR)
                maker_fee = -(-taker_paid * maker_rate // FEE_RATE_DENOMINATOR)
                taker.reserved -= taker_paid
                maker.reserved -= taker_got
                taker_pays[1] -= taker_paid
                taker_gets[0] += taker_got - taker_fee
                maker_user = maker.user
                # The maker's paying account exists: it holds the reservation being spent.
                balances[maker_user][get_asset][1] -= taker_got
                account(maker_user, pay_asset)[0] += taker_paid - maker_fee
                taker_fees += taker_fee
                if maker_fee:
                    fees[pay_asset] = fees.get(pay_asset, 0) + maker_fee
                append(
                    Trade(
                        trade_id,
                        symbol,
                        base,
                        quote,
                        price,
                        fill,
                        qty_atoms,
                        notional,
                        taker_side,
                        maker.order_id,
                        taker_id,
                        maker_user,
                        user,
                        maker_fee,
                        taker_fee,
                        ts,
                    )
                )
                taker.filled += fill
                maker.filled += fill
                remaining -= fill
                last = price
                maker.display -= fill
                level.qty -= fill
                if maker.display == 0:
                    queue.popleft()
                    left = maker.quantity - maker.filled
                    if left:  # iceberg: the next slice joins the back of the level
                        maker.display = (
                            left if left < maker.iceberg_quantity else maker.iceberg_quantity
                        )
                        level.qty += maker.display
                        maker.queued = side.next_queued()
                        queue.append(maker)
                    else:
                        maker.in_book = False
                        level.live -= 1
                        self._close(maker, "FILLED", "", events)
                        continue
                if maker.status == "NEW":
                    maker.status = "PARTIALLY_FILLED"
                    append(
                        OrderUpdated(
                            maker.order_id,
                            maker.user,
                            maker.market,
                            "PARTIALLY_FILLED",
                            maker.filled,
                            maker.quantity,
                            "",
                        )
                    )
            if level.live == 0:
                side.drop_level(price)
            if stopped:
                break
        if taker_fees:
            fees[get_asset] = fees.get(get_asset, 0) + taker_fees
        if last:
            market.last_price = last
        return stopped

    def _prevent_self_trade(
        self,
        market: MarketState,
        side: BookSide,
        level: Any,
        taker: Order,
        maker: Order,
        remaining: int,
        events: list[e.Event],
    ) -> bool:
        """Apply the taker's STP mode to a maker of the same user; True if the taker expires."""
        mode = taker.stp
        if mode == "DECREMENT":
            cut = remaining if remaining < maker.display else maker.display
            maker.quantity -= cut
            maker.display -= cut
            level.qty -= cut
            self._release(market, maker, self._required_reserve(market, maker, cut), events)
            if taker.quote_quantity:
                # A buy by quote amount has no lot quantity to cut: its amount shrinks by
                # what the cut lots cost, and it expires once it cannot buy another lot.
                lot_cost = maker.price * market.notional_unit
                self._release(market, taker, cut * lot_cost, events)
                expired = taker.reserved < lot_cost
            else:
                taker.quantity -= cut
                expired = taker.quantity == taker.filled
            if maker.quantity == maker.filled:
                level.orders.popleft()
                maker.in_book = False
                level.live -= 1
                self._finish_removed(
                    market, maker, "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED", events
                )
                return expired
            # The maker stays, smaller: an event says so, or everything that follows the
            # events (the projection, private streams) would keep its old quantity.
            events.append(
                OrderUpdated(
                    maker.order_id,
                    maker.user,
                    maker.market,
                    maker.status,
                    maker.filled,
                    maker.quantity,
                    "SELF_TRADE_DECREMENTED",
                )
            )
            if maker.display == 0:
                level.orders.popleft()
                maker.display = min(maker.iceberg_quantity, maker.quantity - maker.filled)
                level.qty += maker.display
                maker.queued = side.next_queued()
                level.orders.append(maker)
            return expired
        if mode in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
            level.orders.popleft()
            maker.in_book = False
            level.qty -= maker.display
            level.live -= 1
            self._finish_removed(market, maker, "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED", events)
        return mode in ("EXPIRE_TAKER", "EXPIRE_BOTH")

    # ------------------------------------------------------------------ stops

    def _add_stop(self, market: MarketState, order: Order) -> None:
        if (order.side, order.type) in _FIRES_ON_RISE:
            heappush(market.stops_above, (order.stop_price, order.order_id))
        else:
            heappush(market.stops_below, (-order.stop_price, order.order_id))

    def _remove_stop(self, market: MarketState, order: Order) -> None:
        """Take an untriggered stop out of its heap (stops are few: O(n) is fine)."""
        heap = (
            market.stops_above if (order.side, order.type) in _FIRES_ON_RISE else market.stops_below
        )
        heap[:] = [entry for entry in heap if entry[1] != order.order_id]
        heapify(heap)

    def _trigger_stops(self, market: MarketState, ts: int, events: list[e.Event]) -> None:
        """Fire every stop whose condition holds against the last trade price.

        Order of firing: among all stops of this market whose condition holds, the one
        placed first (lowest order id) fires and matches completely; then the condition
        is evaluated again against the new last price, until no stop holds. A cascade of
        stops therefore runs inside the command that started it.
        """
        above = market.stops_above
        below = market.stops_below
        orders = self.orders
        while True:
            last = market.last_price
            if not ((above and above[0][0] <= last) or (below and -below[0][0] >= last)):
                return
            due = [oid for stop, oid in above if stop <= last]
            due += [oid for neg_stop, oid in below if -neg_stop >= last]
            order_id = min(due)
            self._remove_stop(market, orders[order_id])
            order = orders[order_id]
            order.ts = ts
            events.append(e.OrderTriggered(order_id, order.user, order.market, last))
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                order.type = "MARKET"
            else:
                order.type = "LIMIT"
            order.status = "NEW"
            self._execute(market, order, ts, events)

    # ------------------------------------------------------------------ expiry

    def _expire_due(self, ts: int, events: list[e.Event]) -> None:
        gtd = self.gtd
        while gtd and gtd[0][0] <= ts:
            _, order_id = heappop(gtd)
            order = self.orders.get(order_id)
            if order is None:
                continue
            market = self.markets[order.market]
            self._unplace(market, order)
            self._finish_removed(market, order, "EXPIRED", "GTD_EXPIRED", events)

    def _tick(self, seq: int, ts: int, cmd: c.Tick, events: list[e.Event]) -> Result:
        return Result(seq, "ACCEPTED", events)

    # ------------------------------------------------------------------ cancel / amend

    def _cancel(self, seq: int, ts: int, cmd: c.CancelOrder, events: list[e.Event]) -> Result:
        order = self._order_for(cmd.user, cmd.order_id, cmd.client_order_id)
        market = self.markets[order.market]
        if market.status == "HALTED" or self.kill_switch == "HALT":
            raise Rejection("MARKET_HALTED", f"market {order.market} is halted")
        self._cancel_order(market, order, "USER_CANCELED", events)
        return Result(seq, "ACCEPTED", events, "", "", order.order_id)

    def _cancel_order(
        self, market: MarketState, order: Order, reason: str, events: list[e.Event]
    ) -> None:
        if order.in_book:
            (market.bids if order.side == "BUY" else market.asks).remove(order)
        elif order.status == "UNTRIGGERED":
            self._remove_stop(market, order)
        self._finish_removed(market, order, "CANCELED", reason, events)

    def _cancel_all(self, seq: int, ts: int, cmd: c.CancelAll, events: list[e.Event]) -> Result:
        if cmd.market:
            market = self._market(cmd.market)
            if self._trading_status(market) == "HALTED":
                raise Rejection("MARKET_HALTED", f"market {cmd.market} is halted")
        self._cancel_user_orders(cmd.user, cmd.market, "USER_CANCELED", events)
        return Result(seq, "ACCEPTED", events)

    def _cancel_user_orders(
        self, user: int, only_market: str, reason: str, events: list[e.Event]
    ) -> None:
        """Cancel the user's open orders (oldest first), skipping halted markets."""
        mine = [
            o
            for o in self.orders.values()
            if o.user == user and (not only_market or o.market == only_market)
        ]
        for order in sorted(mine, key=lambda o: o.order_id):
            market = self.markets[order.market]
            if self._trading_status(market) != "HALTED":
                self._cancel_order(market, order, reason, events)

    def _amend(self, seq: int, ts: int, cmd: c.AmendOrder, events: list[e.Event]) -> Result:
        order = self._order_for(cmd.user, cmd.order_id, cmd.client_order_id)
        market = self.markets[order.market]
        self._require_can_trade(market, cmd.user)
        if not order.in_book:
            raise Rejection("ORDER_NOT_AMENDABLE", "only resting limit orders can be amended")
        price = cmd.price or order.price
        quantity = cmd.quantity or order.quantity
        if price == order.price and quantity == order.quantity:
            raise Rejection("INVALID_AMEND", "the amendment changes nothing")
        if not 0 < price <= MAX_PRICE_TICKS:
            raise Rejection("INVALID_PRICE", f"price must be within {_price_range(market)}")
        if quantity <= order.filled or not market.min_lots <= quantity <= market.max_lots:
            raise Rejection(
                "INVALID_QUANTITY",
                f"quantity must exceed the {_quantity_text(market, order.filled)} filled and "
                f"lie within {_quantity_range(market)}, got {_quantity_text(market, quantity)}",
            )
        if order.iceberg_quantity and quantity > order.quantity:
            self._check_iceberg_parts(market, order.iceberg_quantity, quantity)
        if price * quantity * market.notional_unit < market.min_notional:
            raise self._notional_too_small(
                market, "order value", price * quantity * market.notional_unit
            )
        remaining = quantity - order.filled
        side = self._side(market, order.side)
        if price == order.price and quantity < order.quantity:
            # Smaller at the same price: keeps its place in the queue.
            shown = min(order.display, remaining)
            side.levels[price].qty -= order.display - shown
            order.display = shown
            order.quantity = quantity
            self._release(
                market,
                order,
                order.reserved - self._required_reserve(market, order, remaining),
                events,
            )
            events.append(
                e.OrderAmended(order.order_id, order.user, order.market, price, quantity, True)
            )
            return Result(seq, "ACCEPTED", events, order_id=order.order_id)
        if order.type == "LIMIT_MAKER" and self._crosses(market, order.side, price):
            raise Rejection(
                "ORDER_WOULD_TAKE", "the amended LIMIT_MAKER order would trade immediately"
            )
        needed = (
            price * remaining * market.notional_unit
            if order.side == "BUY"
            else remaining * market.lot_atoms
        )
        asset = self._reserve_asset(market, order.side)
        account = self._account(order.user, asset)
        if needed - order.reserved > account[0]:
            raise Rejection(
                "INSUFFICIENT_BALANCE",
                f"amended order needs {self._amount_text(needed, asset)} locked, "
                f"{self._amount_text(needed - order.reserved, asset)} more than now; "
                f"{self._amount_text(account[0], asset)} available",
            )
        # Re-queue: the order leaves the book and comes back as if newly placed.
        side.remove(order)
        requeued = order.copy()  # the old object stays dead in its queue
        requeued.price = price
        requeued.quantity = quantity
        requeued.ts = ts
        requeued.in_book = False
        self.orders[order.order_id] = requeued
        extra = needed - requeued.reserved
        if extra > 0:
            account[0] -= extra
            account[1] += extra
            requeued.reserved = needed
            events.append(
                Transfer(
                    asset, extra, AVAILABLE, order.user, LOCKED, order.user, RESERVE, order.order_id
                )
            )
        elif extra < 0:
            self._release(market, requeued, -extra, events)
        events.append(
            e.OrderAmended(order.order_id, order.user, order.market, price, quantity, False)
        )
        self._execute(market, requeued, ts, events)
        return Result(seq, "ACCEPTED", events, order_id=order.order_id)

    # ------------------------------------------------------------------ money in and out

    def _asset(self, symbol: str) -> Asset:
        asset = self.assets.get(symbol)
        if asset is None:
            raise Rejection("UNKNOWN_ASSET", f"asset {symbol!r} does not exist")
        return asset

    def _deposit(self, seq: int, ts: int, cmd: c.CreditDeposit, events: list[e.Event]) -> Result:
        self._asset(cmd.asset)
        if cmd.amount <= 0:
            raise Rejection("INVALID_AMOUNT", "deposit amount must be positive")
        if not cmd.external_id:
            raise Rejection("INVALID_DEPOSIT", "a deposit needs its external_id")
        if cmd.external_id in self.deposit_ids:
            return Result(seq, "DUPLICATE", events, "DUPLICATE_DEPOSIT", "already credited")
        if cmd.amount - self.external_deposits.get(cmd.asset, 0) > MAX_SUPPLY:
            most = self._amount_text(MAX_SUPPLY, cmd.asset)
            raise Rejection("SUPPLY_LIMIT", f"total {cmd.asset} deposits would exceed {most}")
        self.deposit_ids.add(cmd.external_id)
        self._account(cmd.user, cmd.asset)[0] += cmd.amount
        self.external_deposits[cmd.asset] = self.external_deposits.get(cmd.asset, 0) - cmd.amount
        events.append(e.DepositCredited(cmd.user, cmd.asset, cmd.amount, cmd.external_id))
        events.append(
            Transfer(cmd.asset, cmd.amount, EXTERNAL_DEPOSITS, 0, AVAILABLE, cmd.user, DEPOSIT, 0)
        )
        return Result(seq, "ACCEPTED", events)

    def _hold_withdrawal(
        self, seq: int, ts: int, cmd: c.HoldWithdrawal, events: list[e.Event]
    ) -> Result:
        self._asset(cmd.asset)
        wid = cmd.withdrawal_id
        if not wid:
            raise Rejection("INVALID_WITHDRAWAL", "a withdrawal needs its withdrawal_id")
        if wid in self.withdrawals or wid in self.finished_withdrawals:
            raise Rejection("DUPLICATE_WITHDRAWAL", f"withdrawal {wid!r} exists already")
        if cmd.amount <= 0 or not 0 <= cmd.fee < cmd.amount:
            raise Rejection("INVALID_AMOUNT", "amount must be positive and above the fee")
        if cmd.user in self.frozen:
            raise Rejection("USER_FROZEN", f"user {cmd.user} is frozen")
        account = self._account(cmd.user, cmd.asset)
        if cmd.amount > account[0]:
            raise Rejection(
                "INSUFFICIENT_BALANCE",
                f"withdrawal needs {self._amount_text(cmd.amount, cmd.asset)}, "
                f"{self._amount_text(account[0], cmd.asset)} available",
            )
        account[0] -= cmd.amount
        account[1] += cmd.amount
        self.withdrawals[wid] = (cmd.user, cmd.asset, cmd.amount, cmd.fee)
        events.append(e.WithdrawalHeld(wid, cmd.user, cmd.asset, cmd.amount, cmd.fee))
        events.append(
            Transfer(cmd.asset, cmd.amount, AVAILABLE, cmd.user, LOCKED, cmd.user, RESERVE, 0)
        )
        return Result(seq, "ACCEPTED", events)

    def _held(self, withdrawal_id: str) -> tuple[int, str, int, int]:
        held = self.withdrawals.pop(withdrawal_id, None)
        if held is None:
            raise Rejection("UNKNOWN_WITHDRAWAL", f"no held withdrawal {withdrawal_id!r}")
        self.finished_withdrawals.add(withdrawal_id)
        return held

    def _settle_withdrawal(
        self, seq: int, ts: int, cmd: c.SettleWithdrawal, events: list[e.Event]
    ) -> Result:
        user, asset, amount, fee = self._held(cmd.withdrawal_id)
        self._account(user, asset)[1] -= amount
        sent = amount - fee
        self.external_withdrawals[asset] = self.external_withdrawals.get(asset, 0) + sent
        events.append(e.WithdrawalSettled(cmd.withdrawal_id, user, asset, amount, fee))
        events.append(Transfer(asset, sent, LOCKED, user, EXTERNAL_WITHDRAWALS, 0, WITHDRAWAL, 0))
        if fee:
            self.fees[asset] = self.fees.get(asset, 0) + fee
            events.append(Transfer(asset, fee, LOCKED, user, FEES, 0, FEE, 0))
        return Result(seq, "ACCEPTED", events)

    def _release_withdrawal(
        self, seq: int, ts: int, cmd: c.ReleaseWithdrawal, events: list[e.Event]
    ) -> Result:
        user, asset, amount, _fee = self._held(cmd.withdrawal_id)
        account = self._account(user, asset)
        account[1] -= amount
        account[0] += amount
        events.append(e.WithdrawalReleased(cmd.withdrawal_id, user, asset, amount))
        events.append(Transfer(asset, amount, LOCKED, user, AVAILABLE, user, RELEASE, 0))
        return Result(seq, "ACCEPTED", events)

    # ------------------------------------------------------------------ administration

    def _upsert_asset(self, seq: int, ts: int, cmd: c.UpsertAsset, events: list[e.Event]) -> Result:
        if not cmd.symbol or not cmd.symbol.isalnum() or len(cmd.symbol) > 16:
            raise Rejection("INVALID_ASSET", "asset symbol must be 1-16 letters or digits")
        if not 0 <= cmd.decimals <= MAX_ASSET_DECIMALS:
            raise Rejection("INVALID_ASSET", f"decimals must be within 0..{MAX_ASSET_DECIMALS}")
        known = self.assets.get(cmd.symbol)
        if known is not None and known.decimals != cmd.decimals:
            raise Rejection("ASSET_DECIMALS_IMMUTABLE", "ledger decimals of an asset never change")
        self.assets[cmd.symbol] = Asset(cmd.symbol, cmd.decimals)
        events.append(e.AssetUpserted(cmd.symbol, cmd.decimals))
        return Result(seq, "ACCEPTED", events)

    def _upsert_market(
        self, seq: int, ts: int, cmd: c.UpsertMarket, events: list[e.Event]
    ) -> Result:
        spec = cmd.spec
        if not spec.symbol or len(spec.symbol) > 32:
            raise Rejection("INVALID_MARKET", "market symbol must be 1-32 characters")
        if spec.base == spec.quote:
            raise Rejection("INVALID_MARKET", "base and quote must differ")
        base, quote = self._asset(spec.base), self._asset(spec.quote)
        if spec.status not in ("TRADING", "HALTED", "CANCEL_ONLY"):
            raise Rejection("INVALID_MARKET", f"unknown status {spec.status!r}")
        try:
            rules = MarketRules.derive(spec, base, quote)
        except MoneyError as error:
            raise Rejection("INVALID_MARKET", error.message) from error
        existing = self.markets.get(spec.symbol)
        if existing is None:
            self.markets[spec.symbol] = MarketState(spec, rules)
        else:
            old = existing.spec
            shape_changed = (
                old.base,
                old.quote,
                existing.rules.lot_atoms,
                existing.rules.notional_unit,
                existing.rules.tick_size,
            ) != (spec.base, spec.quote, rules.lot_atoms, rules.notional_unit, rules.tick_size)
            if shape_changed and any(o.market == spec.symbol for o in self.orders.values()):
                raise Rejection(
                    "MARKET_HAS_ORDERS",
                    "base, quote, tick_size and step_size can change only with no open orders",
                )
            existing.configure(spec, rules)
        events.append(e.MarketUpserted(spec))
        return Result(seq, "ACCEPTED", events)

    def _set_market_status(
        self, seq: int, ts: int, cmd: c.SetMarketStatus, events: list[e.Event]
    ) -> Result:
        market = self._market(cmd.market)
        if cmd.status not in ("TRADING", "HALTED", "CANCEL_ONLY"):
            raise Rejection("INVALID_STATUS", f"unknown market status {cmd.status!r}")
        market.status = cmd.status
        market.spec = msgspec.structs.replace(market.spec, status=cmd.status)
        events.append(e.MarketStatusChanged(cmd.market, cmd.status))
        return Result(seq, "ACCEPTED", events)

    def _set_fee_tier(self, seq: int, ts: int, cmd: c.SetFeeTier, events: list[e.Event]) -> Result:
        if cmd.tier < 1:
            raise Rejection(
                "INVALID_FEE_TIER", "fee tiers are numbered from 1; tier 0 is the market default"
            )
        try:
            maker, taker = (
                parse_fee_rate(cmd.maker_fee, "maker_fee"),
                parse_fee_rate(cmd.taker_fee, "taker_fee"),
            )
        except MoneyError as error:
            raise Rejection("INVALID_FEE_TIER", error.message) from error
        self.fee_tiers[cmd.tier] = (maker, taker)
        events.append(e.FeeTierSet(cmd.tier, maker, taker))
        return Result(seq, "ACCEPTED", events)

    def _set_user_fee_tier(
        self, seq: int, ts: int, cmd: c.SetUserFeeTier, events: list[e.Event]
    ) -> Result:
        if cmd.tier and cmd.tier not in self.fee_tiers:
            raise Rejection("INVALID_FEE_TIER", f"fee tier {cmd.tier} is not defined")
        if cmd.tier:
            self.user_tiers[cmd.user] = cmd.tier
        else:
            self.user_tiers.pop(cmd.user, None)
        events.append(e.UserFeeTierSet(cmd.user, cmd.tier))
        return Result(seq, "ACCEPTED", events)

    def _freeze(self, seq: int, ts: int, cmd: c.FreezeUser, events: list[e.Event]) -> Result:
        self.frozen.add(cmd.user)
        events.append(e.UserFrozen(cmd.user, True))
        if cmd.cancel_orders:
            self._cancel_user_orders(cmd.user, "", "USER_FROZEN", events)
        return Result(seq, "ACCEPTED", events)

    def _unfreeze(self, seq: int, ts: int, cmd: c.UnfreezeUser, events: list[e.Event]) -> Result:
        self.frozen.discard(cmd.user)
        events.append(e.UserFrozen(cmd.user, False))
        return Result(seq, "ACCEPTED", events)

    def _set_kill_switch(
        self, seq: int, ts: int, cmd: c.SetKillSwitch, events: list[e.Event]
    ) -> Result:
        if cmd.mode not in ("OFF", "CANCEL_ONLY", "HALT"):
            raise Rejection("INVALID_STATUS", f"unknown kill switch mode {cmd.mode!r}")
        self.kill_switch = cmd.mode
        events.append(e.KillSwitchSet(cmd.mode))
        return Result(seq, "ACCEPTED", events)

    # ------------------------------------------------------------------ queries

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        """(available, locked) atoms of ``asset`` for ``user``."""
        account = self.balances.get(user, {}).get(asset)
        return (account[0], account[1]) if account else (0, 0)

    def open_orders(self, user: int | None = None) -> list[Order]:
        return sorted(
            (o for o in self.orders.values() if user is None or o.user == user),
            key=lambda o: o.order_id,
        )

    def depth(
        self, market: str, limit: int = 20
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as (price ticks, visible lots), best first."""
        state = self.markets[market]
        return state.bids.depth(limit), state.asks.depth(limit)

    def total_balances(self) -> dict[str, dict[str, int]]:
        """Per asset: users' available and locked, fees, external accounts, and their sum
        (which must be 0: the external deposit account holds minus all deposits)."""
        report: dict[str, dict[str, int]] = {}
        for asset in sorted(self.assets):
            available = locked = 0
            for accounts in self.balances.values():
                account = accounts.get(asset)
                if account:
                    available += account[0]
                    locked += account[1]
            row = {
                "users_available": available,
                "users_locked": locked,
                "fees": self.fees.get(asset, 0),
                "external_deposits": self.external_deposits.get(asset, 0),
                "external_withdrawals": self.external_withdrawals.get(asset, 0),
            }
            row["sum"] = sum(row.values())
            report[asset] = row
        return report

    def check_invariants(self) -> None:
        """Raise AssertionError if any ledger or book invariant is broken."""
        from mercato.core.invariants import check_engine

        check_engine(self)

    # ------------------------------------------------------------------ state

    def canonical_state(self) -> dict[str, Any]:
        """Everything that defines the engine, in a canonical order (no derived indexes)."""
        from mercato.core.snapshot import canonical_state

        return canonical_state(self)

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.canonical_state())

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        from mercato.core.snapshot import restore_engine

        return restore_engine(cls(), msgspec.msgpack.decode(data))

    def state_hash(self) -> str:
        """SHA-256 over the canonical state: equal hashes, equal engines."""
        return hashlib.sha256(self.snapshot()).hexdigest()
