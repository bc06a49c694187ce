"""Random command sequences against the engine, checked after every step.

Two markets with different units, five users, and every kind of command: deposits and
withdrawal holds (issued now, long ago, ahead of the clock; some repeated), time jumps
beyond the deposit id window, limit / market / quote / IOC / FOK / post-only / stop /
iceberg / GTD orders with random STP modes (market orders by quote amount on both sides),
cancels (also of random or foreign ids), amends (some keeping priority only),
cancel-all, ticks, settles and releases, freezes, market status and kill switch changes,
fee tiers.

After every command: the engine's own invariants, plus independent checks made here:
accounts rebuilt from the event stream equal the engine's balances; a rejection (or a
duplicate) changes nothing but the clock; every trade is at the maker's price, within
the taker's limit (and a market order's protection band), with exactly the right quote
amount and fees; no self-trade unless the taker's STP mode is NONE; FOK orders fill
completely or not at all; an order's fills add up to what its updates report; stops
fire only when their condition holds. Against a model of the id windows: each deposit's
answer (credited, duplicate, stale) is the one the window rule predicts, an external id is
credited at most once in the whole run (a repeat carries its original issued_at, as a
retrying submitter's does), a withdrawal id is held at most once, and the engine remembers
exactly the ids the model says are live. A snapshot restored at a random point runs the
rest of the sequence alongside and must answer and hash identically; at the end, a
replay of the whole command log into a fresh engine must too.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from conftest import (
    PPM,
    START_TS,
    ceil_div,
    engine_accounts,
    post,
    state_without_clock,
    trade_legs,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.engine import Engine
from mercato.core.model import (
    DEPOSIT_ID_WINDOW_MS,
    LIMIT_PRICED_TYPES,
    STOP_TYPES,
    TERMINAL_STATUSES,
    TRADE,
    MarketSpec,
)
from mercato.core.state import trading_status

USERS = (1, 2, 3, 4, 5)
ASSETS = (("AAA", 4), ("BBB", 2), ("QQQ", 4))
# AAA-QQQ: lot = 0.01 AAA = 100 atoms, tick x lot = 0.001 QQQ = 10 atoms, 1..50 lots,
# min notional 0.2 QQQ (2000 atoms) so that some small orders are refused.
# BBB-QQQ: lot = 1 BBB = 100 atoms, tick x lot = 0.05 QQQ = 500 atoms, 1..20 lots.
SPECS = (
    MarketSpec(
        "AAA-QQQ", "AAA", "QQQ", tick_size="0.1", step_size="0.01", min_qty="0.01",
        max_qty="0.5", min_notional="0.2", maker_fee="0.001", taker_fee="0.0025",
        protection_bps=1000,
    ),
    MarketSpec(
        "BBB-QQQ", "BBB", "QQQ", tick_size="0.05", step_size="1", min_qty="1", max_qty="20",
        min_notional="0", maker_fee="0", taker_fee="0.003", protection_bps=300,
        default_stp="EXPIRE_TAKER",
        allowed_stp=("EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"),
    ),
)  # fmt: skip
MIDS = {"AAA-QQQ": 100, "BBB-QQQ": 40}
UNIT_WORDS = re.compile(r"\b(atoms?|ticks?|lots?)\b")
MARKETS = tuple(spec.symbol for spec in SPECS)
STP = st.sampled_from(
    [None, None, "NONE", "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]
)
SIDES = st.sampled_from(["BUY", "SELL"])
WINDOW = DEPOSIT_ID_WINDOW_MS
# issued_at relative to the clock: None sends 0 (issued at the command's timestamp).
ISSUED = st.sampled_from(
    [None, None, 0, 0, -1_000, 1_000, -WINDOW // 2, WINDOW // 2, -WINDOW, WINDOW,
     -WINDOW - 1, WINDOW + 1, -3 * WINDOW]
)  # fmt: skip
FIRES_ON_RISE = {
    ("BUY", "STOP_LOSS"),
    ("BUY", "STOP_LOSS_LIMIT"),
    ("SELL", "TAKE_PROFIT"),
    ("SELL", "TAKE_PROFIT_LIMIT"),
}


class ExchangeMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.engine = Engine()
        self.mirror: Engine | None = None
        self.seq = 0
        self.ts = START_TS
        self.log: list[tuple[int, int, c.Command]] = []
        self.results: list[bytes] = []
        self.accounts: dict[tuple[int, int, str], int] = {}
        self.orders: dict[int, dict[str, Any]] = {}  # everything ever accepted
        self.filled: dict[int, int] = {}
        self.closed: set[int] = set()
        self.tiers: dict[int, tuple[int, int]] = {}
        self.user_tier: dict[int, int] = {}
        # The id window model: every deposit and hold command sent (by id, with its
        # issued_at resolved), the deposit ids ever credited and the withdrawal ids ever
        # held (id -> issued_at + window), and the ones finished.
        self.deposits: dict[str, c.CreditDeposit] = {}
        self.first_ts: dict[str, int] = {}
        self.credited: dict[str, int] = {}
        self.holds: dict[str, c.HoldWithdrawal] = {}
        self.held: dict[str, int] = {}
        self.finished: set[str] = set()
        self.withdrawal_ids: list[str] = []
        self.cids: list[tuple[int, str]] = []
        self.trades = 0
        # Market facts for the checks, worked out from the specs above: base, quote, lot
        # atoms, notional unit, protection band, (maker, taker) fee rates in ppm.
        self.units: dict[str, tuple[str, str, int, int, int, tuple[int, int]]] = {
            "AAA-QQQ": ("AAA", "QQQ", 100, 10, 1000, (1000, 2500)),
            "BBB-QQQ": ("BBB", "QQQ", 100, 500, 300, (0, 3000)),
        }
        for symbol, decimals in ASSETS:
            self.run(c.UpsertAsset(symbol, decimals))
        for spec in SPECS:
            self.run(c.UpsertMarket(spec))
        for symbol, (base, quote, lot, unit, _bps, _fees) in self.units.items():
            market = self.engine.markets[symbol]
            assert (market.spec.base, market.spec.quote) == (base, quote)
            assert (market.rules.lot_atoms, market.rules.notional_unit) == (lot, unit)
        self.run(c.SetFeeTier(1, "0.0005", "0.0015"))
        self.run(c.SetFeeTier(2, "0", "0.000001"))
        for user in USERS:
            for asset, amount in (("AAA", 3_000), ("BBB", 2_000), ("QQQ", 600_000)):
                external_id = f"seed-{user}-{asset}"
                self.first_ts[external_id] = self.ts
                self.deposit(c.CreditDeposit(user, asset, amount, external_id))
        # A book to trade against: users 1-4 quote 5 lots on each side, k ticks from the
        # mid; then one trade sets a last price for stops to compare with.
        for symbol, mid in MIDS.items():
            for k in (1, 2, 3, 4):
                self.run(c.PlaceOrder(k, symbol, "BUY", "LIMIT", 5, mid - k))
                self.run(c.PlaceOrder(k, symbol, "SELL", "LIMIT", 5, mid + k))
            self.run(c.PlaceOrder(5, symbol, "BUY", "LIMIT", 2, mid + 1))
        assert self.trades == 2

    # ------------------------------------------------------------------ driving

    def run(self, command: c.Command) -> Any:
        self.seq += 1
        seq, ts = self.seq, self.ts
        before = state_without_clock(self.engine)
        best = {  # per market, before the command: best bid, best ask, last trade price
            m: (market.bids.best(), market.asks.best(), market.last_price)
            for m, market in self.engine.markets.items()
        }
        result = self.engine.apply(seq, ts, command)
        self.log.append((seq, ts, command))
        encoded = msgspec.msgpack.encode(result)
        self.results.append(encoded)
        if self.mirror is not None:
            mirrored = self.mirror.apply(seq, ts, command)
            assert msgspec.msgpack.encode(mirrored) == encoded, command
            assert self.mirror.state_hash() == self.engine.state_hash(), command
        self.check(command, result, before, best)
        return result

    # ------------------------------------------------------------------ checks

    def check(self, command: c.Command, result: Any, before: Any, best: Any) -> None:
        engine = self.engine
        assert result.seq == self.seq
        assert result.status in ("ACCEPTED", "REJECTED", "DUPLICATE")
        if result.status != "ACCEPTED":
            # Only GTD expiries may lead a rejected or duplicate command's result.
            for event in result.events:
                assert (type(event) is ev.OrderUpdated and event.reason == "GTD_EXPIRED") or (
                    type(event) is ev.Transfer
                ), event
            if not result.events:
                assert state_without_clock(engine) == before, (command, result.code)
            # Messages speak the API's units, never the engine's integers.
            assert not UNIT_WORDS.search(result.message), result.message
        engine.check_invariants()

        expired = any(
            type(e) is ev.OrderUpdated and e.reason == "GTD_EXPIRED" for e in result.events
        )
        with_legs = {e.ref for e in result.events if type(e) is ev.Transfer and e.reason == TRADE}
        new_here: set[int] = set()
        traded_as_taker: dict[int, list[ev.Trade]] = {}
        updated_here: dict[int, str] = {}
        for event in result.events:
            kind = type(event)
            if kind is ev.Transfer:
                post(self.accounts, event)
            elif kind is ev.OrderAccepted:
                # Order ids are sequential over accepted orders only.
                assert event.order_id == len(self.orders) + 1
                assert isinstance(command, c.PlaceOrder) and result.order_id == event.order_id
                assert event.status == ("UNTRIGGERED" if event.stop_price else "NEW")
                self.orders[event.order_id] = {
                    "user": event.user,
                    "market": event.market,
                    "side": event.side,
                    "type": event.type,
                    "price": event.price,
                    "stp": event.stp,
                    "tif": event.time_in_force,
                    "quantity": event.quantity,
                    "quote": event.quote_quantity,
                    "stop": event.stop_price,
                    "direct_market": event.type == "MARKET",
                    "expire_at": event.expire_at,
                }
                if event.stop_price:
                    # A stop whose condition already holds at the last price is refused.
                    last = best[event.market][2]
                    assert not last or not self.stop_holds(event.order_id, last), event
                self.filled[event.order_id] = 0
                new_here.add(event.order_id)
                if event.client_order_id:
                    self.cids.append((event.user, event.client_order_id))
            elif kind is ev.OrderAmended:
                info = self.orders[event.order_id]
                assert event.order_id not in self.closed
                info["price"], info["quantity"] = event.price, event.quantity
            elif kind is ev.OrderTriggered:
                info = self.orders[event.order_id]
                assert event.order_id not in self.closed
                new_here.add(event.order_id)  # live from now on: checked like a new order
                assert self.stop_holds(event.order_id, event.last_price), event
                info["type"] = "MARKET" if info["type"] in ("STOP_LOSS", "TAKE_PROFIT") else "LIMIT"
            elif kind is ev.Trade:
                # GTD expiries before the command may have moved the best price since
                # `best` was read: then the band is not checked for this command.
                self.check_trade(event, None if expired else best)
                if event.trade_id not in with_legs:
                    base, quote, lot, *_ = self.units[event.market]
                    for leg in trade_legs(event, base, quote, lot):
                        post(self.accounts, leg)
                traded_as_taker.setdefault(event.taker_order_id, []).append(event)
            elif kind is ev.OrderUpdated:
                oid = event.order_id
                assert oid not in self.closed, event
                assert event.filled == self.filled[oid], (event, self.filled[oid])
                updated_here[oid] = event.status
                if event.status in TERMINAL_STATUSES:
                    self.closed.add(oid)
                    assert oid not in engine.orders
            elif kind is ev.FeeTierSet:
                self.tiers[event.tier] = (event.maker_fee, event.taker_fee)
            elif kind is ev.UserFeeTierSet:
                self.user_tier[event.user] = event.tier
            elif kind is ev.DepositCredited:
                assert isinstance(command, c.CreditDeposit)
                assert event.external_id not in self.credited, f"{event} credited twice"
                issued = command.issued_at or self.ts
                self.credited[event.external_id] = issued + WINDOW
            elif kind is ev.WithdrawalHeld:
                assert isinstance(command, c.HoldWithdrawal)
                assert event.withdrawal_id not in self.held, f"{event} held twice"
                self.held[event.withdrawal_id] = (command.issued_at or self.ts) + WINDOW
                self.withdrawal_ids.append(event.withdrawal_id)
            elif kind in (ev.WithdrawalSettled, ev.WithdrawalReleased):
                self.finished.add(event.withdrawal_id)

        assert self.accounts == engine_accounts(engine)
        self.check_windows(command)

        for oid in new_here:
            info = self.orders[oid]
            if info["type"] in STOP_TYPES:
                continue  # an untriggered stop: not live yet
            fills = traded_as_taker.get(oid, [])
            if info["type"] == "LIMIT_MAKER":
                assert not fills, "a LIMIT_MAKER order took liquidity on arrival"
            if info["tif"] == "FOK":
                total = sum(t.quantity for t in fills)
                assert updated_here.get(oid) in ("FILLED", "EXPIRED"), (oid, updated_here)
                if updated_here[oid] == "EXPIRED":
                    assert total == 0, f"FOK order {oid} expired after filling {total}"
                else:
                    assert total == info["quantity"]
            if info["direct_market"] or info["tif"] in ("IOC", "FOK"):
                assert oid not in engine.orders, f"order {oid} ({info['tif']}) stayed open"
            if info["quote"]:
                assert sum(t.quote_amount for t in fills) <= info["quote"]
            elif info["direct_market"]:
                assert sum(t.quantity for t in fills) <= info["quantity"]

        if result.code == "ORDER_WOULD_TRIGGER_IMMEDIATELY":
            assert isinstance(command, c.PlaceOrder)
            rises = (command.side, command.type) in FIRES_ON_RISE
            last = best[command.market][2]
            assert last and (last >= command.stop_price if rises else last <= command.stop_price)

        for oid, order in engine.orders.items():
            assert order.filled == self.filled[oid], oid
            if self.orders[oid]["tif"] == "GTD":
                assert self.orders[oid]["expire_at"] > self.ts, f"GTD order {oid} outlived expiry"
            if order.status != "UNTRIGGERED":
                assert (order.status == "PARTIALLY_FILLED") == (order.filled > 0), oid

    def check_windows(self, command: c.Command) -> None:
        """The engine remembers exactly the ids the model says are live now, and a
        deposit (a hold) leaves no expired deposit id (finished withdrawal) behind."""
        state = self.engine.canonical_state()
        now = self.ts
        live = [[k, t] for k, t in sorted(self.credited.items()) if t >= now]
        assert state["deposit_ids"] == live
        finished = sorted(w for w in self.finished if self.held[w] >= now)
        assert state["finished_withdrawals"] == [[w, self.held[w]] for w in finished]
        held = sorted(w for w in self.held if w not in self.finished)
        assert [row[0] for row in state["withdrawals"]] == held
        assert [row[-1] + WINDOW for row in state["withdrawals"]] == [self.held[w] for w in held]
        pruned = {
            c.CreditDeposit: self.engine.deposit_ids,
            c.HoldWithdrawal: self.engine.finished_withdrawals,
        }.get(type(command))
        if pruned is not None:
            assert min(pruned.forget_at.values(), default=now) >= now, "expired ids left"
            assert len(pruned.heap) == len(pruned)

    def expected_deposit(self, cmd: c.CreditDeposit) -> str:
        """The window rule, worked out independently: validation, then the id, then
        issued_at against the clock."""
        if cmd.asset not in ("AAA", "BBB", "QQQ"):
            return "UNKNOWN_ASSET"
        if cmd.amount <= 0:
            return "INVALID_AMOUNT"
        forget_at = self.credited.get(cmd.external_id)
        if forget_at is not None and self.ts <= forget_at:
            return "DUPLICATE_DEPOSIT"
        issued = cmd.issued_at or self.ts
        if not issued - WINDOW <= self.ts <= issued + WINDOW:
            return "STALE_DEPOSIT"
        return "ACCEPTED"

    def deposit(self, cmd: c.CreditDeposit) -> None:
        expected = self.expected_deposit(cmd)
        result = self.run(cmd)
        assert (result.code or result.status) == expected, (cmd, self.ts, result)
        self.deposits.setdefault(cmd.external_id, cmd)

    def check_trade(self, trade: ev.Trade, best: Any) -> None:
        self.trades += 1
        assert trade.trade_id == self.trades  # sequential over fills only
        assert trade.ts == self.ts
        _base, _quote, lot, unit, bps, _fees = self.units[trade.market]
        maker = self.orders[trade.maker_order_id]
        taker = self.orders[trade.taker_order_id]
        assert trade.maker_order_id not in self.closed and trade.taker_order_id not in self.closed
        assert trade.quantity > 0
        assert trade.quote_amount == trade.price * trade.quantity * unit
        assert maker["type"] in LIMIT_PRICED_TYPES and maker["side"] != taker["side"]
        assert trade.price == maker["price"], "trade not at the maker's price"
        assert trade.taker_side == taker["side"]
        assert (trade.maker_user, trade.taker_user) == (maker["user"], taker["user"])
        if trade.maker_user == trade.taker_user:
            assert taker["stp"] == "NONE", f"self-trade with taker STP {taker['stp']}"
        if taker["type"] in LIMIT_PRICED_TYPES:
            if trade.taker_side == "BUY":
                assert trade.price <= taker["price"]
            else:
                assert trade.price >= taker["price"]
        elif taker["direct_market"] and best is not None:
            # The band is measured from the best opposite price at arrival.
            bid, ask, _last = best[trade.market]
            if trade.taker_side == "BUY":
                assert trade.price <= ask * (10_000 + bps) // 10_000
            else:
                assert trade.price >= ceil_div(bid * (10_000 - bps), 10_000)
        buyer_gets, seller_gets = trade.quantity * lot, trade.quote_amount
        taker_gets, maker_gets = (
            (buyer_gets, seller_gets) if trade.taker_side == "BUY" else (seller_gets, buyer_gets)
        )
        assert trade.taker_fee == ceil_div(
            taker_gets * self.rate(trade.taker_user, trade.market, 1), PPM
        )
        assert trade.maker_fee == ceil_div(
            maker_gets * self.rate(trade.maker_user, trade.market, 0), PPM
        )
        self.filled[trade.maker_order_id] += trade.quantity
        self.filled[trade.taker_order_id] += trade.quantity

    def stop_holds(self, order_id: int, last: int) -> bool:
        info = self.orders[order_id]
        if (info["side"], info["type"]) in FIRES_ON_RISE:
            return last >= info["stop"]
        return last <= info["stop"]

    def rate(self, user: int, market: str, which: int) -> int:
        """The fee rate (0: maker, 1: taker) in ppm: the user's tier, else the market's."""
        tier = self.user_tier.get(user, 0)
        if tier:
            return self.tiers[tier][which]
        return self.units[market][5][which]

    def price(self, market: str, offset: int) -> int:
        return max(1, MIDS[market] + offset)

    def pick_order(self, pick: int, closed_too: bool = True) -> int:
        """Mostly an open order; sometimes any order ever placed, or an id never used."""
        roll = pick % 10
        open_ids = sorted(self.engine.orders)
        known = sorted(self.orders)
        if roll == 0 or not known:
            return pick % 1000 + 1
        if (closed_too and roll <= 2) or not open_ids:
            return known[pick % len(known)]
        return open_ids[pick % len(open_ids)]

    # ------------------------------------------------------------------ rules: orders

    @rule(
        user=st.sampled_from(USERS),
        market=st.sampled_from(MARKETS),
        side=SIDES,
        offset=st.integers(-6, 6),
        qty=st.integers(1, 12),
        cid=st.sampled_from(["", "", "", "a", "b"]),
        stp=STP,
    )
    def rest(
        self, user: int, market: str, side: str, offset: int, qty: int, cid: str, stp: str | None
    ) -> None:
        """A plain GTC limit order: builds the book (and crosses it about half the time)."""
        price = self.price(market, offset)
        self.run(
            c.PlaceOrder(user, market, side, "LIMIT", qty, price, client_order_id=cid, stp=stp)
        )

    @rule(
        user=st.sampled_from(USERS),
        market=st.sampled_from(MARKETS),
        side=SIDES,
        offset=st.integers(-6, 6),
        qty=st.integers(1, 12),
        tif=st.sampled_from(["GTC", "IOC", "FOK", "GTD", "GTD"]),
        stp=STP,
        iceberg=st.sampled_from([0, 1, 2, 3]),
        cid=st.sampled_from(["", "", "a", "b"]),
        life=st.integers(1, 400),
    )
    def limit(
        self,
        user: int,
        market: str,
        side: str,
        offset: int,
        qty: int,
        tif: str,
        stp: str | None,
        iceberg: int,
        cid: str,
        life: int,
    ) -> None:
        """A limit order with IOC, FOK or GTD, or an iceberg."""
        self.run(
            c.PlaceOrder(
                user,
                market,
                side,
                "LIMIT",
                qty,
                self.price(market, offset),
                tif,
                cid,
                expire_at=self.ts + life if tif == "GTD" else 0,
                iceberg_quantity=iceberg if tif in ("GTC", "GTD") else 0,
                stp=stp,
            )
        )

    @rule(
        user=st.sampled_from(USERS),
        market=st.sampled_from(MARKETS),
        side=SIDES,
        qty=st.integers(1, 15),
        quote=st.sampled_from([0, 0, 5_000, 20_000, 60_000, 250_000]),
        tif=st.sampled_from(["GTC", "IOC", "FOK"]),
        stp=STP,
        squeeze=st.sampled_from([None, None, None, 0, 300, 2_000, 8_000]),
    )
    def market_order(
        self,
        user: int,
        market: str,
        side: str,
        qty: int,
        quote: int,
        tif: str,
        stp: str | None,
        squeeze: int | None,
    ) -> None:
        """A MARKET order by quantity or, either side, by quote amount; checked against
        a model of Binance's entry rules: funded in full against the book as it stands,
        and a quote amount refused on an empty side. ``squeeze``: first hold a withdrawal
        of all but that much of what the order pays with, so that some cannot pay."""
        paid_in = self.units[market][1 if side == "BUY" else 0]
        if squeeze is not None:
            held = self.engine.balances.get(user, {}).get(paid_in, [0, 0])[0] - squeeze
            if held > 0:
                self.run(c.HoldWithdrawal(user, paid_in, held, f"squeeze{self.seq}", 0, self.ts))
        if quote:
            command = c.PlaceOrder(
                user,
                market,
                side,
                "MARKET",
                quote_quantity=quote,
                time_in_force="IOC" if tif == "FOK" else tif,
                stp=stp,
            )
        else:
            command = c.PlaceOrder(user, market, side, "MARKET", qty, time_in_force=tif, stp=stp)
        mode = stp or self.engine.markets[market].default_stp
        levels = self.walkable(market, side, user, mode)
        need = self.market_need(market, side, qty, quote, levels)
        available = self.engine.balances.get(user, {}).get(paid_in, [0, 0])[0]
        result = self.run(command)
        if any(type(e) is ev.OrderUpdated and e.reason == "GTD_EXPIRED" for e in result.events):
            return  # expiries changed the book the model read
        if quote and not levels:
            assert result.code in ("NO_LIQUIDITY", "MARKET_HALTED", "MARKET_CANCEL_ONLY",
                                   "USER_FROZEN", "NOTIONAL_TOO_SMALL"), result  # fmt: skip
        if result.status == "ACCEPTED":
            assert need <= available, (command, need, available)
            assert not (quote and not levels)
            self.check_market_outcome(command, result, need)
        elif result.code == "INSUFFICIENT_BALANCE":
            assert need > available or available == 0, (command, need, available)
        elif result.code == "NO_LIQUIDITY":
            assert quote and not levels

    def walkable(self, market: str, side: str, user: int, stp: str) -> list[tuple[int, int]]:
        """(price, lots) a market order may trade with, best first, within the band:
        each maker's whole remainder, without the user's own makers when STP is on
        (EXPIRE_MAKER removes them; the other modes stop or cut the taker, so this is
        what it may take at most)."""
        book = self.engine.markets[market]
        opposite = book.asks if side == "BUY" else book.bids
        bps = self.units[market][4]
        best = opposite.best()
        levels = []
        for price in opposite.prices_best_first():
            if side == "BUY" and price > best * (10_000 + bps) // 10_000:
                break
            if side == "SELL" and price < ceil_div(best * (10_000 - bps), 10_000):
                break
            lots = sum(
                o.quantity - o.filled
                for o in opposite.live_orders(price)
                if o.user != user or stp == "NONE"
            )
            levels.append((price, lots))
        return levels

    def market_need(
        self, market: str, side: str, qty: int, quote: int, levels: list[tuple[int, int]]
    ) -> int:
        """What the order must find available: the quote amount of a buy by quote; the
        base of a sell by quantity; the quote a buy by quantity pays walking ``levels``;
        the base a sell by quote sells walking them (whole lots, up to the amount)."""
        _base, _quote, lot, unit, _bps, _fees = self.units[market]
        if quote and side == "BUY":
            return quote
        if side == "SELL" and not quote:
            return qty * lot
        if side == "BUY":
            cost = 0
            for price, lots in levels:
                take = min(qty, lots)
                qty -= take
                cost += take * price * unit
            return cost
        sold = 0
        for price, lots in levels:
            fits = quote // (price * unit)
            take = min(fits, lots)
            sold += take
            quote -= take * price * unit
            if take == fits:
                break
        return sold * lot

    def check_market_outcome(self, command: c.PlaceOrder, result: Any, need: int) -> None:
        """A MARKET order placed directly is never cut short by its funds any more; a
        sell by quote amount sells at most what the model locked."""
        (final,) = [
            e for e in result.events
            if type(e) is ev.OrderUpdated and e.order_id == result.order_id
            and e.status in TERMINAL_STATUSES
        ]  # fmt: skip
        if not command.quote_quantity:
            assert final.reason != "FUNDS_EXHAUSTED", final
        if command.quote_quantity and command.side == "SELL":
            lot = self.units[command.market][2]
            assert final.filled * lot <= need, (final, need)

    @rule(
        user=st.sampled_from(USERS),
        market=st.sampled_from(MARKETS),
        side=SIDES,
        offset=st.integers(-4, 4),
        qty=st.integers(1, 10),
    )
    def limit_maker(self, user: int, market: str, side: str, offset: int, qty: int) -> None:
        self.run(c.PlaceOrder(user, market, side, "LIMIT_MAKER", qty, self.price(market, offset)))

    @rule(
        user=st.sampled_from(USERS),
        market=st.sampled_from(MARKETS),
        side=SIDES,
        otype=st.sampled_from(["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]),
        stop_offset=st.integers(-5, 5),
        price_offset=st.integers(-6, 6),
        qty=st.integers(1, 8),
        tif=st.sampled_from(["GTC", "GTC", "GTD", "IOC", "FOK"]),
        life=st.integers(1, 400),
        stp=STP,
        quote=st.sampled_from([0, 0, 0, 20_000]),
    )
    def stop(
        self,
        user: int,
        market: str,
        side: str,
        otype: str,
        stop_offset: int,
        price_offset: int,
        qty: int,
        tif: str,
        life: int,
        stp: str | None,
        quote: int,
    ) -> None:
        """A stop of any type; now and then a stop-market buy by quote amount, which the
        engine refuses (quote amounts are for MARKET orders only)."""
        limit_type = otype.endswith("LIMIT")
        if tif == "GTD" and not limit_type:
            tif = "GTC"
        by_quote = quote and side == "BUY" and not limit_type
        result = self.run(
            c.PlaceOrder(
                user,
                market,
                side,
                otype,
                0 if by_quote else qty,
                self.price(market, price_offset) if limit_type else 0,
                tif,
                quote_quantity=quote if by_quote else 0,
                stop_price=self.price(market, stop_offset),
                expire_at=self.ts + life if tif == "GTD" else 0,
                stp=stp,
            )
        )
        if by_quote:
            assert result.status == "REJECTED"

    @rule(pick=st.integers(0, 10**6), by_cid=st.booleans(), foreign=st.integers(0, 5))
    def cancel(self, pick: int, by_cid: bool, foreign: int) -> None:
        """Cancel an order by id or client id; now and then as the wrong user."""
        stranger = USERS[pick % len(USERS)]
        if by_cid and self.cids:
            user, cid = self.cids[pick % len(self.cids)]
            self.run(c.CancelOrder(user if foreign else stranger, client_order_id=cid))
            return
        oid = self.pick_order(pick)
        info = self.orders.get(oid)
        user = info["user"] if info and foreign else stranger
        self.run(c.CancelOrder(user, order_id=oid))

    @rule(
        pick=st.integers(0, 10**6),
        dq=st.integers(-5, 5),
        dp=st.integers(-3, 3),
        keep=st.sampled_from([False, False, True]),
    )
    def amend(self, pick: int, dq: int, dp: int, keep: bool) -> None:
        """Amends, some asking to keep priority (decrease only). Modelled: a keep-priority
        amend never raises the quantity or moves the price; on a CANCEL_ONLY market only
        an in-place decrease is taken, and it is not refused for the market's status."""
        oid = self.pick_order(pick, closed_too=False)
        info = self.orders.get(oid)
        if info is None:
            self.run(c.AmendOrder(USERS[pick % len(USERS)], order_id=oid, quantity=3))
            return
        quantity = max(0, info["quantity"] + dq) if dq else 0
        price = max(1, info["price"] + dp) if dp else 0
        if keep and dp != 3:
            price = 0  # mostly what the keep-priority amend is for: a quantity only
        open_order = self.engine.orders.get(oid)  # (DECREMENT may have cut it since)
        before_qty = open_order.quantity if open_order else info["quantity"]
        before_price = open_order.price if open_order else info["price"]
        market = self.engine.markets[info["market"]]
        status = trading_status(self.engine, market)
        result = self.run(
            c.AmendOrder(info["user"], order_id=oid, quantity=quantity, price=price,
                         keep_priority=keep)
        )  # fmt: skip
        decrease = (price in (0, before_price)) and 0 < quantity < before_qty
        if keep and quantity > before_qty and result.code not in (
            "UNKNOWN_ORDER", "MARKET_HALTED", "MARKET_CANCEL_ONLY", "USER_FROZEN",
            "ORDER_NOT_AMENDABLE", "INVALID_AMEND",
        ):  # fmt: skip
            assert result.code == "AMEND_QUANTITY_INCREASE", result
        if status == "CANCEL_ONLY" and decrease:
            assert result.code != "MARKET_CANCEL_ONLY", result
        if result.status != "ACCEPTED":
            return
        (amended,) = [e for e in result.events if type(e) is ev.OrderAmended]
        if keep or status == "CANCEL_ONLY":
            assert amended.kept_priority and amended.price == before_price, amended
            assert amended.quantity < before_qty, amended

    @rule(user=st.sampled_from(USERS), market=st.sampled_from(["", "", *MARKETS]))
    def cancel_all(self, user: int, market: str) -> None:
        self.run(c.CancelAll(user, market))

    # ------------------------------------------------------------------ rules: the rest

    @rule(advance=st.integers(0, 300))
    def tick(self, advance: int) -> None:
        self.ts += advance
        self.run(c.Tick())

    @rule(jump=st.sampled_from([WINDOW // 4, WINDOW // 2, WINDOW, WINDOW + 1, 2 * WINDOW]))
    def time_jump(self, jump: int) -> None:
        """Days pass: deposit ids and finished withdrawals leave the window."""
        self.ts += jump
        self.run(c.Tick())

    def issued(self, offset: int | None) -> int:
        return 0 if offset is None else self.ts + offset

    @rule(
        what=st.sampled_from(
            ["deposit", "deposit", "again", "again", "again_now", "hold", "hold", "rehold",
             "settle", "release"]
        ),
        user=st.sampled_from(USERS),
        asset=st.sampled_from(["AAA", "BBB", "QQQ", "QQQ", "ZZZ"]),
        amount=st.integers(-1, 400_000),
        fee=st.integers(0, 50),
        offset=ISSUED,
    )  # fmt: skip
    def money(
        self, what: str, user: int, asset: str, amount: int, fee: int, offset: int | None
    ) -> None:
        """Deposits (some repeating an external id), withdrawal holds (some repeated),
        settles, releases; each issued now, in the past or ahead of the clock."""
        sent = sorted(self.deposits)
        if what == "again" and sent:
            # The same command once more, as a retrying submitter sends it: with the
            # issued_at it had (resolved, for one sent with 0).
            first = self.deposits[sent[amount % len(sent)]]
            issued = first.issued_at or self.first_ts[first.external_id]
            self.deposit(msgspec.structs.replace(first, issued_at=issued))
        elif what == "again_now" and sent:
            # A repeat issued now, of an id the window still holds: a duplicate.
            external_id = sent[amount % len(sent)]
            if self.credited.get(external_id, 0) >= self.ts:
                self.deposit(c.CreditDeposit(user, asset, amount, external_id, self.ts))
        elif what in ("deposit", "again", "again_now"):
            external_id = f"d{self.seq}"
            self.first_ts[external_id] = self.ts
            self.deposit(c.CreditDeposit(user, asset, amount, external_id, self.issued(offset)))
        elif what == "rehold" and self.holds:
            wids = sorted(self.holds)
            first_hold = self.holds[wids[amount % len(wids)]]
            self.rehold(first_hold)
        elif what in ("hold", "rehold"):
            wid = f"w{self.seq}"
            issued = self.issued(offset)
            hold = c.HoldWithdrawal(user, asset, amount // 2, wid, fee, issued or self.ts)
            self.holds[wid] = hold
            self.run(msgspec.structs.replace(hold, issued_at=issued))
        else:
            ids = self.withdrawal_ids
            wid = ids[amount % len(ids)] if ids else "w?"
            self.run(c.SettleWithdrawal(wid) if what == "settle" else c.ReleaseWithdrawal(wid))

    def rehold(self, hold: c.HoldWithdrawal) -> None:
        """A hold sent again as it was: never a second hold."""
        wid = hold.withdrawal_id
        held_before = wid in self.held
        result = self.run(hold)
        if not held_before:
            return  # it was refused the first time: any answer goes, even ACCEPTED now
        remembered = wid not in self.finished or self.ts <= self.held[wid]
        expected = "DUPLICATE_WITHDRAWAL" if remembered else "STALE_WITHDRAWAL"
        assert (result.status, result.code) == ("REJECTED", expected), (hold, self.ts, result)

    @rule(
        what=st.sampled_from(["freeze", "unfreeze", "unfreeze", "status", "kill", "tier"]),
        user=st.sampled_from(USERS),
        flag=st.booleans(),
        market=st.sampled_from(MARKETS),
        status=st.sampled_from(["TRADING", "TRADING", "HALTED", "CANCEL_ONLY"]),
        kill=st.sampled_from(["OFF", "OFF", "CANCEL_ONLY", "HALT"]),
        tier=st.integers(0, 3),
    )
    def admin(
        self, what: str, user: int, flag: bool, market: str, status: str, kill: str, tier: int
    ) -> None:
        """Occasional freezes, market status changes, kill switch and fee tiers."""
        if what == "freeze":
            self.run(c.FreezeUser(user, cancel_orders=flag))
        elif what == "unfreeze":
            self.run(c.UnfreezeUser(user))
        elif what == "status":
            self.run(c.SetMarketStatus(market, status))
        elif what == "kill":
            self.run(c.SetKillSwitch(kill))
        else:
            self.run(c.SetUserFeeTier(user, tier))

    @precondition(lambda self: self.mirror is None)
    @rule()
    def start_mirror(self) -> None:
        """From here on, a restored snapshot runs every command alongside."""
        self.mirror = Engine.restore(self.engine.snapshot())
        assert self.mirror.state_hash() == self.engine.state_hash()
        self.mirror.check_invariants()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def snapshot_round_trips(self) -> None:
        if not hasattr(self, "engine"):
            return
        data = self.engine.snapshot()
        assert Engine.restore(data).snapshot() == data

    def teardown(self) -> None:
        if not hasattr(self, "engine"):
            return
        fresh = Engine()
        for (seq, ts, command), encoded in zip(self.log, self.results, strict=True):
            assert msgspec.msgpack.encode(fresh.apply(seq, ts, command)) == encoded, command
        assert fresh.state_hash() == self.engine.state_hash()


ExchangeMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestExchange = ExchangeMachine.TestCase
