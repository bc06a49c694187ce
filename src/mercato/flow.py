"""A generated, realistic order flow for benchmarks and load tests.

Two markets (BTC-USDT, ETH-USDT) with a random-walk mid each and several funded users
(some on a discounted fee tier). The flow is about 60 % limit orders near the mid,
30 % cancels of orders the generator placed earlier (some already filled: those are
rejected, as on a real exchange) and 10 % marketable orders (market orders and IOC
limits through the spread). Every order passes validation, so the n-th PlaceOrder
gets order id n and cancels can name ids directly. Deterministic for a given seed.
"""

from __future__ import annotations

import random

from mercato.core.commands import (
    CancelOrder,
    Command,
    CreditDeposit,
    PlaceOrder,
    SetFeeTier,
    SetUserFeeTier,
    UpsertAsset,
    UpsertMarket,
)
from mercato.core.model import MarketSpec, Side

MARKETS = (
    # symbol, base, quote, tick, step, starting mid in ticks
    ("BTC-USDT", "BTC", "USDT", "0.01", "0.00001", 5_000_000),
    ("ETH-USDT", "ETH", "USDT", "0.01", "0.0001", 300_000),
)
DEPOSIT_ATOMS = 10**16  # 10^8 units each: the flow is about matching, not rejections


def setup_commands(users: int, tag: str = "") -> list[Command]:
    """Assets, markets, fee tiers and deposits for ``users`` users (ids 1..users).

    ``tag`` makes the deposit external ids unique when setup is repeated on one engine.
    """
    commands: list[Command] = [UpsertAsset(symbol, 8) for symbol in ("BTC", "ETH", "USDT")]
    for symbol, base, quote, tick, step, _mid in MARKETS:
        spec = MarketSpec(symbol, base, quote, tick, step, step, "1000", "1",
                          maker_fee="0.001", taker_fee="0.002", protection_bps=500)  # fmt: skip
        commands.append(UpsertMarket(spec))
    commands.append(SetFeeTier(1, "0.0005", "0.001"))
    for user in range(1, users + 1):
        for asset in ("BTC", "ETH", "USDT"):
            # issued_at 0: issued at the command's own timestamp, so the flow (and its
            # state hash) does not depend on the clock it is generated at.
            seed_id = f"seed{tag}:{user}:{asset}"
            commands.append(CreditDeposit(user, asset, DEPOSIT_ATOMS, seed_id, issued_at=0))
        if user % 3 == 0:
            commands.append(SetUserFeeTier(user, 1))
    return commands


def generate_flow(
    seed: int, count: int, users: int = 8, first_order_id: int = 1
) -> tuple[list[Command], list[Command]]:
    """(setup commands, ``count`` trading commands)."""
    rng = random.Random(seed)
    mids = [mid for *_, mid in MARKETS]
    symbols = [m[0] for m in MARKETS]
    resting: list[int] = []  # ids of limit orders the generator believes may still rest
    next_id = first_order_id
    flow: list[Command] = []
    for _ in range(count):
        m = rng.randrange(len(MARKETS))
        if rng.random() < 0.02:
            mids[m] += rng.choice((-1, 1)) * rng.randint(1, 5)
        roll = rng.random()
        user = rng.randint(1, users)
        side: Side = "BUY" if rng.random() < 0.5 else "SELL"
        qty = rng.randint(5, 200)  # every order clears min notional
        if roll < 0.30 and resting:
            # Cancel a recent order most of the time, an old one sometimes.
            index = len(resting) - 1 - min(int(rng.expovariate(0.05)), len(resting) - 1)
            resting[index], resting[-1] = resting[-1], resting[index]
            flow.append(CancelOrder(user=0, order_id=resting.pop()))
            continue
        if roll < 0.40:
            if rng.random() < 0.5:
                flow.append(PlaceOrder(user, symbols[m], side, "MARKET", qty))
            else:
                through = mids[m] + (15 if side == "BUY" else -15)
                flow.append(PlaceOrder(user, symbols[m], side, "LIMIT", qty, through, "IOC"))
        else:
            offset = rng.randint(1, 40)
            price = mids[m] - offset if side == "BUY" else mids[m] + offset
            flow.append(PlaceOrder(user, symbols[m], side, "LIMIT", qty, price))
            resting.append(next_id)
        next_id += 1
    _assign_cancel_owners(flow, first_order_id)
    return setup_commands(users, tag=str(seed)), flow


def _assign_cancel_owners(flow: list[Command], first_order_id: int) -> None:
    """Cancels must come from the order's owner: fill in the user of each cancel."""
    owners: dict[int, int] = {}
    next_id = first_order_id
    for i, command in enumerate(flow):
        if isinstance(command, PlaceOrder):
            owners[next_id] = command.user
            next_id += 1
        elif isinstance(command, CancelOrder):
            flow[i] = CancelOrder(user=owners[command.order_id], order_id=command.order_id)
