"""Shared helpers for the matching-engine tests.

Two markets with round numbers so that every expected amount can be worked out by hand:

``BTC-USDT``: BTC has 8 decimals (1 BTC = 10**8 atoms), USDT has 6 (1 USDT = 10**6 atoms).
tick 0.01 USDT, step 0.001 BTC: one lot is 100_000 BTC atoms, one tick x one lot is
0.00001 USDT = 10 USDT atoms (``notional_unit``). Price "30000" is 3_000_000 ticks,
quantity "0.5" is 500 lots. min_qty 0.001, max_qty 100, min_notional 10 USDT, maker fee
0.1 %, taker fee 0.2 %, protection band 5 %.

``ETH-USDT``: ETH has 8 decimals, tick 0.01, step 0.01 ETH (one lot = 10**6 ETH atoms),
notional_unit 0.0001 USDT = 100 atoms, min_qty 0.01, max_qty 1000, min_notional 10 USDT,
same fees and band.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.engine import Engine
from mercato.core.model import (
    AVAILABLE,
    EXTERNAL_DEPOSITS,
    EXTERNAL_WITHDRAWALS,
    FEE,
    FEES,
    LOCKED,
    TRADE,
    MarketSpec,
)
from mercato.core.results import Result

BTC = 10**8  # atoms in one BTC
ETH = 10**8  # atoms in one ETH
USDT = 10**6  # atoms in one USDT
PPM = 10**6  # fee rates are parts per million

BTC_USDT = MarketSpec(
    "BTC-USDT", "BTC", "USDT",
    tick_size="0.01", step_size="0.001", min_qty="0.001", max_qty="100", min_notional="10",
    maker_fee="0.001", taker_fee="0.002", protection_bps=500,
)  # fmt: skip
ETH_USDT = MarketSpec(
    "ETH-USDT", "ETH", "USDT",
    tick_size="0.01", step_size="0.01", min_qty="0.01", max_qty="1000", min_notional="10",
    maker_fee="0.001", taker_fee="0.002", protection_bps=500,
)  # fmt: skip

START_TS = 1_700_000_000_000


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def of_type(result: Result | list[Any], kind: type) -> list[Any]:
    """The events of ``kind`` in a result (or an event list), in order."""
    events = result.events if isinstance(result, Result) else result
    return [event for event in events if type(event) is kind]


def kinds(result: Result, *, transfers: bool = False) -> list[str]:
    """Event type names in order; Transfers left out unless asked for."""
    return [
        type(event).__name__
        for event in result.events
        if transfers or type(event) is not ev.Transfer
    ]


def state_without_clock(engine: Engine) -> Any:
    """The canonical state minus last_seq/last_ts, as plain Python data."""
    state = engine.canonical_state()
    state.pop("last_seq")
    state.pop("last_ts")
    return msgspec.msgpack.decode(msgspec.msgpack.encode(state))


# ---------------------------------------------------------------------------- ledger


Accounts = dict[tuple[int, int, str], int]


def engine_accounts(engine: Engine) -> Accounts:
    """Every non-zero account of the engine as (kind, user, asset) -> signed balance."""
    accounts: Accounts = {}
    for user, per_asset in engine.balances.items():
        for asset, (available, locked) in per_asset.items():
            if available:
                accounts[(AVAILABLE, user, asset)] = available
            if locked:
                accounts[(LOCKED, user, asset)] = locked
    for kind, values in (
        (FEES, engine.fees),
        (EXTERNAL_DEPOSITS, engine.external_deposits),
        (EXTERNAL_WITHDRAWALS, engine.external_withdrawals),
    ):
        for asset, amount in values.items():
            if amount:
                accounts[(kind, 0, asset)] = amount
    return accounts


def post(accounts: Accounts, transfer: ev.Transfer) -> None:
    """Apply one debit/credit pair to ``accounts`` (dropping accounts that reach zero)."""
    assert transfer.amount > 0, f"non-positive transfer {transfer}"
    for key, delta in (
        ((transfer.debit_kind, transfer.debit_user, transfer.asset), -transfer.amount),
        ((transfer.credit_kind, transfer.credit_user, transfer.asset), transfer.amount),
    ):
        value = accounts.get(key, 0) + delta
        if value:
            accounts[key] = value
        else:
            accounts.pop(key, None)


def trade_legs(trade: ev.Trade, base: str, quote: str, lot_atoms: int) -> list[ev.Transfer]:
    """The four ledger legs of a fill, worked out independently of the engine: the buyer's
    locked quote pays the seller, the seller's locked base reaches the buyer, then each
    side pays its fee from what it received."""
    if trade.taker_side == "BUY":
        buyer, seller, buyer_fee, seller_fee = (
            trade.taker_user, trade.maker_user, trade.taker_fee, trade.maker_fee,
        )  # fmt: skip
    else:
        buyer, seller, buyer_fee, seller_fee = (
            trade.maker_user, trade.taker_user, trade.maker_fee, trade.taker_fee,
        )  # fmt: skip
    tid = trade.trade_id
    legs = [
        ev.Transfer(quote, trade.quote_amount, LOCKED, buyer, AVAILABLE, seller, TRADE, tid),
        ev.Transfer(base, trade.quantity * lot_atoms, LOCKED, seller, AVAILABLE, buyer, TRADE, tid),
    ]
    if buyer_fee:
        legs.append(ev.Transfer(base, buyer_fee, AVAILABLE, buyer, FEES, 0, FEE, tid))
    if seller_fee:
        legs.append(ev.Transfer(quote, seller_fee, AVAILABLE, seller, FEES, 0, FEE, tid))
    return legs


# ---------------------------------------------------------------------------- exchange


class Exchange:
    """An Engine driven like the sequencer drives it: seq auto-increments, the timestamp
    stays where it was last set (pass ``ts=`` to move it). Prices, stop prices and
    quantities may be given as decimal strings ("30000", "0.5") in the market's units."""

    def __init__(self, engine: Engine | None = None, ts: int = START_TS) -> None:
        self.engine = engine or Engine()
        self.seq = self.engine.last_seq
        self.ts = ts
        self.log: list[tuple[int, int, c.Command]] = []
        self.results: list[Result] = []
        self._deposits = 0

    # -- driving
    def apply(self, command: c.Command, ts: int | None = None) -> Result:
        if ts is not None:
            self.ts = ts
        self.seq += 1
        self.log.append((self.seq, self.ts, command))
        result = self.engine.apply(self.seq, self.ts, command)
        assert result.seq == self.seq
        self.results.append(result)
        return result

    def ok(self, command: c.Command, ts: int | None = None) -> Result:
        result = self.apply(command, ts)
        assert result.status == "ACCEPTED", (result.code, result.message)
        return result

    def reject(self, command: c.Command, code: str, ts: int | None = None) -> Result:
        """Apply ``command``, expect REJECTED with ``code`` and no change to the state."""
        before = state_without_clock(self.engine)
        result = self.apply(command, ts)
        assert (result.status, result.code) == ("REJECTED", code), (
            result.status,
            result.code,
            result.message,
        )
        assert result.events == []
        assert state_without_clock(self.engine) == before
        self.engine.check_invariants()
        return result

    def all_events(self) -> list[Any]:
        return [event for result in self.results for event in result.events]

    # -- units
    def px(self, price: str | int, market: str = "BTC-USDT") -> int:
        if isinstance(price, int):
            return price
        return self.engine.markets[market].rules.parse_price(price)

    def lots(self, quantity: str | int, market: str = "BTC-USDT") -> int:
        if isinstance(quantity, int):
            return quantity
        return self.engine.markets[market].rules.parse_quantity(quantity)

    # -- commands
    def deposit(self, user: int, asset: str, amount: int) -> Result:
        self._deposits += 1
        return self.ok(c.CreditDeposit(user, asset, amount, f"dep-{self._deposits}"))

    def order(
        self,
        user: int,
        side: str,
        quantity: str | int = 0,
        price: str | int = 0,
        market: str = "BTC-USDT",
        *,
        stop_price: str | int = 0,
        iceberg_quantity: str | int = 0,
        **fields: Any,
    ) -> c.PlaceOrder:
        return c.PlaceOrder(
            user=user,
            market=market,
            side=side,  # type: ignore[arg-type]
            quantity=self.lots(quantity, market) if quantity else 0,
            price=self.px(price, market) if price else 0,
            stop_price=self.px(stop_price, market) if stop_price else 0,
            iceberg_quantity=self.lots(iceberg_quantity, market) if iceberg_quantity else 0,
            **fields,
        )

    def place(self, user: int, side: str, quantity: str | int = 0, price: str | int = 0,
              market: str = "BTC-USDT", **fields: Any) -> Result:  # fmt: skip
        return self.ok(self.order(user, side, quantity, price, market, **fields))

    def buy(self, user: int, quantity: str | int, price: str | int, **fields: Any) -> Result:
        return self.place(user, "BUY", quantity, price, **fields)

    def sell(self, user: int, quantity: str | int, price: str | int, **fields: Any) -> Result:
        return self.place(user, "SELL", quantity, price, **fields)

    def cancel(self, user: int, order_id: int) -> Result:
        return self.ok(c.CancelOrder(user, order_id=order_id))

    # -- queries
    def bal(self, user: int, asset: str) -> tuple[int, int]:
        return self.engine.balance(user, asset)

    def depth(self, market: str = "BTC-USDT", n: int = 20) -> Any:
        return self.engine.depth(market, n)

    def open_ids(self, user: int | None = None) -> list[int]:
        return [o.order_id for o in self.engine.open_orders(user)]

    def status(self, order_id: int) -> str | None:
        """The order's status if open, else the last status an OrderUpdated gave it."""
        order = self.engine.orders.get(order_id)
        if order is not None:
            return order.status
        for result in reversed(self.results):
            for event in reversed(result.events):
                if type(event) is ev.OrderUpdated and event.order_id == order_id:
                    return event.status
        return None


def make_exchange() -> Exchange:
    ex = Exchange()
    for symbol, decimals in (("BTC", 8), ("ETH", 8), ("USDT", 6)):
        ex.ok(c.UpsertAsset(symbol, decimals))
    ex.ok(c.UpsertMarket(BTC_USDT))
    ex.ok(c.UpsertMarket(ETH_USDT))
    return ex


def busy_scenario() -> Exchange:
    """Deposits, resting and crossing limits, market and quote buys, IOC, an iceberg, a
    stop cascade, STP, amends, cancels, GTD expiry, fee tiers and withdrawals."""
    ex = make_exchange()
    for user in (1, 2, 3, 4):
        ex.deposit(user, "BTC", 5 * BTC)
        ex.deposit(user, "USDT", 500_000 * USDT)
        ex.deposit(user, "ETH", 50 * 10**8)
    ex.ok(c.SetFeeTier(1, "0.0003", "0.000777"))
    ex.ok(c.SetUserFeeTier(3, 1))
    ex.sell(1, "0.5", "30000")
    ex.sell(2, "0.3", "30010.07", iceberg_quantity="0.1")
    ex.buy(3, "0.7", "30020")  # crosses both, rests the rest
    ex.buy(4, "0.2", "29990", time_in_force="GTD", expire_at=START_TS + 500)
    ex.place(2, "SELL", "0.123", type="MARKET")
    ex.sell(1, "0.2", "30100")
    ex.place(4, "BUY", type="MARKET", quote_quantity=1_234_567_891)
    ex.place(1, "SELL", "0.1", type="STOP_LOSS", stop_price="29900")
    ex.place(2, "SELL", "0.05", "29000", type="STOP_LOSS_LIMIT", stop_price="29800")
    ex.buy(3, "0.2", "29850")
    ex.buy(4, "0.3", "29700")
    ex.sell(4, "0.4", "29850", stp="EXPIRE_MAKER")  # drops the price: stops fire
    amend_me = ex.buy(1, "0.1", "29000").order_id
    ex.ok(c.AmendOrder(1, order_id=amend_me, quantity=ex.lots("0.25"), price=ex.px("29500")))
    ex.ok(c.AmendOrder(1, order_id=amend_me, quantity=ex.lots("0.05")))
    ex.place(3, "BUY", "3", "2000.01", market="ETH-USDT")
    ex.place(4, "SELL", "1.37", "1999", market="ETH-USDT", time_in_force="IOC")
    ex.buy(2, "0.05", "29500", stp="DECREMENT")
    ex.sell(1, "0.01", "29400", stp="DECREMENT")
    ex.ok(c.HoldWithdrawal(1, "USDT", 1_000 * USDT, "w1", fee=3 * USDT))
    ex.ok(c.HoldWithdrawal(2, "BTC", 10_000_000, "w2", fee=50_000))
    ex.ok(c.SettleWithdrawal("w1"))
    ex.ok(c.ReleaseWithdrawal("w2"))
    ex.ok(c.Tick(), ts=START_TS + 1_000)  # GTD expiry
    ex.ok(c.CancelAll(3))
    ex.ok(c.FreezeUser(4, cancel_orders=True))
    assert len([e for e in ex.all_events() if type(e) is ev.Trade]) >= 10
    ex.engine.check_invariants()
    return ex


@pytest.fixture
def ex() -> Exchange:
    """Assets and both markets, no balances yet."""
    return make_exchange()


@pytest.fixture
def funded() -> Exchange:
    """Users 1..4 each hold 10 BTC, 100 ETH and 1_000_000 USDT."""
    ex = make_exchange()
    for user in (1, 2, 3, 4):
        ex.deposit(user, "BTC", 10 * BTC)
        ex.deposit(user, "ETH", 100 * ETH)
        ex.deposit(user, "USDT", 1_000_000 * USDT)
    return ex
