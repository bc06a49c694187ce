"""Trading commands: place, cancel, cancel-all, amend, tick, and GTD expiry.

Each handler validates its command completely before it changes anything (a failed
check raises :class:`Rejection`), then applies it through matching and accounts.
"""

from __future__ import annotations

from heapq import heappop, heappush

import msgspec

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core.accounts import (
    account,
    market_buy_reserve,
    release,
    required_reserve,
    reserve_asset,
)
from mercato.core.book import MarketState, Order

# The hot path's classes are imported by name: compiled, a module attribute costs a
# generic attribute lookup on every use.
from mercato.core.events import OrderAccepted, Transfer
from mercato.core.matching import (
    add_stop,
    book_side,
    close,
    crosses,
    execute,
    finish_removed,
    lots_sold_for_quote,
    market_buy_cost,
    remove_stop,
    stop_holds,
    unplace,
)
from mercato.core.messages import (
    amount_text,
    notional_too_small,
    price_range,
    price_text,
    quantity_range,
    quantity_text,
)
from mercato.core.model import (
    AVAILABLE,
    LIMIT_PRICED_TYPES,
    LOCKED,
    MARKET_TYPES,
    MAX_ICEBERG_PARTS,
    MAX_PRICE_TICKS,
    RESERVE,
    STOP_TYPES,
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)
from mercato.core.results import Rejection, Result
from mercato.core.state import EngineState, known_market, trading_status


def require_can_trade(state: EngineState, market: MarketState, user: int) -> None:
    """Reject unless the market trades (kill switch applied) and the user is not frozen."""
    status = trading_status(state, market)
    if status == "HALTED":
        raise Rejection("MARKET_HALTED", f"market {market.symbol} is halted")
    if status == "CANCEL_ONLY":
        raise Rejection("MARKET_CANCEL_ONLY", f"market {market.symbol} accepts only cancels")
    if user in state.frozen:
        raise Rejection("USER_FROZEN", f"user {user} is frozen")


def order_for(state: EngineState, user: int, order_id: int, client_order_id: str) -> Order:
    """The user's open order by order id, else by client order id."""
    if order_id:
        order = state.orders.get(order_id)
    elif client_order_id:
        found = state.client_ids.get((user, client_order_id))
        order = state.orders.get(found) if found else None
    else:
        raise Rejection("INVALID_ORDER", "give order_id or client_order_id")
    # Another user's order is reported exactly like a missing one.
    if order is None or order.user != user:
        raise Rejection("UNKNOWN_ORDER", "no such open order")
    return order


def place(
    state: EngineState, seq: int, ts: int, cmd: c.PlaceOrder, events: list[e.Event]
) -> Result:
    """Validate a new order and its reservation, lock it, then book, rest or match it."""
    market = state.markets.get(cmd.market)
    if market is None:
        raise Rejection("UNKNOWN_MARKET", f"market {cmd.market!r} does not exist")
    user = cmd.user
    if market.status != "TRADING" or state.kill_switch != "OFF" or user in state.frozen:
        require_can_trade(state, market, user)
    order = validated_order(state, market, ts, cmd)
    buy = order.side == "BUY"
    if not buy:
        asset = market.base
        if order.quote_quantity:
            reserve = lots_sold_for_quote(market, order) * market.lot_atoms
        else:
            reserve = order.quantity * market.lot_atoms
        cost = reserve
    elif order.type in LIMIT_PRICED_TYPES:
        asset = market.quote
        cost = reserve = order.price * order.quantity * market.notional_unit
    else:
        asset = market.quote
        reserve = market_buy_reserve(state, market, order)
        cost = reserve
        if order.type == "MARKET" and not order.quote_quantity:
            # As on Binance, a MARKET buy must afford its whole fill against the book
            # now (it used to fill what its money reached and expire FUNDS_EXHAUSTED).
            cost = market_buy_cost(market, order)
    # No account answers as an emptied one: snapshots keep no zero balances, and an
    # engine restored from one must give the same results as the one that wrote it.
    accounts = state.balances.get(user)
    funds = accounts.get(asset) if accounts is not None else None
    available = funds[0] if funds is not None else 0
    if funds is None or cost > available or (available == 0 and order.type == "MARKET"):
        # A market order into an empty book reserves nothing, but it needs some funds.
        needs = amount_text(state, cost, asset) if cost else f"some {asset}"
        raise Rejection(
            "INSUFFICIENT_BALANCE",
            f"order needs {needs}, {amount_text(state, available, asset)} available",
        )
    # Validated: from here on the command applies in full.
    order_id = order.order_id = state.next_order_id
    state.next_order_id = order_id + 1
    state.orders[order_id] = order
    if order.client_order_id:
        state.client_ids[(user, order.client_order_id)] = order_id
    if order.time_in_force == "GTD":
        heappush(state.gtd, (order.expire_at, order_id))
    events.append(
        OrderAccepted(order_id, user, order.market, order.side, order.type, order.quantity,
                      order.price, order.time_in_force, order.client_order_id,
                      order.quote_quantity, order.stop_price, order.expire_at,
                      order.iceberg_quantity, order.stp, order.status, ts)
    )  # fmt: skip
    if reserve:
        funds[0] = available - reserve
        funds[1] += reserve
        order.reserved = reserve
        events.append(Transfer(asset, reserve, AVAILABLE, user, LOCKED, user, RESERVE, order_id))
    if order.status == "UNTRIGGERED":
        add_stop(market, order)
    elif order.type == "LIMIT" and order.time_in_force in ("GTC", "GTD"):
        # The common case, a limit order that does not cross: straight into the book.
        keys = (market.asks if buy else market.bids).keys
        if not keys or ((-keys[-1] > order.price) if buy else (keys[-1] < order.price)):
            iceberg = order.iceberg_quantity
            order.display = iceberg if iceberg else order.quantity
            (market.bids if buy else market.asks).add(order)
        else:
            execute(state, market, order, ts, events)
    else:
        execute(state, market, order, ts, events)
    return Result(seq, "ACCEPTED", events, "", "", order_id)


def validated_order(state: EngineState, market: MarketState, ts: int, cmd: c.PlaceOrder) -> Order:
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
    if otype == "LIMIT" and tif == "GTC" and not (stop_price or quote_qty or iceberg or expire_at):
        # The common case, a plain GTC limit order, needs only its price checked here.
        if not 0 < price <= MAX_PRICE_TICKS:
            raise Rejection("INVALID_PRICE", f"LIMIT needs a price of {price_range(market)}")
    else:
        validate_order_features(state, market, ts, cmd)
    if not quote_qty and not market.min_lots <= qty <= market.max_lots:
        raise Rejection(
            "INVALID_QUANTITY",
            f"quantity must be within {quantity_range(market)}, got {quantity_text(market, qty)}",
        )
    if price and price * qty * market.notional_unit < market.min_notional:
        raise notional_too_small(state, market, "order value", price * qty * market.notional_unit)
    if stp is None:
        stp = market.default_stp
    elif stp not in market.allowed_stp:
        raise Rejection("STP_MODE_NOT_ALLOWED", f"{stp} is not allowed on {market.symbol}")
    if cid:
        if len(cid) > 64:
            raise Rejection("INVALID_ORDER", "client_order_id is longer than 64 characters")
        if (user, cid) in state.client_ids:
            raise Rejection("DUPLICATE_CLIENT_ORDER_ID", f"an open order already uses {cid!r}")
    status: OrderStatus = "UNTRIGGERED" if otype in STOP_TYPES else "NEW"
    return Order(0, user, market.symbol, side, otype, qty, price, tif, cid, quote_qty,
                 stop_price, expire_at, iceberg, stp, status, ts)  # fmt: skip


def check_iceberg_parts(market: MarketState, visible: int, total: int) -> None:
    if -(-total // visible) > MAX_ICEBERG_PARTS:
        smallest = -(-total // MAX_ICEBERG_PARTS)
        raise Rejection(
            "INVALID_QUANTITY",
            f"an iceberg has at most {MAX_ICEBERG_PARTS} parts: iceberg_quantity must be "
            f"at least {quantity_text(market, smallest)} for a quantity of "
            f"{quantity_text(market, total)}",
        )


def validate_order_features(
    state: EngineState, market: MarketState, ts: int, cmd: c.PlaceOrder
) -> None:
    """Checks for everything beyond a plain GTC limit: order types, time in force,
    stops, icebergs, GTD expiry and market orders by quote amount."""
    otype = cmd.type
    tif = cmd.time_in_force
    price = cmd.price
    is_market = otype in MARKET_TYPES
    if otype in LIMIT_PRICED_TYPES:
        if not 0 < price <= MAX_PRICE_TICKS:
            raise Rejection("INVALID_PRICE", f"{otype} needs a price of {price_range(market)}")
    elif not is_market:
        raise Rejection("INVALID_ORDER", f"unknown order type {otype!r}")
    elif price:
        raise Rejection("INVALID_ORDER", f"{otype} orders take no price")
    if otype in STOP_TYPES:
        if not 0 < cmd.stop_price <= MAX_PRICE_TICKS:
            raise Rejection("INVALID_PRICE", f"{otype} needs a stop_price of {price_range(market)}")
        last = market.last_price
        if last and stop_holds(cmd.side, otype, cmd.stop_price, last):
            raise Rejection(
                "ORDER_WOULD_TRIGGER_IMMEDIATELY",
                f"last price {price_text(market, last)} already meets stop_price "
                f"{price_text(market, cmd.stop_price)}",
            )
    elif cmd.stop_price:
        raise Rejection("INVALID_ORDER", f"{otype} orders take no stop_price")
    if cmd.quote_quantity:
        validate_quote_amount(state, market, cmd)
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
        validate_iceberg(market, cmd)
    if otype == "LIMIT_MAKER":
        if tif != "GTC":
            raise Rejection("INVALID_ORDER", "LIMIT_MAKER orders are always GTC")
        if crosses(market, cmd.side, price):
            raise Rejection("ORDER_WOULD_TAKE", "a LIMIT_MAKER order would trade immediately")


def validate_quote_amount(state: EngineState, market: MarketState, cmd: c.PlaceOrder) -> None:
    """An order by quote amount: as on Binance (quoteOrderQty), only a MARKET order,
    buy (spend it) or sell (receive it); a stop by quote amount would wait with no
    quantity and no reservation rule. Binance refuses one when the book has no order to
    trade with: NO_LIQUIDITY (an order by quantity is accepted there and expires)."""
    otype = cmd.type
    if otype != "MARKET":
        raise Rejection(
            "INVALID_ORDER",
            f"quote_quantity is only for MARKET orders; a {otype} {cmd.side} takes a quantity",
        )
    if cmd.quantity:
        raise Rejection("INVALID_ORDER", "give quote_quantity or quantity, not both")
    if cmd.quote_quantity < market.min_notional:
        raise notional_too_small(state, market, "quote_quantity", cmd.quote_quantity)
    if cmd.time_in_force == "FOK":
        raise Rejection("INVALID_ORDER", "a market order by quote amount cannot be FOK")
    if not (market.asks if cmd.side == "BUY" else market.bids).keys:
        other = "sell" if cmd.side == "BUY" else "buy"
        raise Rejection(
            "NO_LIQUIDITY",
            f"no {other} orders in {market.symbol} to trade a quote amount against",
        )


def validate_iceberg(market: MarketState, cmd: c.PlaceOrder) -> None:
    """Binance's iceberg rules: a resting limit type; a visible slice that is a valid
    quantity by itself (LOT_SIZE: at least min_qty; being in lots, it is on the step),
    below the total, in at most MAX_ICEBERG_PARTS parts. The last slice is what
    remains and may be below min_qty, as on Binance."""
    if cmd.type not in LIMIT_PRICED_TYPES or cmd.time_in_force not in ("GTC", "GTD"):
        raise Rejection("INVALID_ORDER", "iceberg orders must be resting limit orders (GTC or GTD)")
    visible, total = cmd.iceberg_quantity, cmd.quantity
    if not 0 < visible < total:
        raise Rejection(
            "INVALID_QUANTITY",
            f"iceberg_quantity must be above 0 and below the quantity "
            f"{quantity_text(market, total)}, got {quantity_text(market, visible)}",
        )
    if visible < market.min_lots:
        raise Rejection(
            "INVALID_QUANTITY",
            f"iceberg_quantity {quantity_text(market, visible)} is below min_qty "
            f"{quantity_text(market, market.min_lots)}",
        )
    check_iceberg_parts(market, visible, total)


def expire_due(state: EngineState, ts: int, events: list[e.Event]) -> None:
    """Expire every GTD order whose time has come by ``ts`` (the engine runs this first)."""
    gtd = state.gtd
    while gtd and gtd[0][0] <= ts:
        _, order_id = heappop(gtd)
        order = state.orders.get(order_id)
        if order is None:
            continue
        market = state.markets[order.market]
        unplace(market, order)
        finish_removed(state, market, order, "EXPIRED", "GTD_EXPIRED", events)


def tick(state: EngineState, seq: int, ts: int, cmd: c.Tick, events: list[e.Event]) -> Result:
    """Only the passing of time: GTD expiry has run before any handler."""
    return Result(seq, "ACCEPTED", events)


# ------------------------------------------------------------------ cancel / amend


def cancel(
    state: EngineState, seq: int, ts: int, cmd: c.CancelOrder, events: list[e.Event]
) -> Result:
    order = order_for(state, cmd.user, cmd.order_id, cmd.client_order_id)
    market = state.markets[order.market]
    if market.status == "HALTED" or state.kill_switch == "HALT":
        raise Rejection("MARKET_HALTED", f"market {order.market} is halted")
    cancel_order(state, market, order, "USER_CANCELED", events)
    return Result(seq, "ACCEPTED", events, "", "", order.order_id)


def cancel_order(
    state: EngineState, market: MarketState, order: Order, reason: str, events: list[e.Event]
) -> None:
    if order.in_book:
        (market.bids if order.side == "BUY" else market.asks).remove(order)
    elif order.status == "UNTRIGGERED":
        remove_stop(market, order)
    # finish_removed, spelled out: cancels are a third of all commands.
    release(state, market, order, order.reserved, events)
    close(state, order, "CANCELED", reason, events)


def cancel_all(
    state: EngineState, seq: int, ts: int, cmd: c.CancelAll, events: list[e.Event]
) -> Result:
    if cmd.market:
        market = known_market(state, cmd.market)
        if trading_status(state, market) == "HALTED":
            raise Rejection("MARKET_HALTED", f"market {cmd.market} is halted")
    cancel_user_orders(state, cmd.user, cmd.market, "USER_CANCELED", events)
    return Result(seq, "ACCEPTED", events)


def cancel_user_orders(
    state: EngineState, user: int, only_market: str, reason: str, events: list[e.Event]
) -> None:
    """Cancel the user's open orders (oldest first), skipping halted markets."""
    mine = [
        o
        for o in state.orders.values()
        if o.user == user and (not only_market or o.market == only_market)
    ]
    for order in sorted(mine, key=lambda o: o.order_id):
        market = state.markets[order.market]
        if trading_status(state, market) != "HALTED":
            cancel_order(state, market, order, reason, events)


def amend(
    state: EngineState, seq: int, ts: int, cmd: c.AmendOrder, events: list[e.Event]
) -> Result:
    order = order_for(state, cmd.user, cmd.order_id, cmd.client_order_id)
    market = state.markets[order.market]
    price = cmd.price or order.price
    quantity = cmd.quantity or order.quantity
    keeps_priority = price == order.price and quantity < order.quantity
    if not keeps_priority or trading_status(state, market) != "CANCEL_ONLY":
        # As on Binance, a CANCEL_ONLY market still takes the amend that only reduces
        # an order in place: like a cancel, it only takes risk off the book.
        require_can_trade(state, market, cmd.user)
    elif cmd.user in state.frozen:
        raise Rejection("USER_FROZEN", f"user {cmd.user} is frozen")
    if not order.in_book:
        raise Rejection("ORDER_NOT_AMENDABLE", "only resting limit orders can be amended")
    if cmd.keep_priority:
        _check_keeps_priority(market, order, cmd)
    _check_amendment(state, market, order, price, quantity)
    if keeps_priority:
        _shrink_in_place(state, market, order, quantity, events)
    else:
        _requeue(state, market, order, price, quantity, ts, events)
    return Result(seq, "ACCEPTED", events, order_id=order.order_id)


def _check_keeps_priority(market: MarketState, order: Order, cmd: c.AmendOrder) -> None:
    """Binance's keep-priority amend only reduces the quantity: the larger quantity that
    Mercato's own amend takes (re-queued) is refused with a code of its own."""
    if cmd.price and cmd.price != order.price:
        raise Rejection("INVALID_AMEND", "an amend that keeps priority cannot change the price")
    if cmd.quantity > order.quantity:
        raise Rejection(
            "AMEND_QUANTITY_INCREASE",
            f"an amend that keeps priority only reduces the quantity: "
            f"{quantity_text(market, cmd.quantity)} is more than the order's "
            f"{quantity_text(market, order.quantity)}",
        )


def _check_amendment(
    state: EngineState, market: MarketState, order: Order, price: int, quantity: int
) -> None:
    """The new price and quantity must be valid on their own and change something."""
    if price == order.price and quantity == order.quantity:
        raise Rejection("INVALID_AMEND", "the amendment changes nothing")
    if not 0 < price <= MAX_PRICE_TICKS:
        raise Rejection("INVALID_PRICE", f"price must be within {price_range(market)}")
    if quantity <= order.filled or not market.min_lots <= quantity <= market.max_lots:
        raise Rejection(
            "INVALID_QUANTITY",
            f"quantity must exceed the {quantity_text(market, order.filled)} filled and "
            f"lie within {quantity_range(market)}, got {quantity_text(market, quantity)}",
        )
    if order.iceberg_quantity and quantity > order.quantity:
        check_iceberg_parts(market, order.iceberg_quantity, quantity)
    if price * quantity * market.notional_unit < market.min_notional:
        raise notional_too_small(
            state, market, "order value", price * quantity * market.notional_unit
        )


def _shrink_in_place(
    state: EngineState, market: MarketState, order: Order, quantity: int, events: list[e.Event]
) -> None:
    """Smaller at the same price: the order keeps its place in the queue."""
    remaining = quantity - order.filled
    shown = min(order.display, remaining)
    book_side(market, order.side).levels[order.price].qty -= order.display - shown
    order.display = shown
    order.quantity = quantity
    release(
        state, market, order, order.reserved - required_reserve(market, order, remaining), events
    )
    events.append(
        e.OrderAmended(order.order_id, order.user, order.market, order.price, quantity, True)
    )


def _requeue(
    state: EngineState,
    market: MarketState,
    order: Order,
    price: int,
    quantity: int,
    ts: int,
    events: list[e.Event],
) -> None:
    """A new price or a larger quantity: the order leaves the book and comes back as if
    newly placed, locking more or releasing the excess first."""
    if order.type == "LIMIT_MAKER" and crosses(market, order.side, price):
        raise Rejection("ORDER_WOULD_TAKE", "the amended LIMIT_MAKER order would trade immediately")
    remaining = quantity - order.filled
    needed = (
        price * remaining * market.notional_unit
        if order.side == "BUY"
        else remaining * market.lot_atoms
    )
    asset = reserve_asset(market, order.side)
    funds = account(state, order.user, asset)
    if needed - order.reserved > funds[0]:
        raise Rejection(
            "INSUFFICIENT_BALANCE",
            f"amended order needs {amount_text(state, needed, asset)} locked, "
            f"{amount_text(state, needed - order.reserved, asset)} more than now; "
            f"{amount_text(state, funds[0], asset)} available",
        )
    book_side(market, order.side).remove(order)
    requeued = order.copy()  # the old object stays dead in its queue
    requeued.price = price
    requeued.quantity = quantity
    requeued.ts = ts
    requeued.in_book = False
    state.orders[order.order_id] = requeued
    extra = needed - requeued.reserved
    if extra > 0:
        funds[0] -= extra
        funds[1] += extra
        requeued.reserved = needed
        events.append(
            Transfer(
                asset, extra, AVAILABLE, order.user, LOCKED, order.user, RESERVE, order.order_id
            )
        )
    elif extra < 0:
        release(state, market, requeued, -extra, events)
    events.append(e.OrderAmended(order.order_id, order.user, order.market, price, quantity, False))
    execute(state, market, requeued, ts, events)
