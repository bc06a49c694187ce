"""The Binance market data shapes without a server: aggregation, fixed-point strings of a
market whose tick is finer than its quote asset, the rate limits and custody networks
taken from the configuration, and the weights."""

from __future__ import annotations

from mercato.api.binance.market_routes import _networks, _rate_limits
from mercato.config import Config, CustodyAssetConfig, CustodyChainConfig, CustodyConfig
from mercato.config import RateBudget as Budget
from mercato.config import RateLimitsConfig as Limits
from mercato.core.events import Trade
from mercato.core.model import Asset, MarketRules, MarketSpec
from mercato.wire.binance_market import (
    WEIGHTS,
    BinanceFormat,
    aggregate_trades,
    depth_weight,
    ticker_weight,
)


def trade(trade_id: int, price: int, taker_order: int, side: str = "BUY") -> Trade:
    return Trade(trade_id, "BTC-USDT", "BTC", "USDT", price, 10, 10_000, price * 10, side,
                 1, taker_order, 0, 0, 0, 0, 1000 + trade_id)  # fmt: skip


def test_aggregates_are_runs_of_one_taker_at_one_price() -> None:
    rules = MarketRules.derive(
        MarketSpec("BTC-USDT", "BTC", "USDT", "0.01", "0.00001", "0.00001", "9000", "5"),
        Asset("BTC", 8), Asset("USDT", 8),
    )  # fmt: skip
    fmt = BinanceFormat(rules, 8, 8)
    trades = [trade(1, 100, 7), trade(2, 100, 7), trade(3, 101, 7), trade(4, 101, 8, "SELL")]
    assert aggregate_trades(fmt, trades) == [
        {"a": 1, "p": "1.00000000", "q": "0.00020000", "f": 1, "l": 2, "T": 1001, "m": False,
         "M": True},
        {"a": 3, "p": "1.01000000", "q": "0.00010000", "f": 3, "l": 3, "T": 1003, "m": False,
         "M": True},
        {"a": 4, "p": "1.01000000", "q": "0.00010000", "f": 4, "l": 4, "T": 1004, "m": True,
         "M": True},
    ]  # fmt: skip


def test_a_tick_finer_than_the_quote_asset_keeps_its_places() -> None:
    # A tick of 0.0000001 with whole lots of 100: tick x step is one atom of a 5-decimal quote.
    rules = MarketRules.derive(
        MarketSpec("X-Q", "X", "Q", "0.0000001", "100", "100", "1000000", "1"),
        Asset("X", 2), Asset("Q", 5),
    )  # fmt: skip
    fmt = BinanceFormat(rules, 2, 5)
    assert (fmt.price(12345), fmt.qty(3), fmt.quote(150_000)) == (
        "0.0012345", "300.00", "1.50000")  # fmt: skip
    assert fmt.average(200, 246_914) == "1.2345700"  # 2.46914 Q for 2 X, half-even


def test_rate_limits_follow_the_budgets() -> None:
    config = Config(rate_limits=Limits(ip=Budget(per_second=100, burst=200),
                                       orders=Budget(per_second=20, burst=100)))  # fmt: skip
    assert [(r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"])
            for r in _rate_limits(config)] == [
        ("REQUEST_WEIGHT", "MINUTE", 1, 6000), ("ORDERS", "SECOND", 10, 200),
        ("ORDERS", "DAY", 1, 1_728_000)]  # fmt: skip
    assert _rate_limits(Config(rate_limits=Limits(enabled=False))) == []


def test_networks_come_from_custody_configuration() -> None:
    custody = CustodyConfig(
        chains=[CustodyChainConfig(name="ethereum", kind="evm", rpc_url="http://x",
                                   confirmations=12)],
        assets=[CustodyAssetConfig(symbol="USDT", chain="ethereum", chain_decimals=6,
                                   contract="0xdac1", withdrawal_fee="1", min_withdrawal="10",
                                   min_deposit="0.5"),
                CustodyAssetConfig(symbol="ETH", chain="ethereum", chain_decimals=18)],
    )  # fmt: skip
    networks = _networks(Config(custody=custody), "USDT")
    assert networks == [{
        "coin": "USDT", "depositDust": "0.5", "depositEnable": True, "isDefault": True,
        "minConfirm": 12, "name": "ethereum", "network": "ETHEREUM", "withdrawEnable": True,
        "withdrawFee": "1", "withdrawMax": "9999999999", "withdrawMin": "10",
        "contractAddress": "0xdac1",
    }]  # fmt: skip
    assert _networks(Config(custody=custody), "ETH")[0]["contractAddress"] == ""
    assert _networks(Config(custody=custody), "BTC") == []


def test_weights_are_binances() -> None:
    assert (WEIGHTS["/api/v3/exchangeInfo"], WEIGHTS["/api/v3/trades"]) == (20, 25)
    assert [depth_weight(n) for n in (1, 100, 101, 500, 1000, 5000)] == [5, 5, 25, 25, 50, 250]
    assert ticker_weight("/api/v3/ticker/24hr", None) == 80
    assert ticker_weight("/api/v3/ticker/24hr", 21) == 40
    assert ticker_weight("/api/v3/ticker", 60) == 200
    assert ticker_weight("/api/v3/ticker/price", None) == 4
