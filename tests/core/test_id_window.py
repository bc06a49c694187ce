"""Exactly-once deposits and withdrawals in bounded memory: the id windows.

A credited deposit id (a finished withdrawal id) is remembered until its command's
issued_at + DEPOSIT_ID_WINDOW_MS; a command issued outside the window around the
engine's clock is refused as STALE_DEPOSIT (STALE_WITHDRAWAL). See docs/custody.md,
"Exactly-once credits".
"""

from __future__ import annotations

import msgspec
import pytest
from conftest import BTC, START_TS, USDT, Exchange, make_exchange, state_without_clock

from mercato.core import commands as c
from mercato.core.codec import decode_record, encode_record
from mercato.core.engine import Engine
from mercato.core.model import DEPOSIT_ID_WINDOW_MS as WINDOW

T = START_TS


def credit(ex: Exchange, external_id: str, issued_at: int, ts: int, amount: int = 5) -> str:
    """Submit a BTC deposit for user 1 at ``ts``; its result status (or code)."""
    result = ex.apply(c.CreditDeposit(1, "BTC", amount, external_id, issued_at), ts)
    return result.code if result.status == "REJECTED" else result.status


# ---------------------------------------------------------------------------- deposits


def test_a_repeat_inside_the_window_is_a_duplicate_up_to_its_last_millisecond(
    ex: Exchange,
) -> None:
    assert credit(ex, "tx", T, T) == "ACCEPTED"
    before = state_without_clock(ex.engine)
    for ts in (T + 1, T + WINDOW // 2, T + WINDOW):
        result = ex.apply(c.CreditDeposit(2, "USDT", 7, "tx", T), ts)
        assert (result.status, result.code, result.events) == ("DUPLICATE", "DUPLICATE_DEPOSIT", [])
        # Even with another issued_at: the id decides, and it is remembered.
        assert credit(ex, "tx", ts, ts) == "DUPLICATE"
        assert state_without_clock(ex.engine) == before
    assert ex.bal(1, "BTC") == (5, 0)
    assert ex.engine.deposit_ids.forget_at == {"tx": T + WINDOW}


def test_after_the_window_the_id_is_forgotten_and_a_replay_is_stale(ex: Exchange) -> None:
    assert credit(ex, "tx", T, T) == "ACCEPTED"
    ex.ok(c.Tick(), ts=T + WINDOW + 1)
    assert "tx" in ex.engine.deposit_ids  # only deposits prune it...
    assert ex.engine.canonical_state()["deposit_ids"] == []  # ...but it is gone already
    ex.reject(c.CreditDeposit(1, "BTC", 5, "tx", T), "STALE_DEPOSIT")
    assert "tx" not in ex.engine.deposit_ids and ex.engine.deposit_ids.heap == []
    assert ex.bal(1, "BTC") == (5, 0)
    # Beyond the window the store is the authority: a credit freshly issued for a
    # forgotten id is a new credit as far as the engine can tell.
    assert credit(ex, "tx", T + WINDOW + 1, T + WINDOW + 1) == "ACCEPTED"
    assert ex.bal(1, "BTC") == (10, 0)


def test_issued_at_zero_is_issued_at_the_command_timestamp(ex: Exchange) -> None:
    """What journals written before issued_at replay with, and what internal callers with
    ids of their own (the faucet, the benchmark flow) rely on. It protects within the
    window only: the same command sequenced again after it counts as freshly issued."""
    assert credit(ex, "old", 0, T) == "ACCEPTED"
    assert ex.engine.deposit_ids.forget_at == {"old": T + WINDOW}
    assert credit(ex, "old", 0, T + WINDOW) == "DUPLICATE"
    assert credit(ex, "old", T, T + WINDOW + 1) == "STALE_DEPOSIT"  # stamped as journaled
    assert credit(ex, "old", 0, T + WINDOW + 1) == "ACCEPTED"
    assert ex.bal(1, "BTC") == (10, 0)


def test_the_window_is_measured_from_issued_at_not_from_arrival(ex: Exchange) -> None:
    late = T + WINDOW  # arrives a full window after it was issued: still accepted
    assert credit(ex, "slow", T, late) == "ACCEPTED"
    assert ex.engine.deposit_ids.forget_at["slow"] == T + WINDOW
    assert credit(ex, "slow", T, late + 1) == "STALE_DEPOSIT"
    assert credit(ex, "slower", T - 1, late) == "STALE_DEPOSIT"
    assert ex.bal(1, "BTC") == (5, 0)


def test_an_issued_at_too_far_ahead_is_refused(ex: Exchange) -> None:
    result = ex.reject(c.CreditDeposit(1, "BTC", 5, "future", T + WINDOW + 1), "STALE_DEPOSIT")
    assert "after the engine's clock" in result.message
    assert "fix the submitter's clock" in result.message
    assert "future" not in ex.engine.deposit_ids
    assert credit(ex, "soon", T + WINDOW, T) == "ACCEPTED"  # the edge is inside
    assert ex.engine.deposit_ids.forget_at["soon"] == T + 2 * WINDOW
    assert credit(ex, "soon", T + WINDOW, T + 2 * WINDOW) == "DUPLICATE"
    ex.engine.check_invariants()


def test_stale_messages_say_when_and_what_to_do(ex: Exchange) -> None:
    result = ex.reject(c.CreditDeposit(1, "BTC", 5, "tx-9", T), "STALE_DEPOSIT", ts=T + WINDOW + 1)
    assert result.message == (
        "deposit 'tx-9' was issued at 2023-11-14T22:13:20.000Z (1700000000000 ms), more "
        "than 7 days before the engine's clock (2023-11-21T22:13:20.001Z (1700604800001 "
        "ms)): the engine may have forgotten whether it credited it; credit it again only "
        "if the store has no credit for it, with issued_at set to now"
    )
    seconds = ex.reject(c.CreditDeposit(1, "BTC", 5, "s", T // 1000), "STALE_DEPOSIT")
    assert "1970-01-20T" in seconds.message  # seconds for milliseconds: visibly wrong


def test_the_windows_follow_the_engine_clock_when_a_timestamp_steps_back(ex: Exchange) -> None:
    """Were the window measured at each command's own ts, a deposit sequenced after a
    later one but stamped earlier would find its forgotten id creditable again."""
    assert credit(ex, "tx", T, T) == "ACCEPTED"
    assert credit(ex, "later", 0, T + WINDOW + 10) == "ACCEPTED"  # forgets "tx"
    assert "tx" not in ex.engine.deposit_ids
    assert credit(ex, "tx", T, T + 5) == "STALE_DEPOSIT"
    assert ex.bal(1, "BTC") == (10, 0)


def test_memory_holds_only_the_live_ids(ex: Exchange) -> None:
    step = WINDOW // 100  # 400 deposits over four windows, some issued early or late
    for i in range(400):
        ts = T + i * step
        issued = ts - (i % 7) * step if i % 3 else ts + (i % 5) * step
        assert credit(ex, f"d{i}", issued, ts, amount=1) == "ACCEPTED"
        window = ex.engine.deposit_ids
        assert all(at >= ts for at in window.forget_at.values())
        assert len(window.heap) == len(window) <= 112  # 100 windows' worth + the spread
    last = T + 399 * step
    live = ex.engine.canonical_state()["deposit_ids"]
    assert [key for key, _ in live] == sorted(ex.engine.deposit_ids.forget_at)
    assert all(at >= last for _key, at in live)
    assert ex.bal(1, "BTC") == (400, 0)
    ex.engine.check_invariants()


# ---------------------------------------------------------------------------- withdrawals


def hold(ex: Exchange, wid: str, issued_at: int, ts: int) -> str:
    result = ex.apply(c.HoldWithdrawal(1, "USDT", 10 * USDT, wid, USDT, issued_at), ts)
    return result.code if result.status == "REJECTED" else result.status


def test_a_finished_withdrawal_is_remembered_until_its_hold_leaves_the_window(
    ex: Exchange,
) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    assert hold(ex, "w1", T, T) == "ACCEPTED"
    assert ex.engine.withdrawals["w1"] == (1, "USDT", 10 * USDT, USDT, T)
    ex.ok(c.SettleWithdrawal("w1"), ts=T + 1_000)
    assert ex.engine.finished_withdrawals.forget_at == {"w1": T + WINDOW}
    assert hold(ex, "w1", T, T + WINDOW) == "DUPLICATE_WITHDRAWAL"
    assert hold(ex, "w1", T, T + WINDOW + 1) == "STALE_WITHDRAWAL"
    assert "w1" not in ex.engine.finished_withdrawals
    assert ex.bal(1, "USDT") == (990 * USDT, 0)


def test_a_held_withdrawal_stays_a_duplicate_however_old(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    assert hold(ex, "w1", 0, T) == "ACCEPTED"
    far = T + 3 * WINDOW
    assert hold(ex, "w1", far, far) == "DUPLICATE_WITHDRAWAL"
    ex.ok(c.ReleaseWithdrawal("w1"), ts=far)
    # Released after its window: forgotten at once, and the old hold is stale.
    assert hold(ex, "w1", T, far) == "STALE_WITHDRAWAL"
    assert len(ex.engine.finished_withdrawals) == 0
    assert ex.bal(1, "USDT") == (1_000 * USDT, 0)


def test_a_hold_issued_too_far_ahead_is_refused(ex: Exchange) -> None:
    ex.deposit(1, "USDT", 1_000 * USDT)
    result = ex.reject(
        c.HoldWithdrawal(1, "USDT", USDT, "w", 0, T + WINDOW + 1), "STALE_WITHDRAWAL"
    )
    assert result.message.startswith("withdrawal 'w' is issued at ")
    assert hold(ex, "w", T + WINDOW, T) == "ACCEPTED"


# ---------------------------------------------------------------------------- snapshots


def windows_scenario() -> Exchange:
    """Live and expired ids in both windows, a held withdrawal with its issued_at."""
    ex = make_exchange()
    ex.deposit(1, "USDT", 1_000 * USDT)
    for i, issued in enumerate((T, T - WINDOW // 2, T + WINDOW // 3, 0)):
        assert credit(ex, f"d{i}", issued, T) == "ACCEPTED"
    assert hold(ex, "w-old", T, T) == "ACCEPTED"
    assert hold(ex, "w-new", T + WINDOW // 4, T) == "ACCEPTED"
    assert hold(ex, "w-held", T + 1, T) == "ACCEPTED"
    ex.ok(c.SettleWithdrawal("w-old"))
    ex.ok(c.ReleaseWithdrawal("w-new"))
    ex.ok(c.Tick(), ts=T + WINDOW * 3 // 4)  # d1 expired, not yet pruned
    return ex


def test_the_snapshot_holds_only_live_ids_and_restores_the_window() -> None:
    ex = windows_scenario()
    state = ex.engine.canonical_state()
    assert state["deposit_ids"] == [
        ["d0", T + WINDOW],
        ["d2", T + WINDOW // 3 + WINDOW],
        ["d3", T + WINDOW],
        ["dep-1", T + WINDOW],  # the USDT funding, issued at its timestamp
    ]
    assert state["finished_withdrawals"] == [
        ["w-new", T + WINDOW // 4 + WINDOW],
        ["w-old", T + WINDOW],
    ]
    assert state["withdrawals"] == [["w-held", 1, "USDT", 10 * USDT, USDT, T + 1]]
    assert "d1" in ex.engine.deposit_ids  # in memory until a deposit prunes it
    restored = Engine.restore(ex.engine.snapshot())
    assert "d1" not in restored.deposit_ids and len(restored.deposit_ids.heap) == 4
    assert restored.state_hash() == ex.engine.state_hash()
    assert restored.snapshot() == ex.engine.snapshot()
    restored.check_invariants()


@pytest.mark.parametrize("at", [T + WINDOW * 3 // 4, T + WINDOW, T + WINDOW + 1, T + 3 * WINDOW])
def test_a_restored_engine_answers_like_the_original(at: int) -> None:
    original = windows_scenario()
    restored = Exchange(Engine.restore(original.engine.snapshot()), ts=original.ts)
    commands: list[c.Command] = [
        c.CreditDeposit(2, "BTC", BTC, "d0", T),
        c.CreditDeposit(2, "BTC", BTC, "d1", T - WINDOW // 2),
        c.CreditDeposit(2, "BTC", BTC, "d2", T + WINDOW // 3),
        c.CreditDeposit(2, "BTC", BTC, "d1", at),
        c.HoldWithdrawal(1, "USDT", USDT, "w-old", 0, T),
        c.HoldWithdrawal(1, "USDT", USDT, "w-new", 0, T + WINDOW // 4),
        c.HoldWithdrawal(1, "USDT", USDT, "w-held", 0, at),
        c.SettleWithdrawal("w-held"),
        c.HoldWithdrawal(1, "USDT", USDT, "w-held", 0, T + 1),
    ]
    answers = []
    for command in commands:
        a, b = original.apply(command, at), restored.apply(command, at)
        assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b), command
        assert original.engine.state_hash() == restored.engine.state_hash(), command
        restored.engine.check_invariants()
        answers.append(a.code or a.status)
    if at == T + WINDOW:  # d1 expired, the rest still remembered
        assert answers == [
            "DUPLICATE_DEPOSIT", "STALE_DEPOSIT", "DUPLICATE_DEPOSIT", "ACCEPTED",
            "DUPLICATE_WITHDRAWAL", "DUPLICATE_WITHDRAWAL", "DUPLICATE_WITHDRAWAL",
            "ACCEPTED", "DUPLICATE_WITHDRAWAL",
        ]  # fmt: skip


# ---------------------------------------------------------------------------- journal


def test_journal_records_written_before_issued_at_still_decode() -> None:
    """Records as the engine journaled them before the field existed: the array of
    fields ends one earlier; the decoder fills issued_at with 0."""
    old_deposit = msgspec.msgpack.encode((7, T, ["CreditDeposit", 1, "BTC", 5, "tx-1"]))
    old_hold = msgspec.msgpack.encode((8, T, ["HoldWithdrawal", 1, "USDT", 9, "w1", 2]))
    older_hold = msgspec.msgpack.encode((9, T, ["HoldWithdrawal", 1, "USDT", 9, "w2"]))
    assert decode_record(old_deposit) == (7, T, c.CreditDeposit(1, "BTC", 5, "tx-1", 0))
    assert decode_record(old_hold) == (8, T, c.HoldWithdrawal(1, "USDT", 9, "w1", 2, 0))
    assert decode_record(older_hold) == (9, T, c.HoldWithdrawal(1, "USDT", 9, "w2", 0, 0))
    # The new field is the last element, so old decoders' arrays are a prefix of it.
    new = encode_record(7, T, c.CreditDeposit(1, "BTC", 5, "tx-1", T + 3))
    assert msgspec.msgpack.decode(new) == [7, T, ["CreditDeposit", 1, "BTC", 5, "tx-1", T + 3]]
    assert decode_record(new)[2] == c.CreditDeposit(1, "BTC", 5, "tx-1", T + 3)


def test_an_old_journal_replays_with_issued_at_the_command_timestamp() -> None:
    ex = make_exchange()
    record = msgspec.msgpack.encode((ex.seq + 1, T, ["CreditDeposit", 1, "BTC", 5, "tx-1"]))
    seq, ts, command = decode_record(record)
    assert ex.engine.apply(seq, ts, command).status == "ACCEPTED"
    assert ex.engine.deposit_ids.forget_at == {"tx-1": T + WINDOW}
