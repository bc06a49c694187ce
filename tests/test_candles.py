"""Candle folding: alignment, OHLCV arithmetic, and finer candles merging into coarser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mercato.core.candles import INTERVALS, Candle, fold, merge, open_time
from mercato.core.events import Trade

DAY = INTERVALS["1d"]


def trade(trade_id: int, ts: int, price: int, quantity: int = 1) -> Trade:
    return Trade(trade_id, "BTC-USDT", "BTC", "USDT", price, quantity, quantity * 10,
                 quantity * price * 100, "BUY", 1, 2, 1, 2, 0, 0, ts)  # fmt: skip


def fold_all(trades: list[Trade], interval: str) -> list[Candle]:
    candles: list[Candle] = []
    for t in trades:
        folded = fold(candles[-1] if candles else None, t, interval)
        if candles and candles[-1].open_time == folded.open_time:
            candles[-1] = folded
        else:
            candles.append(folded)
    return candles


def test_candles_align_to_utc_interval_boundaries() -> None:
    ts = 1_700_000_123_456  # 2023-11-14T22:15:23.456Z
    assert open_time(ts, "1m") == 1_700_000_100_000
    assert open_time(ts, "4h") % (4 * 3_600_000) == 0 and open_time(ts, "4h") <= ts
    assert open_time(ts, "1d") == ts - ts % DAY  # midnight UTC
    assert ts - open_time(ts, "1h") < 3_600_000


def test_fold_tracks_open_high_low_close_and_volumes() -> None:
    base = 1_700_000_100_000
    candle = None
    for index, price in enumerate([50, 70, 40, 60]):
        candle = fold(candle, trade(index + 1, base + index * 1000, price, 2), "1m")
    assert candle == Candle("BTC-USDT", "1m", base, 50, 70, 40, 60, 80, 44_000, 4, 1, 4)
    assert candle.close_time == base + 59_999
    later = fold(candle, trade(5, base + 60_000, 55), "1m")  # next minute: a new candle
    assert (later.open_time, later.open, later.trades) == (base + 60_000, 55, 1)


@given(st.lists(st.tuples(st.integers(0, 3 * DAY), st.integers(1, 10**6),
                          st.integers(1, 1000)), min_size=1, max_size=60))  # fmt: skip
def test_merging_1m_candles_equals_folding_trades_directly(
    rows: list[tuple[int, int, int]],
) -> None:
    trades = [trade(i + 1, ts, price, qty) for i, (ts, price, qty) in enumerate(sorted(rows))]
    for interval in ("5m", "1h", "4h", "1d"):
        direct = fold_all(trades, interval)
        minutes = fold_all(trades, "1m")
        assert merge(minutes, interval) == direct
        assert sum(c.volume for c in direct) == sum(t.base_amount for t in trades)
