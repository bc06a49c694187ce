"""Command streams for the market-data tests: the generated flow of mercato.flow, with
the order features it never uses (amend, iceberg, stop-limit, GTD expiry, LIMIT_MAKER,
FOK, DECREMENT self-trade prevention, cancel-all, freeze with cancel) mixed in, chosen
against the engine's current state."""

from __future__ import annotations

import random
from collections.abc import Iterator

from mercato.core import commands as c
from mercato.core.engine import MAX_ICEBERG_PARTS, Engine
from mercato.flow import generate_flow


def _extra(rng: random.Random, engine: Engine, ts: int, users: int) -> c.Command:
    symbol = rng.choice(sorted(engine.markets))
    market = engine.markets[symbol]
    mid = market.last_price or (5_000_000 if symbol.startswith("BTC") else 300_000)
    user = rng.randint(1, users)
    side = rng.choice(("BUY", "SELL"))
    qty = rng.randint(5, 200)
    roll = rng.random()
    resting = [o for o in engine.orders.values() if o.in_book]
    if roll < 0.25 and resting:
        order = rng.choice(resting)
        how = rng.random()
        if how < 0.4:  # smaller, same price: keeps priority
            return c.AmendOrder(
                order.user,
                order.order_id,
                quantity=max(order.filled + 1, order.quantity - rng.randint(1, 5)),
            )
        price = order.price + rng.randint(-30, 30)
        return c.AmendOrder(
            order.user,
            order.order_id,
            quantity=order.quantity + rng.randint(0, 20),
            price=max(1, price),
        )
    offset = rng.randint(-20, 40)
    price = max(1, mid - offset if side == "BUY" else mid + offset)
    if roll < 0.40:
        fewest = -(-qty // MAX_ICEBERG_PARTS)  # a smaller slice would make too many parts
        return c.PlaceOrder(
            user, symbol, side, "LIMIT", qty, price, iceberg_quantity=rng.randint(fewest, qty - 1)
        )
    if roll < 0.50:
        kind = rng.choice(("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"))
        stop = max(1, mid + rng.randint(-40, 40))
        return c.PlaceOrder(user, symbol, side, kind, qty, price, stop_price=stop)
    if roll < 0.60:
        return c.PlaceOrder(
            user, symbol, side, "LIMIT", qty, price, "GTD", expire_at=ts + rng.randint(1, 400)
        )
    if roll < 0.67:
        return c.PlaceOrder(user, symbol, side, "LIMIT_MAKER", qty, price)
    if roll < 0.72:
        return c.PlaceOrder(user, symbol, side, "LIMIT", qty, price, "FOK")
    if roll < 0.85:
        # Crosses the user's own orders now and then: DECREMENT or EXPIRE_* apply.
        through = mid + (30 if side == "BUY" else -30)
        stp = rng.choice(("DECREMENT", "EXPIRE_MAKER", "EXPIRE_TAKER", "EXPIRE_BOTH", "NONE"))
        return c.PlaceOrder(user, symbol, side, "LIMIT", qty, max(1, through), stp=stp)
    if roll < 0.90:
        return c.CancelAll(user, rng.choice(("", symbol)))
    if roll < 0.905:
        return c.FreezeUser(user, cancel_orders=True)
    if roll < 0.96:
        return c.UnfreezeUser(user)
    return c.Tick()


def mixed_flow(
    seed: int, count: int, engine: Engine, users: int = 6
) -> Iterator[tuple[int, list[c.Command]]]:
    """Batches of (ts, commands): the setup first, then ``count`` trading commands. The
    extras are drawn against ``engine`` as it is when their batch is produced, so the
    caller must apply each batch before asking for the next."""
    rng = random.Random(seed)
    setup, flow = generate_flow(seed, count, users=users)
    ts = 1_700_000_000_000
    yield ts, setup
    index = 0
    while index < len(flow):
        size = rng.choice((1, 1, 1, 2, 3, 8, 20))
        batch: list[c.Command] = []
        ts += rng.randint(0, 120)
        for _ in range(size):
            if rng.random() < 0.3:
                batch.append(_extra(rng, engine, ts, users))
            elif index < len(flow):
                command = flow[index]
                index += 1
                # The generated cancels assume order ids that the extras shift: cancel
                # by the owner's open orders instead, so cancels still hit.
                if isinstance(command, c.CancelOrder):
                    mine = [o.order_id for o in engine.orders.values() if o.user == command.user]
                    if mine:
                        command = c.CancelOrder(command.user, rng.choice(mine))
                batch.append(command)
        yield ts, batch
