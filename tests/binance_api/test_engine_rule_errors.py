"""The engine's Binance rules (issue 15) answer Binance's error triples: a real engine
refuses, the application's error carries its code, the one table turns it into Binance's
(status, code, msg), exactly as errors.md words them."""

from __future__ import annotations

from mercato.application.errors import ServiceError
from mercato.core import commands as c
from mercato.core.engine import Engine
from mercato.core.model import MarketSpec
from mercato.wire.binance_errors import from_coded

SPEC = MarketSpec(
    "BTC-USDT", "BTC", "USDT", tick_size="0.01", step_size="0.001", min_qty="0.001",
    max_qty="100", min_notional="10", maker_fee="0.001", taker_fee="0.002",
)  # fmt: skip


def engine_with_an_ask() -> tuple[Engine, list[c.Command]]:
    """User 1 sells 0.3 BTC at 30000 (order 1); user 2 holds 100 USDT and 1 BTC."""
    commands: list[c.Command] = [
        c.UpsertAsset("BTC", 8), c.UpsertAsset("USDT", 6), c.UpsertMarket(SPEC),
        c.CreditDeposit(1, "BTC", 10**8, "d1"), c.CreditDeposit(2, "USDT", 100 * 10**6, "d2"),
        c.CreditDeposit(2, "BTC", 10**8, "d3"),
        c.PlaceOrder(1, "BTC-USDT", "SELL", "LIMIT", 300, 3_000_000),
    ]  # fmt: skip
    engine = Engine()
    for seq, command in enumerate(commands, 1):
        assert engine.apply(seq, 1, command).accepted
    return engine, commands


def triple(engine: Engine, command: c.Command) -> tuple[int, int, str]:
    result = engine.apply(engine.last_seq + 1, 2, command)
    assert result.status == "REJECTED"
    error = from_coded(ServiceError.rejected(result))
    return error.status, error.code, error.msg


def test_market_orders_refused_at_entry() -> None:
    engine, _ = engine_with_an_ask()
    unfunded = c.PlaceOrder(2, "BTC-USDT", "BUY", "MARKET", 100)  # 3000 USDT, has 100
    assert triple(engine, unfunded) == (
        400,
        -2010,
        "Account has insufficient balance for requested action.",
    )
    no_bids = c.PlaceOrder(2, "BTC-USDT", "SELL", "MARKET", quote_quantity=50 * 10**6)
    assert triple(engine, no_bids) == (
        400,
        -2010,
        "Order book liquidity is less than symbol minimum quantity.",
    )


def test_keep_priority_amend_refusals() -> None:
    engine, _ = engine_with_an_ask()
    larger = c.AmendOrder(1, order_id=1, quantity=400, keep_priority=True)
    assert triple(engine, larger) == (
        400,
        -2038,
        "Order amend (quantity increase) is not supported.",
    )
    same = c.AmendOrder(1, order_id=1, quantity=300, keep_priority=True)
    assert triple(engine, same) == (
        400,
        -2038,
        "The requested action would change no state; rejecting",
    )
