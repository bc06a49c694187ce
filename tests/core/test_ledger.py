"""The ledger: reservations, fills, fees and tiers, deposits, withdrawals, and rebuilding
every account from the event stream."""

from __future__ import annotations

from conftest import (
    BTC,
    PPM,
    USDT,
    Exchange,
    busy_scenario,
    ceil_div,
    engine_accounts,
    of_type,
    post,
    trade_legs,
)

from mercato.core import commands as c
from mercato.core import events as ev
from mercato.core.engine import MAX_SUPPLY
from mercato.core.ledger import account_balances, postings
from mercato.core.model import (
    AVAILABLE,
    DEPOSIT,
    EXTERNAL_DEPOSITS,
    EXTERNAL_WITHDRAWALS,
    FEE,
    FEES,
    LOCKED,
    RELEASE,
    RESERVE,
    TRADE,
    WITHDRAWAL,
)


def test_trade_carries_its_four_ledger_legs(funded: Exchange) -> None:
    ex = funded
    ex.sell(1, "0.2", "30000")
    result = ex.buy(2, "0.2", "30000")
    (trade,) = of_type(result, ev.Trade)
    tid = trade.trade_id
    expected = [
        ev.Transfer("USDT", 6_000 * USDT, LOCKED, 2, AVAILABLE, 1, TRADE, tid),
        ev.Transfer("BTC", 20_000_000, LOCKED, 1, AVAILABLE, 2, TRADE, tid),
        ev.Transfer("BTC", 40_000, AVAILABLE, 2, FEES, 0, FEE, tid),  # 0.2 % of 0.2 BTC
        ev.Transfer("USDT", 6 * USDT, AVAILABLE, 1, FEES, 0, FEE, tid),  # 0.1 % of 6000
    ]
    assert trade_legs(trade, "BTC", "USDT", 100_000) == expected
    assert postings(trade) == expected


def test_events_rebuild_every_account() -> None:
    """Transfers plus the four legs of each Trade (worked out here, independently of the
    engine) rebuild every account; so does ``ledger.account_balances``."""
    ex = busy_scenario()
    markets = {
        m: (s.spec.base, s.spec.quote, s.rules.lot_atoms) for m, s in ex.engine.markets.items()
    }
    events = ex.all_events()
    accounts: dict[tuple[int, int, str], int] = {}
    for event in events:
        if type(event) is ev.Transfer:
            post(accounts, event)
        elif type(event) is ev.Trade:
            for leg in trade_legs(event, *markets[event.market]):
                post(accounts, leg)
    assert accounts == engine_accounts(ex.engine)
    rebuilt = {k: v for k, v in account_balances(events).items() if v}
    assert rebuilt == engine_accounts(ex.engine)


def test_total_balances_sum_to_zero_and_match_the_accounts() -> None:
    ex = busy_scenario()
    report = ex.engine.total_balances()
    accounts = engine_accounts(ex.engine)
    for asset, row in report.items():
        assert row["sum"] == 0
        assert row["users_available"] == sum(
            v for (k, _u, a), v in accounts.items() if k == AVAILABLE and a == asset
        )
        assert row["users_locked"] == sum(
            v for (k, _u, a), v in accounts.items() if k == LOCKED and a == asset
        )
        assert row["fees"] == accounts.get((FEES, 0, asset), 0)
        assert row["external_withdrawals"] == accounts.get((EXTERNAL_WITHDRAWALS, 0, asset), 0)
    assert report["USDT"]["external_withdrawals"] == 997 * USDT
    assert report["BTC"]["external_deposits"] == -20 * BTC


# ---------------------------------------------------------------------------- fees and tiers


def test_fee_tiers_apply_to_maker_and_taker(funded: Exchange) -> None:
    ex = funded
    ex.ok(c.SetFeeTier(1, "0.0005", "0.0007"))
    ex.ok(c.SetFeeTier(2, "0", "0.000007"))
    ex.ok(c.SetUserFeeTier(1, 1))
    ex.ok(c.SetUserFeeTier(2, 2))
    # Maker user 1 (tier 1) sells 0.003 BTC at 30000.01; taker user 2 (tier 2) buys.
    ex.sell(1, "0.003", "30000.01")
    result = ex.buy(2, "0.003", "30000.01")
    (trade,) = of_type(result, ev.Trade)
    quote = 3_000_001 * 3 * 10  # 90.00003 USDT
    assert trade.quote_amount == quote
    assert trade.taker_fee == ceil_div(300_000 * 7, PPM) == 3  # 2.1 atoms, rounded up
    assert trade.maker_fee == ceil_div(quote * 500, PPM) == 45_001  # 45000.015 rounded up
    assert ex.engine.fees == {"BTC": 3, "USDT": 45_001}
    assert ex.bal(2, "BTC") == (10 * BTC + 300_000 - 3, 0)
    assert ex.bal(1, "USDT") == (1_000_000 * USDT + quote - 45_001, 0)


def test_tier_zero_means_market_rates_and_tiers_can_change(funded: Exchange) -> None:
    ex = funded
    ex.ok(c.SetFeeTier(1, "0", "0"))
    ex.ok(c.SetUserFeeTier(2, 1))
    ex.sell(1, "0.1", "30000")
    result = ex.buy(2, "0.05", "30000")
    (trade,) = of_type(result, ev.Trade)
    assert trade.taker_fee == 0
    assert trade.maker_fee == ceil_div(1_500 * USDT * 1000, PPM)  # user 1: market maker rate
    assert [t for t in of_type(result, ev.Transfer) if t.reason == FEE and t.debit_user == 2] == []
    ex.ok(c.SetFeeTier(1, "0", "0.01"))  # redefining a tier applies to its users at once
    (trade,) = of_type(ex.buy(2, "0.01", "30000"), ev.Trade)
    assert trade.taker_fee == ceil_div(1_000_000 * 10_000, PPM) == 10_000
    ex.ok(c.SetUserFeeTier(2, 0))
    (trade,) = of_type(ex.buy(2, "0.01", "30000"), ev.Trade)
    assert trade.taker_fee == ceil_div(1_000_000 * 2000, PPM) == 2_000


def test_fee_tier_validation(funded: Exchange) -> None:
    ex = funded
    ex.reject(c.SetFeeTier(0, "0.001", "0.001"), "INVALID_FEE_TIER")
    ex.reject(c.SetFeeTier(1, "0.0000001", "0.001"), "INVALID_FEE_TIER")
    ex.reject(c.SetFeeTier(1, "0.001", "1"), "INVALID_FEE_TIER")
    ex.reject(c.SetFeeTier(1, "-0.001", "0.001"), "INVALID_FEE_TIER")
    ex.reject(c.SetUserFeeTier(1, 3), "INVALID_FEE_TIER")
    result = ex.ok(c.SetFeeTier(3, "0.0001", "0.0002"))
    assert result.events == [ev.FeeTierSet(3, 100, 200)]
    assert ex.ok(c.SetUserFeeTier(1, 3)).events == [ev.UserFeeTierSet(1, 3)]


def test_self_trade_pays_both_fees(funded: Exchange) -> None:
    ex = funded
    ex.sell(1, "0.1", "30000")
    (trade,) = of_type(ex.buy(1, "0.1", "30000", stp="NONE"), ev.Trade)
    assert (trade.maker_fee, trade.taker_fee) == (3 * USDT, 20_000)
    assert ex.engine.fees == {"USDT": 3 * USDT, "BTC": 20_000}


# ---------------------------------------------------------------------------- deposits


def test_deposit_credits_available(ex: Exchange) -> None:
    result = ex.ok(c.CreditDeposit(7, "BTC", 123_456_789, "tx-1"))
    assert result.events == [
        ev.DepositCredited(7, "BTC", 123_456_789, "tx-1"),
        ev.Transfer("BTC", 123_456_789, EXTERNAL_DEPOSITS, 0, AVAILABLE, 7, DEPOSIT, 0),
    ]
    assert ex.bal(7, "BTC") == (123_456_789, 0)
    assert ex.engine.external_deposits == {"BTC": -123_456_789}


def test_repeated_deposit_is_a_duplicate_and_changes_nothing(ex: Exchange) -> None:
    from conftest import state_without_clock

    ex.ok(c.CreditDeposit(7, "BTC", 100, "tx-1"))
    before = state_without_clock(ex.engine)
    for repeat in (
        c.CreditDeposit(7, "BTC", 100, "tx-1"),
        c.CreditDeposit(8, "USDT", 5, "tx-1"),
    ):
        result = ex.apply(repeat)
        assert (result.status, result.code, result.events) == ("DUPLICATE", "DUPLICATE_DEPOSIT", [])
        assert state_without_clock(ex.engine) == before
    assert ex.bal(7, "BTC") == (100, 0)
    assert ex.bal(8, "USDT") == (0, 0)


def test_deposit_validation(ex: Exchange) -> None:
    ex.reject(c.CreditDeposit(1, "DOGE", 100, "a"), "UNKNOWN_ASSET")
    ex.reject(c.CreditDeposit(1, "BTC", 0, "a"), "INVALID_AMOUNT")
    ex.reject(c.CreditDeposit(1, "BTC", -5, "a"), "INVALID_AMOUNT")
    ex.reject(c.CreditDeposit(1, "BTC", 5, ""), "INVALID_DEPOSIT")
    # A rejected deposit does not burn its external id.
    ex.ok(c.CreditDeposit(1, "BTC", 5, "a"))


def test_supply_limit(ex: Exchange) -> None:
    ex.ok(c.CreditDeposit(1, "BTC", MAX_SUPPLY - 10, "big"))
    ex.reject(c.CreditDeposit(2, "BTC", 11, "one-too-many"), "SUPPLY_LIMIT")
    ex.ok(c.CreditDeposit(2, "BTC", 10, "exactly"))
    ex.reject(c.CreditDeposit(2, "BTC", 1, "more"), "SUPPLY_LIMIT")
    ex.ok(c.CreditDeposit(2, "USDT", MAX_SUPPLY, "other-asset"))
    assert ex.engine.total_balances()["BTC"]["external_deposits"] == -MAX_SUPPLY
    # Withdrawing does not make room: the limit is on everything ever deposited.
    ex.ok(c.HoldWithdrawal(1, "BTC", 1_000, "w"))
    ex.ok(c.SettleWithdrawal("w"))
    ex.reject(c.CreditDeposit(2, "BTC", 1, "after-withdrawal"), "SUPPLY_LIMIT")


# ---------------------------------------------------------------------------- withdrawals


def test_withdrawal_hold_and_settle(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    result = ex.ok(c.HoldWithdrawal(1, "USDT", 600 * USDT, "w1", fee=2 * USDT))
    assert result.events == [
        ev.WithdrawalHeld("w1", 1, "USDT", 600 * USDT, 2 * USDT),
        ev.Transfer("USDT", 600 * USDT, AVAILABLE, 1, LOCKED, 1, RESERVE, 0),
    ]
    assert ex.bal(1, "USDT") == (400 * USDT, 600 * USDT)
    ex.engine.check_invariants()
    result = ex.ok(c.SettleWithdrawal("w1"))
    assert result.events == [
        ev.WithdrawalSettled("w1", 1, "USDT", 600 * USDT, 2 * USDT),
        ev.Transfer("USDT", 598 * USDT, LOCKED, 1, EXTERNAL_WITHDRAWALS, 0, WITHDRAWAL, 0),
        ev.Transfer("USDT", 2 * USDT, LOCKED, 1, FEES, 0, FEE, 0),
    ]
    assert ex.bal(1, "USDT") == (400 * USDT, 0)
    assert ex.engine.external_withdrawals == {"USDT": 598 * USDT}
    assert ex.engine.fees == {"USDT": 2 * USDT}
    assert ex.engine.total_balances()["USDT"]["sum"] == 0
    ex.reject(c.SettleWithdrawal("w1"), "UNKNOWN_WITHDRAWAL")
    ex.reject(c.ReleaseWithdrawal("w1"), "UNKNOWN_WITHDRAWAL")
    ex.reject(c.HoldWithdrawal(1, "USDT", 10 * USDT, "w1"), "DUPLICATE_WITHDRAWAL")


def test_withdrawal_without_fee_settles_in_one_transfer(ex: Exchange) -> None:
    ex.deposit(1, "BTC", BTC)
    ex.ok(c.HoldWithdrawal(1, "BTC", BTC, "w"))
    result = ex.ok(c.SettleWithdrawal("w"))
    assert of_type(result, ev.Transfer) == [
        ev.Transfer("BTC", BTC, LOCKED, 1, EXTERNAL_WITHDRAWALS, 0, WITHDRAWAL, 0)
    ]
    assert ex.bal(1, "BTC") == (0, 0)
    assert ex.engine.fees == {}


def test_withdrawal_release(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    ex.ok(c.HoldWithdrawal(1, "USDT", 600 * USDT, "w1", fee=2 * USDT))
    result = ex.ok(c.ReleaseWithdrawal("w1"))
    assert result.events == [
        ev.WithdrawalReleased("w1", 1, "USDT", 600 * USDT),
        ev.Transfer("USDT", 600 * USDT, LOCKED, 1, AVAILABLE, 1, RELEASE, 0),
    ]
    assert ex.bal(1, "USDT") == (1_000 * USDT, 0)
    assert ex.engine.fees == {} and ex.engine.external_withdrawals == {}
    ex.reject(c.ReleaseWithdrawal("w1"), "UNKNOWN_WITHDRAWAL")
    ex.reject(c.SettleWithdrawal("w1"), "UNKNOWN_WITHDRAWAL")
    ex.reject(c.HoldWithdrawal(1, "USDT", 600 * USDT, "w1"), "DUPLICATE_WITHDRAWAL")


def test_withdrawal_validation(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    ex.buy(1, "0.03", "30000")  # locks 900 USDT
    ex.reject(c.HoldWithdrawal(1, "USDT", 101 * USDT, "w"), "INSUFFICIENT_BALANCE")
    ex.reject(c.HoldWithdrawal(2, "USDT", 1, "w"), "INSUFFICIENT_BALANCE")
    ex.reject(c.HoldWithdrawal(1, "DOGE", 1, "w"), "UNKNOWN_ASSET")
    ex.reject(c.HoldWithdrawal(1, "USDT", 0, "w"), "INVALID_AMOUNT")
    ex.reject(c.HoldWithdrawal(1, "USDT", 10, "w", fee=10), "INVALID_AMOUNT")
    ex.reject(c.HoldWithdrawal(1, "USDT", 10, "w", fee=-1), "INVALID_AMOUNT")
    ex.reject(c.HoldWithdrawal(1, "USDT", 10, ""), "INVALID_WITHDRAWAL")
    ex.reject(c.SettleWithdrawal("nope"), "UNKNOWN_WITHDRAWAL")
    ex.reject(c.ReleaseWithdrawal("nope"), "UNKNOWN_WITHDRAWAL")
    ex.ok(c.HoldWithdrawal(1, "USDT", 100 * USDT, "w"))
    ex.reject(c.HoldWithdrawal(1, "USDT", 1, "w"), "DUPLICATE_WITHDRAWAL")
    assert ex.bal(1, "USDT") == (0, 1_000 * USDT)
    ex.engine.check_invariants()
