"""The sender on the FakeChain: a withdrawal is sent once and settled once, whatever is
killed where; stuck transactions are replaced at the same nonce; nonces are gapless."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from custody.desk import HOT, TO, USDT, USDT_ATOMS, Desk, HookedPort, TestSigner, open_desk
from custody.fakechain import FakeChain, FakeTx
from mercato.core.commands import SettleWithdrawal
from mercato.custody.chains.base import (
    BroadcastRejected,
    FeeQuote,
    KeyRef,
    SignedTx,
    Signer,
    Spend,
    TxStatus,
)
from mercato.custody.sender import Sender, create_outgoing

FUNDS = 5000 * USDT_ATOMS


def run(url: str, tmp: Path, test: Callable[[Desk], Awaitable[None]], **asset: object) -> None:
    async def main() -> None:
        async with open_desk(url, tmp / "engine", **asset) as desk:
            await test(desk)

    asyncio.run(main())


async def _request(desk: Desk, amount: str = "100") -> tuple[int, str]:
    user = await desk.user(funds=FUNDS)
    await desk.book(user)
    return user, (await desk.withdrawals.request(user, "USDT", amount, TO, None)).withdrawal_id


def _mined_to_dest(desk: Desk) -> list[int]:
    return [tx.amount for block in desk.chain.blocks for tx in block.txs if tx.to == TO]


def test_a_withdrawal_completes_once_and_settles_once(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        await desk.sender.run_once()
        assert (await desk.withdrawals.get(user, w)).status == "BROADCAST"
        desk.chain.mine()
        await desk.sender.run_once()  # 1 confirmation of 2: not yet
        assert (await desk.withdrawals.get(user, w)).status == "BROADCAST"
        desk.chain.mine()
        for _ in range(3):
            await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "SETTLED")
        assert _mined_to_dest(desk) == [100 * 10**6]  # 100 USDT in chain units, once
        assert desk.balance(user) == (FUNDS - 101 * USDT_ATOMS, 0)  # fee earned, sent gone
        ((status, txid, fee, height),) = await desk.rows(
            "SELECT status, txid, fee_paid_chain, mined_height FROM custody_outgoing"
        )
        assert (status, fee, height) == ("COMPLETED", "21000", 1)
        assert txid in desk.chain.mined

    run(migrated, tmp_path, test)


def test_a_kill_after_signing_broadcasts_the_same_bytes(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)

        class Killed(Exception):
            pass

        async def killed(*args: object) -> None:
            raise Killed

        dying = Sender(
            desk.db,
            desk.port,
            desk.config,
            {"fake": desk.chain},  # type: ignore[arg-type]
            TestSigner(),
            desk.clock,
        )
        dying._broadcast_signed = killed  # type: ignore[method-assign]  # dies after the commit
        with pytest.raises(Killed):
            await dying.run_once()
        assert desk.chain.broadcasts == []
        ((signed_txid,),) = await desk.rows("SELECT txid FROM custody_attempts")
        assert (await desk.withdrawals.get(user, w)).status == "SIGNED"
        await desk.sender.run_once()  # a new process
        await desk.sender.run_once()
        assert set(desk.chain.broadcasts) == {signed_txid}
        desk.chain.mine(2)
        await desk.sender.run_once()
        assert _mined_to_dest(desk) == [100 * 10**6]
        assert (await desk.withdrawals.get(user, w)).status == "COMPLETED"
        assert await desk.rows("SELECT count(*) FROM custody_attempts") == [(1,)]

    run(migrated, tmp_path, test)


def test_a_stuck_transaction_is_replaced_at_the_same_nonce(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        desk.chain.accept_broadcasts = False  # the node takes it and it never lands
        await desk.sender.run_once()
        desk.chain.mine()
        desk.clock.now += 30_000
        await desk.sender.run_once()  # not stuck yet (stuck_seconds 60)
        assert await desk.rows("SELECT count(*) FROM custody_attempts") == [(1,)]
        desk.clock.now += 31_000
        desk.chain.accept_broadcasts = True
        await desk.sender.run_once()
        attempts = await desk.rows(
            "SELECT txid, nonce, max_fee, priority_fee FROM custody_attempts ORDER BY id"
        )
        assert len(attempts) == 2
        (first, nonce1, max1, prio1), (second, nonce2, max2, prio2) = attempts
        assert first != second and nonce1 == nonce2 == 0
        assert int(max2) * 1000 >= int(max1) * 1125 and int(prio2) * 1000 >= int(prio1) * 1125
        desk.chain.mine(2)
        await desk.sender.run_once()
        await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "SETTLED")
        assert _mined_to_dest(desk) == [100 * 10**6]
        assert await desk.rows("SELECT txid FROM custody_outgoing") == [(second,)]

    run(migrated, tmp_path, test)


def test_nonces_are_gapless_across_withdrawals(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        desk.chain.nonces[HOT] = 7  # the chain's count starts the allocator, once
        for _ in range(3):
            await _request(desk, "50")
        await desk.sender.run_once()
        desk.chain.nonces[HOT] = 99  # never read again
        await _request(desk, "50")
        await desk.sender.run_once()
        nonces = await desk.rows("SELECT nonce FROM custody_outgoing ORDER BY id")
        assert nonces == [(7,), (8,), (9,), (10,)]

    run(migrated, tmp_path, test, daily_limit="")


def test_a_refused_broadcast_fails_only_when_nothing_can_land(
    migrated: str, tmp_path: Path
) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        desk.chain.accept_broadcasts = False
        dying = Sender(
            desk.db,
            desk.port,
            desk.config,
            {"fake": desk.chain},  # type: ignore[arg-type]
            TestSigner(),
            desk.clock,
        )

        async def nothing(*args: object) -> None:
            return None

        dying._broadcast_signed = nothing  # type: ignore[method-assign]
        dying._track_broadcast = nothing  # type: ignore[method-assign]
        await dying.run_once()  # signed with nonce 0, never sent
        desk.chain.nonces[HOT] = 1  # nonce 0 used by another transaction of the key
        desk.chain.accept_broadcasts = True
        await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("FAILED", "RELEASED")
        assert desk.balance(user) == (FUNDS, 0)
        await desk.withdrawals.recover()
        assert desk.balance(user) == (FUNDS, 0)

    run(migrated, tmp_path, test)


# -- PostgreSQL concurrency -----------------------------------------------------------------


@pytest.fixture
def pg(tmp_path: Path) -> object:
    from mercato.store import migrate
    from store.conftest import fresh_postgres_database

    with fresh_postgres_database() as url:
        asyncio.run(migrate(url))
        yield url


def test_concurrent_creates_for_one_ref_make_one_outgoing(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        key = KeyRef("evm", "hot", 0)

        def create(to: str) -> Awaitable[int]:
            return create_outgoing(
                desk.db,
                desk.chain,
                TestSigner(),
                kind="SWEEP",
                ref="s1",  # type: ignore[arg-type]
                key=key,
                from_address=HOT,
                to_address=to,
                asset=USDT,
                amount_chain=5,
            )

        ids = await asyncio.gather(create("0xa"), create("0xb"), create("0xc"))
        assert len(set(ids)) == 1
        assert await desk.rows("SELECT count(*) FROM custody_outgoing") == [(1,)]
        assert await desk.rows("SELECT count(*) FROM custody_attempts") == [(1,)]
        assert await desk.rows("SELECT next_nonce FROM custody_nonces") == [(1,)]

    run(pg, tmp_path, test)


def test_concurrent_senders_allocate_distinct_consecutive_nonces(pg: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        for _ in range(4):
            await _request(desk, "50")
        other = Sender(
            desk.db,
            desk.port,
            desk.config,
            {"fake": desk.chain},  # type: ignore[arg-type]
            TestSigner(),
            desk.clock,
        )
        await asyncio.gather(desk.sender.run_once(), other.run_once())
        nonces = await desk.rows("SELECT nonce FROM custody_outgoing ORDER BY nonce")
        assert nonces == [(0,), (1,), (2,), (3,)]
        assert await desk.rows(
            "SELECT count(*) FROM custody_withdrawals WHERE status IN ('SIGNED', 'BROADCAST')"
        ) == [(4,)]
        desk.chain.mine(2)
        await asyncio.gather(desk.sender.run_once(), other.run_once())
        await desk.sender.run_once()
        assert sorted(_mined_to_dest(desk)) == [50 * 10**6] * 4
        settled = await desk.rows(
            "SELECT count(*) FROM custody_withdrawals WHERE hold_state = 'SETTLED'"
        )
        assert settled == [(4,)]

    run(pg, tmp_path, test, daily_limit="")


class SolanaLike(FakeChain):
    """The FakeChain without nonces: each signature has its own blockhash, which
    ``expire`` makes unusable (``can_still_land`` False), as on Solana."""

    kind = "solana"
    uses_nonces = False

    def __init__(self) -> None:
        super().__init__("fake", (USDT,))
        self.blockhashes = 0
        self.expired: set[str] = set()

    async def sign(self, spend: Spend, signer: Signer) -> SignedTx:
        assert spend.nonce is None
        self.blockhashes += 1
        txid = f"sig{self.blockhashes}"
        raw = repr((spend.from_address, spend.to_address, spend.asset.symbol, spend.amount))
        return SignedTx(txid, raw.encode(), None, spend.fee, f"bh{self.blockhashes}", 150)

    async def broadcast(self, tx: SignedTx) -> None:
        self._check()
        self.broadcasts.append(tx.txid)
        known = tx.txid in self.mined or tx.txid in self.mempool
        if known or not self.accept_broadcasts or tx.txid in self.expired:
            return
        sender, to, asset, amount = ast.literal_eval(tx.raw.decode())
        self.mempool[tx.txid] = FakeTx(tx.txid, sender, to, asset, amount, None, 5000)

    async def can_still_land(self, tx: SignedTx) -> bool:
        self._check()
        return tx.txid not in self.expired


def test_solana_re_signs_only_once_the_blockhash_expired(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        chain = SolanaLike()
        sender = Sender(desk.db, desk.port, desk.config, {"fake": chain}, TestSigner(), desk.clock)
        user, w = await _request(desk)
        chain.accept_broadcasts = False  # the first signature never lands
        await sender.run_once()
        desk.clock.now += 61_000  # stuck, but its blockhash may still land: no new signature
        await sender.run_once()
        assert await desk.rows("SELECT txid FROM custody_attempts") == [("sig1",)]
        chain.expired.add("sig1")
        chain.accept_broadcasts = True
        await sender.run_once()
        attempts = await desk.rows(
            "SELECT txid, recent_blockhash FROM custody_attempts ORDER BY id"
        )
        assert attempts == [("sig1", "bh1"), ("sig2", "bh2")]
        chain.mine(2)
        await sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "SETTLED")
        assert await desk.rows("SELECT txid, nonce FROM custody_outgoing") == [("sig2", None)]
        mined = [tx.amount for block in chain.blocks for tx in block.txs if tx.to == TO]
        assert mined == [100 * 10**6]

    run(migrated, tmp_path, test)


def test_a_reverted_transfer_fails_and_releases(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        await desk.sender.run_once()
        desk.chain.mine(2)
        real_status = desk.chain.status

        async def reverted(txid: str) -> TxStatus:
            status = await real_status(txid)
            return TxStatus("FAILED", status.height, status.fee_paid)

        desk.chain.status = reverted  # type: ignore[method-assign]
        await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("FAILED", "RELEASED")
        assert desk.balance(user) == (FUNDS, 0)
        assert await desk.rows("SELECT status, fee_paid_chain FROM custody_outgoing") == [
            ("FAILED", "21000")
        ]

    run(migrated, tmp_path, test)


def test_a_node_down_is_retried_later(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        desk.chain.down = True
        await desk.sender.run_once()  # no error: the pass skips the chain
        assert (await desk.withdrawals.get(user, w)).status == "APPROVED"
        assert await desk.rows("SELECT count(*) FROM custody_nonces") == [(0,)]
        desk.chain.down = False
        await desk.sender.run_once()
        assert (await desk.withdrawals.get(user, w)).status == "BROADCAST"

    run(migrated, tmp_path, test)


def test_a_kill_before_the_settle_is_finished_by_the_next_pass(
    migrated: str, tmp_path: Path
) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)

        class Killed(Exception):
            pass

        async def die(cmd: object) -> None:
            raise Killed

        port = HookedPort(desk.port, SettleWithdrawal, die)
        dying = Sender(desk.db, port, desk.config, {"fake": desk.chain}, TestSigner(), desk.clock)  # type: ignore[arg-type]
        await dying.run_once()
        desk.chain.mine(2)
        with pytest.raises(Killed):
            await dying.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "HELD")
        await desk.sender.run_once()
        await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "SETTLED")
        assert desk.balance(user) == (FUNDS - 101 * USDT_ATOMS, 0)
        assert _mined_to_dest(desk) == [100 * 10**6]

    run(migrated, tmp_path, test)


def test_a_signed_row_already_mined_is_tracked_not_failed(migrated: str, tmp_path: Path) -> None:
    """Broadcast, then killed before BROADCAST was stored, then mined: a node that answers
    "nonce too low" for the mined transaction must not make it FAILED (the hold would be
    released for a transfer that left)."""

    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        real_broadcast = desk.chain.broadcast

        async def kill_after_broadcast(*args: object) -> None:
            ((txid, raw),) = await desk.rows("SELECT txid, raw FROM custody_attempts")
            await real_broadcast(SignedTx(txid, bytes(raw), 0, FeeQuote(1, 1, 21000)))

        dying = Sender(
            desk.db, desk.port, desk.config, {"fake": desk.chain}, TestSigner(), desk.clock
        )
        dying._broadcast_signed = kill_after_broadcast  # type: ignore[method-assign]
        await dying.run_once()
        desk.chain.mine(2)
        assert (await desk.withdrawals.get(user, w)).status == "SIGNED"

        async def nonce_too_low(tx: SignedTx) -> None:
            raise BroadcastRejected("nonce too low")

        desk.chain.broadcast = nonce_too_low  # type: ignore[method-assign]
        await desk.sender.run_once()
        record = await desk.withdrawals.get(user, w)
        assert (record.status, record.hold_state) == ("COMPLETED", "SETTLED")
        assert _mined_to_dest(desk) == [100 * 10**6]

    run(migrated, tmp_path, test)


def test_the_loop_sends_and_survives_a_failed_pass(migrated: str, tmp_path: Path) -> None:
    async def test(desk: Desk) -> None:
        user, w = await _request(desk)
        passes: list[int] = []

        async def recover_then_fail_once() -> None:
            passes.append(1)
            await desk.withdrawals.recover()
            if len(passes) == 1:
                raise RuntimeError("the database went away for a moment")

        loop = asyncio.create_task(desk.sender.run(0.001, recover_then_fail_once))
        async with asyncio.timeout(60):  # a guard against a hang, not a timing assertion
            while (await desk.withdrawals.get(user, w)).status != "BROADCAST":
                await asyncio.sleep(0.001)
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
        assert len(passes) >= 2

    run(migrated, tmp_path, test)
