"""Matching: a taker walks the opposite side of the book, then rests, expires or fills.

Also what decides a walk: self-trade prevention, iceberg slices, the FOK dry run, stop
orders (kept in two heaps per market, fired by the last trade price) and how an order
leaves the open orders. Every function takes the engine state explicitly.

The book walk is the engine's hot loop: :func:`match` resolves once what stays the same
for every fill of a taker and walks the price levels, :func:`_take_level` fills from one
level. The classes it uses are imported by name: compiled, a module attribute costs a
generic attribute lookup on every use.
"""

from __future__ import annotations

from heapq import heapify, heappush

from mercato.core import events as e
from mercato.core.accounts import account, protection_limit, release, required_reserve
from mercato.core.book import BookSide, Level, MarketState, Order
from mercato.core.events import OrderUpdated, Trade
from mercato.core.model import MARKET_TYPES, OrderStatus
from mercato.core.money import FEE_RATE_DENOMINATOR
from mercato.core.state import EngineState

# Stops that fire when the last price rises to the stop price; the others fire on a fall.
FIRES_ON_RISE = {
    ("BUY", "STOP_LOSS"),
    ("BUY", "STOP_LOSS_LIMIT"),
    ("SELL", "TAKE_PROFIT"),
    ("SELL", "TAKE_PROFIT_LIMIT"),
}
_QUOTE_SENTINEL = 1 << 62  # "as many lots as the quote amount buys (or sells for)"


# ------------------------------------------------------------------ leaving the open orders


def close(
    state: EngineState, order: Order, status: OrderStatus, reason: str, events: list[e.Event]
) -> None:
    """Give ``order`` a final status: it leaves the open orders, its client id frees up."""
    order.status = status
    del state.orders[order.order_id]
    if order.client_order_id:
        state.client_ids.pop((order.user, order.client_order_id), None)
    events.append(
        OrderUpdated(
            order.order_id, order.user, order.market, status, order.filled, order.quantity, reason
        )
    )


def finish_removed(
    state: EngineState,
    market: MarketState,
    order: Order,
    status: OrderStatus,
    reason: str,
    events: list[e.Event],
) -> None:
    """Close an order already out of the book and return all it still reserves."""
    release(state, market, order, order.reserved, events)
    close(state, order, status, reason, events)


def book_side(market: MarketState, side: str) -> BookSide:
    return market.bids if side == "BUY" else market.asks


def unplace(market: MarketState, order: Order) -> None:
    """Take an open order out of the book or out of the untriggered stops."""
    if order.in_book:
        book_side(market, order.side).remove(order)
    elif order.status == "UNTRIGGERED":
        remove_stop(market, order)


def crosses(market: MarketState, side: str, price: int) -> bool:
    """Would a limit order at ``price`` trade at once?"""
    if side == "BUY":
        best = market.asks.best()
        return best != 0 and best <= price
    best = market.bids.best()
    return best != 0 and best >= price


# ------------------------------------------------------------------ a taker's life


def execute(
    state: EngineState, market: MarketState, order: Order, ts: int, events: list[e.Event]
) -> None:
    """Match a live order as taker, then rest, expire or finish it; fire stops."""
    tif = order.time_in_force
    if order.type in MARKET_TYPES:
        opposite = market.asks if order.side == "BUY" else market.bids
        best = opposite.best()
        order.price = protection_limit(market, order.side, best) if best else 0
        if order.quote_quantity:
            order.quantity = _QUOTE_SENTINEL
        rests = False
    else:
        rests = tif == "GTC" or tif == "GTD"
    if tif == "FOK" and not can_fill_fully(market, order):
        finish_removed(state, market, order, "EXPIRED", "FOK_NOT_FILLABLE", events)
        return
    before = market.last_price
    stopped = match(state, market, order, ts, events)
    if order.quote_quantity:
        order.quantity = order.filled  # the placeholder quantity never leaves matching
    remaining = order.quantity - order.filled
    if rests and remaining and not stopped:
        rest(state, market, order, remaining, events)
    else:
        # finish_removed, spelled out: one call less for most takers.
        status, reason = _taker_outcome(market, order, remaining, stopped)
        release(state, market, order, order.reserved, events)
        close(state, order, status, reason, events)
    if market.last_price != before:
        trigger_stops(state, market, ts, events)


def _taker_outcome(
    market: MarketState, order: Order, remaining: int, stopped: str
) -> tuple[OrderStatus, str]:
    """How a taker that does not rest ends: (status, reason)."""
    if stopped == "STP":
        return "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED"
    if order.quote_quantity:
        # Spent (a buy) or received (a sell) down to less than one more lot: FILLED;
        # stopped by the book or the band with some amount left for more: EXPIRED.
        spent = stopped == "FUNDS_EXHAUSTED" or (
            order.side == "BUY" and order.reserved < market.last_price * market.notional_unit
        )
        if order.filled and spent:
            return "FILLED", ""
        return "EXPIRED", stopped or "PROTECTION_LIMIT"
    if remaining == 0:
        return "FILLED", ""
    return "EXPIRED", stopped or "IOC_REMAINDER"


def rest(
    state: EngineState, market: MarketState, order: Order, remaining: int, events: list[e.Event]
) -> None:
    """Put the unfilled part of a limit order in the book, keeping only its reservation."""
    excess = order.reserved - required_reserve(market, order, remaining)
    if excess:
        release(state, market, order, excess, events)
    order.display = min(order.iceberg_quantity, remaining) if order.iceberg_quantity else remaining
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


def can_fill_fully(market: MarketState, order: Order) -> bool:
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


# ------------------------------------------------------------------ market orders at entry


def _lots_for(market: MarketState, order: Order, price: int) -> int:
    """The lots at ``price`` that a market order may take, counted at entry: every live
    maker's whole remainder (iceberg slices refill at the same level), except the same
    user's makers when STP is on. Skipping those is never less than what matching takes:
    EXPIRE_MAKER removes them, the other modes stop the taker or cut it, so this bounds
    both the cost of a buy and the lots of a sell by quote amount from above."""
    user, stp = order.user, order.stp
    return sum(
        maker.quantity - maker.filled
        for maker in book_side(market, maker_side(order)).levels[price].orders
        if maker.in_book and (maker.user != user or stp == "NONE")
    )


def maker_side(order: Order) -> str:
    return "SELL" if order.side == "BUY" else "BUY"


def market_buy_cost(market: MarketState, order: Order) -> int:
    """What a MARKET buy by quantity pays (quote atoms) if it fills as the book stands,
    within the protection band, as far as the book reaches. The engine is single-threaded:
    the book matching meets is this one. Fees are not part of it: a buyer pays its fee in
    the base it receives."""
    best = market.asks.best()
    if not best:
        return 0
    limit = protection_limit(market, "BUY", best)
    need, cost = order.quantity, 0
    for key in reversed(market.asks.keys):  # best first, no copy of a deep book
        price = -key
        if price > limit or not need:
            break
        take = min(need, _lots_for(market, order, price))
        need -= take
        cost += take * price * market.notional_unit
    return cost


def lots_sold_for_quote(market: MarketState, order: Order) -> int:
    """How many lots a MARKET sell by quote amount sells as the book stands: level by
    level within the protection band, whole lots only, stopping at the first level where
    one more lot would bring more than what is left of the quote amount."""
    best = market.bids.best()
    if not best:
        return 0
    limit = protection_limit(market, "SELL", best)
    left, lots = order.quote_quantity, 0
    for price in reversed(market.bids.keys):  # best first, no copy of a deep book
        lot_value = price * market.notional_unit
        if price < limit or left < lot_value:
            break
        fits = left // lot_value
        take = min(fits, _lots_for(market, order, price))
        lots += take
        left -= take * lot_value
        if take == fits:
            break
    return lots


# ------------------------------------------------------------------ the book walk


def match(
    state: EngineState, market: MarketState, taker: Order, ts: int, events: list[e.Event]
) -> str:
    """Fill ``taker`` against the opposite side. Returns why matching stopped early:
    "STP" if self-trade prevention expired the taker, "FUNDS_EXHAUSTED" if a market buy
    ran out of reserved quote or a sell by quote amount received all of it that whole
    lots can reach, "NO_LIQUIDITY" if a market order met an empty book, else "" (filled,
    or the book stopped crossing its limit price).

    A sell by quote amount has no lot quantity: before each level its quantity is set to
    what the quote still to receive buys at that level's price (so it never receives
    more than its amount), and the walk ends at the first level where not one more whole
    lot fits, as on Binance."""
    limit = taker.price
    if limit == 0:
        return "NO_LIQUIDITY"
    buy = taker.side == "BUY"
    side = market.asks if buy else market.bids
    keys = side.keys
    if not keys or ((-keys[-1] > limit) if buy else (keys[-1] < limit)):
        return ""  # nothing crosses: the common case for a new limit order
    # What stays the same for every fill of this taker, resolved once. The taker pays in
    # one asset and receives the other; its paying account holds the reservation, so it
    # exists.
    pay_asset, get_asset = (market.quote, market.base) if buy else (market.base, market.quote)
    taker_pays = state.balances[taker.user][pay_asset]
    taker_gets = account(state, taker.user, get_asset)
    # The taker's fee tier, else the market's rate (makers' rates are looked up per fill).
    tier = state.user_tiers.get(taker.user)
    taker_rate = state.fee_tiers[tier][1] if tier else market.taker_fee
    levels = side.levels
    stopped = ""
    for_quote = not buy and taker.quote_quantity > 0  # a sell by quote amount
    to_receive = taker.quote_quantity  # (for one: the quote it may still receive)
    lot_value = lots_before = 0
    while taker.quantity - taker.filled and keys:
        key = keys[-1]
        price = -key if buy else key
        if (price > limit) if buy else (price < limit):
            break
        level = levels[price]
        if for_quote:
            lot_value = price * market.notional_unit
            if to_receive < lot_value:
                stopped = "FUNDS_EXHAUSTED"
                break
            taker.quantity = taker.filled + to_receive // lot_value
            lots_before = taker.quantity - taker.filled
        stopped = _take_level(state, market, side, level, price, taker, ts, events,
                              taker_rate, taker_pays, taker_gets, pay_asset, get_asset)  # fmt: skip
        if for_quote:
            # Fills and STP decrements both use up lots of this level's share.
            to_receive -= (lots_before - (taker.quantity - taker.filled)) * lot_value
            if not stopped and taker.quantity == taker.filled:
                stopped = "FUNDS_EXHAUSTED"  # what is left buys less than a lot here
        if level.live == 0:
            side.drop_level(price)
        if stopped:
            break
    return stopped


def _take_level(
    state: EngineState,
    market: MarketState,
    side: BookSide,
    level: Level,
    price: int,
    taker: Order,
    ts: int,
    events: list[e.Event],
    taker_rate: int,
    taker_pays: list[int],
    taker_gets: list[int],
    pay_asset: str,
    get_asset: str,
) -> str:
    """Fill the taker from one price level, oldest maker first; why it stopped, or "".

    Each fill moves both sides' money and emits one Trade (its ledger legs implied). It is
    booked inline: a function of its own would take sixteen arguments and add a call per
    fill to the engine's hottest path."""
    queue = level.orders
    user = taker.user
    self_trades = taker.stp != "NONE"
    buy = taker.side == "BUY"
    capped = buy and taker.type in MARKET_TYPES  # a market buy fills as far as its money
    unit_notional = price * market.notional_unit
    lot = market.lot_atoms
    balances = state.balances
    fees = state.fees
    user_tiers = state.user_tiers
    append = events.append
    remaining = taker.quantity - taker.filled
    taker_fees = 0
    stopped = ""
    while remaining and queue:
        maker = queue[0]
        if not maker.in_book:
            queue.popleft()
            continue
        if maker.user == user and self_trades:
            stopped = prevent_self_trade(
                state, market, side, level, taker, maker, remaining, capped, events
            )
            if stopped:
                break
            remaining = taker.quantity - taker.filled
            continue
        fill = remaining if remaining < maker.display else maker.display
        if capped:
            affordable = taker.reserved // unit_notional
            if affordable < fill:
                fill = affordable
                if fill == 0:
                    stopped = "FUNDS_EXHAUSTED"
                    break
        notional = unit_notional * fill
        qty_atoms = fill * lot
        trade_id = state.next_trade_id
        state.next_trade_id = trade_id + 1
        maker_user = maker.user
        tier = user_tiers.get(maker_user)
        maker_rate = state.fee_tiers[tier][0] if tier else market.maker_fee
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
        # The maker's accounts exist (they hold the reservation being spent); the one it
        # is paid into may not yet.
        maker_accounts = balances[maker_user]
        maker_accounts[get_asset][1] -= taker_got
        maker_gets = maker_accounts.get(pay_asset)
        if maker_gets is None:
            maker_gets = maker_accounts[pay_asset] = [0, 0]
        maker_gets[0] += taker_paid - maker_fee
        taker_fees += taker_fee
        if maker_fee:
            fees[pay_asset] = fees.get(pay_asset, 0) + maker_fee
        append(
            Trade(trade_id, market.symbol, market.base, market.quote, price, fill, qty_atoms,
                  notional, taker.side, maker.order_id, taker.order_id, maker_user, user,
                  maker_fee, taker_fee, ts)
        )  # fmt: skip
        taker.filled += fill
        maker.filled += fill
        remaining -= fill
        market.last_price = price
        maker.display -= fill
        level.qty -= fill
        if maker.display == 0:
            queue.popleft()
            if maker.quantity == maker.filled:
                maker.in_book = False
                level.live -= 1
                close(state, maker, "FILLED", "", events)
                continue
            _next_slice(side, level, maker)
        if maker.status == "NEW":
            maker.status = "PARTIALLY_FILLED"
            append(OrderUpdated(maker.order_id, maker_user, maker.market, "PARTIALLY_FILLED",
                                maker.filled, maker.quantity, ""))  # fmt: skip
    if taker_fees:
        fees[get_asset] = fees.get(get_asset, 0) + taker_fees
    return stopped


def _next_slice(side: BookSide, level: Level, maker: Order) -> None:
    """An iceberg's visible slice is used up: the next one joins the back of the level."""
    left = maker.quantity - maker.filled
    maker.display = left if left < maker.iceberg_quantity else maker.iceberg_quantity
    level.qty += maker.display
    maker.queued = side.next_queued()
    level.orders.append(maker)


def prevent_self_trade(
    state: EngineState,
    market: MarketState,
    side: BookSide,
    level: Level,
    taker: Order,
    maker: Order,
    remaining: int,
    capped: bool,
    events: list[e.Event],
) -> str:
    """Apply the taker's STP mode to a maker of the same user. Returns why the walk
    stops ("STP": the taker expires; "FUNDS_EXHAUSTED": a market buy by quote amount
    that cannot afford one more lot of the overlap), or "" to go on."""
    overlap = remaining
    if capped and taker.quote_quantity:
        # A buy by quote amount has no lot quantity: it overlaps only as far as its money
        # reaches. One by quantity has: preventing a trade costs nothing, and a buy that
        # can afford all its fills but not the prevented ones must not stop here.
        affordable = taker.reserved // (maker.price * market.notional_unit)
        if affordable == 0:
            return "FUNDS_EXHAUSTED"
        overlap = min(overlap, affordable)
    mode = taker.stp
    if mode == "DECREMENT":
        return (
            "STP" if _decrement(state, market, side, level, taker, maker, overlap, events) else ""
        )
    if mode in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
        level.orders.popleft()
        maker.in_book = False
        level.qty -= maker.display
        level.live -= 1
        finish_removed(state, market, maker, "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED", events)
    return "STP" if mode in ("EXPIRE_TAKER", "EXPIRE_BOTH") else ""


def _say_decremented(order: Order, events: list[e.Event]) -> None:
    """An order that DECREMENT shrank and that stays: an event says so, or everything that
    follows the events (the projection, REST answers, private streams) would keep its old
    quantity."""
    events.append(
        OrderUpdated(
            order.order_id,
            order.user,
            order.market,
            order.status,
            order.filled,
            order.quantity,
            "SELF_TRADE_DECREMENTED",
        )
    )


def _decrement(
    state: EngineState,
    market: MarketState,
    side: BookSide,
    level: Level,
    taker: Order,
    maker: Order,
    remaining: int,
    events: list[e.Event],
) -> bool:
    """STP DECREMENT: both orders shrink by their overlap; True if the taker expires."""
    cut = remaining if remaining < maker.display else maker.display
    maker.quantity -= cut
    maker.display -= cut
    level.qty -= cut
    release(state, market, maker, required_reserve(market, maker, cut), events)
    if taker.quote_quantity and taker.side == "BUY":
        # A buy by quote amount has no lot quantity to cut: its amount shrinks by
        # what the cut lots cost, and it expires once it cannot buy another lot.
        lot_cost = maker.price * market.notional_unit
        release(state, market, taker, cut * lot_cost, events)
        expired = taker.reserved < lot_cost
    else:
        # (A sell by quote amount cuts the lots its amount reaches at this level: match
        # takes what they would have brought off the quote still to receive.)
        taker.quantity -= cut
        expired = taker.quantity == taker.filled
        if not expired and not taker.quote_quantity:
            # (an expiring taker's EXPIRED update carries its new quantity; a quote
            # order's quantity is a placeholder until it ends)
            _say_decremented(taker, events)
    if maker.quantity == maker.filled:
        level.orders.popleft()
        maker.in_book = False
        level.live -= 1
        finish_removed(state, market, maker, "EXPIRED_IN_MATCH", "SELF_TRADE_PREVENTED", events)
        return expired
    _say_decremented(maker, events)
    if maker.display == 0:
        level.orders.popleft()
        maker.display = min(maker.iceberg_quantity, maker.quantity - maker.filled)
        level.qty += maker.display
        maker.queued = side.next_queued()
        level.orders.append(maker)
    return expired


# ------------------------------------------------------------------ stops


def stop_holds(side: str, otype: str, stop_price: int, last: int) -> bool:
    """Does a stop of this side and type fire at the last price ``last``?"""
    if (side, otype) in FIRES_ON_RISE:
        return last >= stop_price
    return last <= stop_price


def add_stop(market: MarketState, order: Order) -> None:
    if (order.side, order.type) in FIRES_ON_RISE:
        heappush(market.stops_above, (order.stop_price, order.order_id))
    else:
        heappush(market.stops_below, (-order.stop_price, order.order_id))


def remove_stop(market: MarketState, order: Order) -> None:
    """Take an untriggered stop out of its heap (stops are few: O(n) is fine)."""
    heap = market.stops_above if (order.side, order.type) in FIRES_ON_RISE else market.stops_below
    heap[:] = [entry for entry in heap if entry[1] != order.order_id]
    heapify(heap)


def trigger_stops(state: EngineState, market: MarketState, ts: int, events: list[e.Event]) -> None:
    """Fire every stop whose condition holds against the last trade price.

    Order of firing: among all stops of this market whose condition holds, the one
    placed first (lowest order id) fires and matches completely; then the condition
    is evaluated again against the new last price, until no stop holds. A cascade of
    stops therefore runs inside the command that started it.
    """
    above = market.stops_above
    below = market.stops_below
    orders = state.orders
    while True:
        last = market.last_price
        if not ((above and above[0][0] <= last) or (below and -below[0][0] >= last)):
            return
        due = [oid for stop, oid in above if stop <= last]
        due += [oid for neg_stop, oid in below if -neg_stop >= last]
        order_id = min(due)
        remove_stop(market, orders[order_id])
        order = orders[order_id]
        order.ts = ts
        events.append(e.OrderTriggered(order_id, order.user, order.market, last))
        if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
            order.type = "MARKET"
        else:
            order.type = "LIMIT"
        order.status = "NEW"
        execute(state, market, order, ts, events)
