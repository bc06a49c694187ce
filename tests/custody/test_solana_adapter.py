"""The Solana adapter on LiteSVM: real System / Token / ATA programs executing real
signed transactions (tests/custody/litesvm_ledger.py says what that leaves untested)."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.responses import GetBlockResp
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferWithSeedParams, transfer_with_seed
from solders.token.associated import get_associated_token_address

from custody.litesvm_ledger import LiteSvmLedger
from custody.solsigner import KeypairSigner
from mercato.custody.chains.base import (
    BroadcastRejected,
    ChainAsset,
    ChainUnavailable,
    FeeQuote,
    Incoming,
    InvalidAddress,
    KeyRef,
    Spend,
    Watched,
)
from mercato.custody.chains.solana import (
    LAMPORTS_PER_SIGNATURE,
    SolanaAdapter,
    SolInstruction,
    block_from_rpc,
    create_associated_token_account_idempotent,
    network_cost,
)

SOL = 1_000_000_000
HOT = KeyRef("solana", "hot", 0)
BASE_FEE = FeeQuote(max_fee=LAMPORTS_PER_SIGNATURE, priority_fee=0)


@dataclass
class World:
    ledger: LiteSvmLedger
    adapter: SolanaAdapter
    signer: KeypairSigner
    issuer: Keypair  # the mint authority
    sender: Keypair  # an outside wallet holding SOL and USDC
    sol: ChainAsset
    usdc: ChainAsset

    @property
    def mint(self) -> Pubkey:
        return Pubkey.from_string(self.usdc.contract)

    @property
    def hot(self) -> str:
        return self.signer.address(HOT)

    def spend(self, to: str, asset: ChainAsset, amount: int) -> Spend:
        return Spend(HOT, self.hot, to, asset, amount, BASE_FEE)


def make_world(preflight: bool = True) -> World:
    """A ledger with a 6-decimal USDC-like mint made by real transactions, an outside
    sender holding 100 SOL and 1000 USDC, and a hot wallet holding 10 SOL and 500 USDC."""
    ledger = LiteSvmLedger(preflight=preflight)
    issuer, sender = Keypair(), Keypair()
    ledger.airdrop(str(issuer.pubkey()), 10 * SOL)
    ledger.airdrop(str(sender.pubkey()), 100 * SOL)
    mint = ledger.create_mint(issuer, decimals=6)
    ledger.mint_to(mint, issuer, sender.pubkey(), 1_000_000_000)
    signer = KeypairSigner()
    hot = signer.add(HOT).pubkey()
    ledger.airdrop(str(hot), 10 * SOL)
    ledger.mint_to(mint, issuer, hot, 500_000_000)
    ledger.produce_block()
    sol, usdc = ChainAsset("SOL", "", 9), ChainAsset("USDC", str(mint), 6)
    adapter = SolanaAdapter("solana", ledger, [sol, usdc])
    return World(ledger, adapter, signer, issuer, sender, sol, usdc)


def fresh_address() -> str:
    return str(Keypair().pubkey())


# ------------------------------------------------------------------ addresses


def test_normalize_address_accepts_a_wallet_and_says_what_is_wrong_with_the_rest() -> None:
    adapter = make_world().adapter
    wallet = fresh_address()
    assert adapter.normalize_address(f" {wallet} ") == wallet

    with pytest.raises(InvalidAddress, match="EVM"):
        adapter.normalize_address("0x52908400098527886E0F7030069857D2E4169EE7")
    with pytest.raises(InvalidAddress, match="base58"):
        adapter.normalize_address("0OIl" + wallet[4:])  # 0, O, I, l are not base58
    with pytest.raises(InvalidAddress, match="32 bytes"):
        adapter.normalize_address(wallet[:20])
    token_account = str(
        get_associated_token_address(Pubkey.from_string(wallet), Pubkey.new_unique())
    )
    with pytest.raises(InvalidAddress, match="program-derived") as refused:
        adapter.normalize_address(token_account)
    assert refused.value.code == "INVALID_ADDRESS"


# ------------------------------------------------------------------ scanning


def test_scan_finds_sol_and_spl_deposits_with_exact_amounts_indexes_and_senders() -> None:
    async def scenario() -> None:
        world = make_world()
        ledger, sender, mint = world.ledger, world.sender, world.mint
        deposit, unwatched = Keypair().pubkey(), Keypair().pubkey()
        sol_txid = ledger.transfer_sol(sender, deposit, 1_500_000_000)
        ledger.transfer_sol(sender, unwatched, 7 * SOL)
        # Instruction 0 creates the deposit address's token account, 1 moves the tokens.
        checked_txid = ledger.send(
            [
                create_associated_token_account_idempotent(sender.pubkey(), deposit, mint),
                ledger.token_transfer_instruction(sender, mint, deposit, 12_345_678, 6),
            ],
            [sender],
        )
        plain_txid = ledger.send(
            [ledger.token_transfer_instruction(sender, mint, deposit, 5, None)], [sender]
        )
        block = ledger.produce_block()

        watched = Watched(frozenset({str(deposit)}), (world.sol, world.usdc))
        scanned = await world.adapter.scan(block.slot, block.slot, watched)

        assert [found.block.height for found in scanned] == [block.slot]
        assert scanned[0].block.hash == block.blockhash
        who = str(sender.pubkey())
        assert scanned[0].incoming == (
            Incoming(sol_txid, 0, str(deposit), who, "SOL", 1_500_000_000),
            Incoming(checked_txid, 1, str(deposit), who, "USDC", 12_345_678),
            Incoming(plain_txid, 0, str(deposit), who, "USDC", 5),
        )
        # What the scan saw is what the chain holds, and a rescan says the same.
        assert await world.adapter.balance(str(deposit), world.sol) == 1_500_000_000
        assert await world.adapter.balance(str(deposit), world.usdc) == 12_345_683
        assert await world.adapter.scan(block.slot, block.slot, watched) == scanned

    asyncio.run(scenario())


def test_scan_leaves_out_failed_transactions_and_our_own_senders() -> None:
    async def scenario() -> None:
        world = make_world(preflight=False)  # a failing transaction lands, failed
        ledger, deposit = world.ledger, Keypair().pubkey()
        poor = Keypair()
        ledger.airdrop(str(poor.pubkey()), SOL)
        failed = ledger.transfer_sol(poor, deposit, 2 * SOL)  # more than it has
        top_up = ledger.transfer_sol(world.sender, deposit, SOL)
        block = ledger.produce_block()

        assert (await world.adapter.status(failed)).state == "FAILED"
        everything = Watched(frozenset({str(deposit)}), (world.sol,))
        scanned = await world.adapter.scan(block.slot, block.slot, everything)
        assert [found.txid for found in scanned[0].incoming] == [top_up]
        ours = Watched(
            frozenset({str(deposit)}), (world.sol,), frozenset({str(world.sender.pubkey())})
        )
        scanned = await world.adapter.scan(block.slot, block.slot, ours)
        assert scanned[0].incoming == ()

    asyncio.run(scenario())


def test_skipped_slots_are_left_out_and_the_parent_links_across_them() -> None:
    async def scenario() -> None:
        world = make_world()
        before = world.ledger.blocks[-1]
        after = world.ledger.produce_block(skip=2)
        adapter = world.adapter

        assert after.slot == before.slot + 3
        assert await adapter.head() == after.slot
        assert await adapter.block(before.slot + 1) is None
        assert await adapter.block(before.slot + 2) is None
        scanned = await adapter.scan(before.slot, after.slot, Watched(frozenset()))
        assert [found.block.height for found in scanned] == [before.slot, after.slot]
        assert scanned[1].block.parent_height == before.slot
        assert scanned[1].block.parent_hash == before.blockhash
        assert await adapter.block(after.slot + 1) is None  # beyond the head

    asyncio.run(scenario())


def test_head_reads_at_the_adapter_commitment_and_finalized_lags() -> None:
    async def scenario() -> None:
        world = make_world()
        world.ledger.finalized_lag = 1
        newest = world.ledger.produce_block()
        confirmed = SolanaAdapter("solana", world.ledger, [world.sol], commitment="confirmed")
        assert await confirmed.head() == newest.slot
        assert await confirmed.finalized() == world.ledger.blocks[-2].slot
        assert await world.adapter.head() == world.ledger.blocks[-2].slot  # finalized

    asyncio.run(scenario())


# ------------------------------------------------------------------ withdrawals


def test_sol_withdrawal_lands_once_even_when_broadcast_twice() -> None:
    async def scenario() -> None:
        world = make_world()
        adapter, to = world.adapter, fresh_address()
        hot_before = await adapter.balance(world.hot, world.sol)

        signed = await adapter.sign(world.spend(to, world.sol, 250_000_000), world.signer)
        assert signed.nonce is None and signed.raw
        assert await adapter.can_still_land(signed)
        await adapter.broadcast(signed)
        await adapter.broadcast(signed)  # the same bytes again: already processed
        block = world.ledger.produce_block()

        assert await adapter.balance(to, world.sol) == 250_000_000
        paid = hot_before - await adapter.balance(world.hot, world.sol)
        assert paid == 250_000_000 + LAMPORTS_PER_SIGNATURE
        status = await adapter.status(signed.txid)
        assert (status.state, status.height, status.fee_paid) == (
            "MINED",
            block.slot,
            LAMPORTS_PER_SIGNATURE,
        )
        assert await adapter.can_still_land(signed)  # it is on chain
        # Sent again after its block: refused one way or the other, never moved twice.
        with pytest.raises(ChainUnavailable):
            await adapter.broadcast(signed)
        assert await adapter.balance(to, world.sol) == 250_000_000
        assert (await adapter.status("1" * 64)).state == "UNKNOWN"

    asyncio.run(scenario())


def test_spl_withdrawal_creates_the_recipient_token_account_then_reuses_it() -> None:
    async def scenario() -> None:
        world = make_world()
        adapter, to = world.adapter, fresh_address()
        sol_before = await adapter.balance(world.hot, world.sol)
        usdc_before = await adapter.balance(world.hot, world.usdc)
        assert await adapter.balance(to, world.usdc) == 0  # no token account yet

        first = await adapter.sign(world.spend(to, world.usdc, 2_500_000), world.signer)
        await adapter.broadcast(first)
        world.ledger.produce_block()
        second = await adapter.sign(world.spend(to, world.usdc, 1), world.signer)
        await adapter.broadcast(second)
        world.ledger.produce_block()

        assert await adapter.balance(to, world.usdc) == 2_500_001
        assert usdc_before - await adapter.balance(world.hot, world.usdc) == 2_500_001
        rent = world.ledger.svm.minimum_balance_for_rent_exemption(165)  # one token account
        spent = sol_before - await adapter.balance(world.hot, world.sol)
        assert spent == 2 * LAMPORTS_PER_SIGNATURE + rent
        # The network cost of each: the fee, and for the first the new account's rent.
        creating, reusing = await adapter.status(first.txid), await adapter.status(second.txid)
        assert (creating.state, creating.fee_paid) == ("MINED", LAMPORTS_PER_SIGNATURE + rent)
        assert (reusing.state, reusing.fee_paid) == ("MINED", LAMPORTS_PER_SIGNATURE)
        # The scan of a watched recipient reports the owner, not the token account.
        watched = Watched(frozenset({to}), (world.usdc,))
        found = await adapter.scan(await adapter.head() - 1, await adapter.head(), watched)
        assert [(i.to_address, i.index, i.amount) for b in found for i in b.incoming] == [
            (to, 1, 2_500_000),
            (to, 1, 1),
        ]

    asyncio.run(scenario())


def test_wrong_decimals_are_refused_by_the_token_program_and_nothing_moves() -> None:
    async def scenario() -> None:
        world = make_world()
        misconfigured = ChainAsset("USDC", world.usdc.contract, 8)
        to = fresh_address()
        signed = await world.adapter.sign(world.spend(to, misconfigured, 100), world.signer)
        with pytest.raises(BroadcastRejected):
            await world.adapter.broadcast(signed)
        world.ledger.produce_block()
        assert await world.adapter.balance(to, world.usdc) == 0
        assert (await world.adapter.status(signed.txid)).state == "UNKNOWN"

    asyncio.run(scenario())


def test_a_failed_transaction_is_failed_and_paid_its_fee() -> None:
    async def scenario() -> None:
        world = make_world(preflight=False)
        adapter, to = world.adapter, fresh_address()
        sol_before = await adapter.balance(world.hot, world.sol)
        too_much = world.spend(to, world.usdc, 500_000_001)  # the hot wallet has 500 USDC
        signed = await adapter.sign(too_much, world.signer)
        await adapter.broadcast(signed)
        world.ledger.produce_block()

        status = await adapter.status(signed.txid)
        assert (status.state, status.fee_paid) == ("FAILED", LAMPORTS_PER_SIGNATURE)
        assert sol_before - await adapter.balance(world.hot, world.sol) == LAMPORTS_PER_SIGNATURE
        assert await adapter.balance(to, world.usdc) == 0
        assert await adapter.can_still_land(signed)  # on chain: it will never be replaced

    asyncio.run(scenario())


def test_an_expired_blockhash_cannot_land_and_a_fresh_signature_lands_once() -> None:
    async def scenario() -> None:
        world = make_world()
        adapter, to = world.adapter, fresh_address()
        stale = await adapter.sign(world.spend(to, world.sol, SOL), world.signer)
        world.ledger.produce_block()  # its blockhash expires, the transaction never sent

        assert not await adapter.can_still_land(stale)
        with pytest.raises(ChainUnavailable, match="Blockhash"):
            await adapter.broadcast(stale)
        assert await adapter.balance(to, world.sol) == 0

        fresh = await adapter.sign(world.spend(to, world.sol, SOL), world.signer)
        assert fresh.txid != stale.txid
        assert fresh.valid_until is not None and stale.valid_until is not None
        assert fresh.valid_until > stale.valid_until
        await adapter.broadcast(fresh)
        world.ledger.produce_block()
        world.ledger.produce_block()

        assert await adapter.balance(to, world.sol) == SOL
        assert not await adapter.can_still_land(stale)  # long past its block height too
        assert await adapter.can_still_land(fresh)  # mined
        assert (await adapter.status(stale.txid)).state == "UNKNOWN"

    asyncio.run(scenario())


# ------------------------------------------------------------------ JSON-RPC answers

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = _B58[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def test_a_getblock_answer_resolves_static_and_lookup_table_accounts() -> None:
    """The production parser on a getBlock answer in the node's ``json`` encoding, as
    solders parses it: a v0 transaction whose recipient comes from a lookup table (the
    key list is static keys, then loaded writable, then loaded read-only), and a failed
    transaction."""
    payer, deposit, system = Keypair().pubkey(), Keypair().pubkey(), "1" * 32
    data = struct.pack("<IQ", 2, 42)

    def entry(signature: str, err: object) -> dict[str, object]:
        return {
            "meta": {
                "err": err,
                "status": {"Ok": None} if err is None else {"Err": err},
                "fee": 5000,
                "preBalances": [1_000_000, 0, 1],
                "postBalances": [994_958, 42, 1],
                "innerInstructions": [],
                "logMessages": [],
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
                "loadedAddresses": {"writable": [str(deposit)], "readonly": []},
            },
            "transaction": {
                "signatures": [signature],
                "message": {
                    "header": {
                        "numRequiredSignatures": 1,
                        "numReadonlySignedAccounts": 0,
                        "numReadonlyUnsignedAccounts": 1,
                    },
                    "accountKeys": [str(payer), system],
                    "recentBlockhash": str(Pubkey.new_unique()),
                    "instructions": [
                        {"programIdIndex": 1, "accounts": [0, 2], "data": _b58encode(data)}
                    ],
                    "addressTableLookups": [
                        {
                            "accountKey": str(Pubkey.new_unique()),
                            "writableIndexes": [0],
                            "readonlyIndexes": [],
                        }
                    ],
                },
            },
            "version": 0,
        }

    ok_sig, failed_sig = str(Signature.new_unique()), str(Signature.new_unique())
    blockhash, parent_hash = str(Pubkey.new_unique()), str(Pubkey.new_unique())
    answer = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "blockHeight": 7,
            "blockTime": 1_700_000_000,
            "blockhash": blockhash,
            "previousBlockhash": parent_hash,
            "parentSlot": 98,
            "transactions": [
                entry(ok_sig, None),
                entry(failed_sig, {"InstructionError": [0, {"Custom": 1}]}),
            ],
        },
    }
    block = block_from_rpc(100, GetBlockResp.from_json(json.dumps(answer)).value)

    assert (block.slot, block.blockhash, block.previous_blockhash, block.parent_slot) == (
        100,
        blockhash,
        parent_hash,
        98,
    )
    assert block.block_time == 1_700_000_000
    assert [(tx.signature, tx.succeeded) for tx in block.transactions] == [
        (ok_sig, True),
        (failed_sig, False),
    ]
    (instruction,) = block.transactions[0].instructions
    assert instruction == SolInstruction(system, (str(payer), str(deposit)), data)
    ok = block.transactions[0]
    assert (ok.fee_payer, ok.payer_spent) == (str(payer), 5042)
    assert network_cost(ok) == 5000  # the 42 lamports sent are not a cost


def test_a_signature_from_the_wrong_key_is_caught_at_signing() -> None:
    async def scenario() -> None:
        world = make_world()
        impostor = KeypairSigner()
        impostor.add(HOT)  # another key under the same KeyRef
        with pytest.raises(RuntimeError, match="does not verify"):
            await world.adapter.sign(world.spend(fresh_address(), world.sol, SOL), impostor)

    asyncio.run(scenario())


def test_scan_reads_transfer_with_seed_and_ignores_tokens_of_unconfigured_mints() -> None:
    async def scenario() -> None:
        world = make_world()
        ledger, sender, deposit = world.ledger, world.sender, Keypair().pubkey()
        # A seed-derived System account (owned by the System program) funding a deposit.
        seeded = Pubkey.create_with_seed(sender.pubkey(), "vault", SYSTEM_PROGRAM_ID)
        ledger.airdrop(str(seeded), 3 * SOL)
        params = TransferWithSeedParams(
            from_pubkey=seeded,
            from_base=sender.pubkey(),
            from_seed="vault",
            from_owner=SYSTEM_PROGRAM_ID,
            to_pubkey=deposit,
            lamports=2 * SOL,
        )
        seed_txid = ledger.send([transfer_with_seed(params)], [sender])
        # A look-alike token nobody configured, sent to the deposit address's ATA for it.
        fake = ledger.create_mint(sender, decimals=6)
        ledger.mint_to(fake, sender, sender.pubkey(), 10**9)
        ledger.send(
            [
                create_associated_token_account_idempotent(sender.pubkey(), deposit, fake),
                ledger.token_transfer_instruction(sender, fake, deposit, 10**9, 6),
            ],
            [sender],
        )
        block = ledger.produce_block()

        watched = Watched(frozenset({str(deposit)}), (world.sol, world.usdc))
        scanned = await world.adapter.scan(block.slot, block.slot, watched)
        assert scanned[0].incoming == (
            Incoming(seed_txid, 0, str(deposit), str(seeded), "SOL", 2 * SOL),
        )

    asyncio.run(scenario())
