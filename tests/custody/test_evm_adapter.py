"""The EVM adapter on a real Anvil node: addresses, scanning (ETH value and ERC-20 logs,
6-decimal tokens), the stable deposit index across a reorg, the RPC budget of a scan,
sign / broadcast / status / replacement, and a node that is down."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from eth_account import Account

from custody.anvil import DEV_ADDRESSES, DEV_KEYS, REPO_ROOT, Anvil, token_artifact
from custody.keysigner import KeySigner
from mercato.custody.chains.base import (
    BroadcastRejected,
    ChainAsset,
    ChainUnavailable,
    FeeQuote,
    InvalidAddress,
    KeyRef,
    ScannedBlock,
    SignedTx,
    Spend,
    TxStatus,
    Watched,
    fee_bumped,
)
from mercato.custody.chains.evm import ERC20_TRANSFER_SELECTOR, TRANSFER_TOPIC, EvmAdapter
from services import require_service

T = TypeVar("T")
ETH = ChainAsset("ETH", "", 18)
HOT = KeyRef("evm", "hot", 0)
SIGNER = KeySigner({HOT: DEV_KEYS[0], KeyRef("evm", "deposit", 1): DEV_KEYS[1]})
SENDER = DEV_ADDRESSES[0]
# Fresh addresses (no key anywhere): deposit addresses the scans watch.
DEPOSIT_A = Account.create().address
DEPOSIT_B = Account.create().address
STRANGER = Account.create().address


def run(
    anvil: Anvil,
    scenario: Callable[[EvmAdapter], Awaitable[T]],
    *assets: ChainAsset,
    batch_size: int = 50,
) -> T:
    """Run ``scenario`` with an adapter for ``anvil`` (ETH plus ``assets``), closed after."""

    async def main() -> T:
        adapter = EvmAdapter("ethereum", anvil.url, (ETH, *assets), batch_size=batch_size)
        try:
            return await scenario(adapter)
        finally:
            await adapter.close()

    return asyncio.run(main())


async def settled(adapter: EvmAdapter, txid: str) -> TxStatus:
    """The status once Anvil's automine has mined ``txid`` (a broadcast returns when the
    node has the transaction, and the mining follows)."""
    for _ in range(200):
        status = await adapter.status(txid)
        if status.state != "PENDING":
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{txid} still pending after 10 s of automine")


def usdt(anvil: Anvil) -> ChainAsset:
    return ChainAsset("USDT", anvil.deploy_token("USDT", 6), 6)


def incoming_of(blocks: list[ScannedBlock]) -> list[tuple[Any, ...]]:
    return [
        (i.txid, i.index, i.to_address, i.from_address, i.asset, i.amount)
        for block in blocks
        for i in block.incoming
    ]


# ------------------------------------------------------------------ addresses


def test_normalize_address_accepts_checksummed_and_single_case_hex() -> None:
    adapter = EvmAdapter("ethereum", "http://127.0.0.1:9", (ETH,))
    good = "0x52908400098527886E0F7030069857D2E4169EE7"  # an EIP-55 test vector
    assert adapter.normalize_address(good) == good
    assert adapter.normalize_address(good.lower()) == good
    assert adapter.normalize_address("0x" + good[2:].upper()) == good
    assert adapter.normalize_address(f"  {good}\n") == good
    mixed = "0x8617E340B3D01FA5F11F306F4090FD50E238070D"
    assert adapter.normalize_address(mixed.lower()) == "0x8617E340B3D01FA5F11F306F4090FD50E238070D"
    vector = "0xde709f2102306220921060314715629080e2fb77"
    assert adapter.normalize_address(vector) == "0xde709f2102306220921060314715629080e2fb77"
    vector = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert adapter.normalize_address(vector) == vector


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "checksum mismatch"),  # last d
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae", "40 hex digits"),  # 39 digits
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00", "40 hex digits"),  # 42
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg", "40 hex digits"),  # g
        ("", "40 hex digits"),
        ("7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU", "another chain"),  # Solana
        ("So11111111111111111111111111111111111111112", "another chain"),
    ],
)
def test_normalize_address_refuses(text: str, says: str) -> None:
    adapter = EvmAdapter("ethereum", "http://127.0.0.1:9", (ETH,))
    with pytest.raises(InvalidAddress) as refused:
        adapter.normalize_address(text)
    assert refused.value.code == "INVALID_ADDRESS"
    assert says in refused.value.message


# ----------------------------------------------------------------- the token


def test_token_artifact_is_what_solcjs_compiles_from_the_source() -> None:
    solcjs = REPO_ROOT / "node_modules" / ".bin" / "solcjs"
    node = shutil.which("node")
    require_service("solcjs", solcjs.exists() and node is not None, "run npm ci (needs node)")
    assert node is not None
    script = REPO_ROOT / "src" / "mercato" / "custody" / "contracts" / "compile.mjs"
    compiled = subprocess.run(
        [node, str(script), "--stdout"], capture_output=True, check=True, timeout=300
    )
    assert json.loads(compiled.stdout) == token_artifact()


def test_token_is_a_standard_erc20_with_a_deployer_only_mint(anvil: Anvil) -> None:
    token = anvil.deploy_token("USDC", 6)
    contract = anvil.token(token)
    assert contract.functions.decimals().call() == 6
    assert contract.functions.symbol().call() == "USDC"
    anvil.mint(token, DEV_ADDRESSES[1], 5_000_000)
    assert contract.functions.totalSupply().call() == 5_000_000
    with pytest.raises(Exception, match="only the deployer mints"):
        contract.functions.mint(DEV_ADDRESSES[1], 1).transact({"from": DEV_ADDRESSES[1]})
    contract.functions.approve(DEV_ADDRESSES[2], 2_000_000).transact({"from": DEV_ADDRESSES[1]})
    contract.functions.transferFrom(DEV_ADDRESSES[1], DEPOSIT_A, 1_500_000).transact(
        {"from": DEV_ADDRESSES[2]}
    )
    assert anvil.token_balance(token, DEPOSIT_A) == 1_500_000
    assert contract.functions.allowance(DEV_ADDRESSES[1], DEV_ADDRESSES[2]).call() == 500_000
    with pytest.raises(Exception, match="insufficient allowance"):
        contract.functions.transferFrom(DEV_ADDRESSES[1], DEPOSIT_A, 500_001).transact(
            {"from": DEV_ADDRESSES[2]}
        )
    with pytest.raises(Exception, match="exceeds balance"):
        contract.functions.transfer(DEPOSIT_A, 3_500_001).transact({"from": DEV_ADDRESSES[1]})


# ----------------------------------------------------------------------- scan


def test_scan_finds_eth_and_token_transfers_to_watched_addresses(anvil: Anvil) -> None:
    token = usdt(anvil)
    anvil.mint(token.contract, DEV_ADDRESSES[1], 10_000_000)
    start = anvil.head() + 1
    eth_in = anvil.send_eth(DEV_ADDRESSES[2], DEPOSIT_A, 10**18 + 7)
    token_in = anvil.transfer_token(token.contract, DEV_ADDRESSES[1], DEPOSIT_B, 2_500_000)
    anvil.send_eth(DEV_ADDRESSES[2], STRANGER, 10**18)  # not watched
    anvil.transfer_token(token.contract, DEV_ADDRESSES[1], STRANGER, 1)  # not watched
    anvil.send_eth(DEV_ADDRESSES[3], DEPOSIT_A, 5)  # from our own hot wallet: a gas top-up
    anvil.transfer_token(token.contract, DEV_ADDRESSES[1], DEV_ADDRESSES[3], 1_000_000)
    anvil.transfer_token(token.contract, DEV_ADDRESSES[3], DEPOSIT_B, 1_000_000)  # ours too
    end = anvil.head()
    # Watched in lower case, as a store might hold them: reported as watched.
    watched = Watched(
        frozenset({DEPOSIT_A, DEPOSIT_B.lower()}),
        (ETH, token),
        ignore_from=frozenset({DEV_ADDRESSES[3].lower()}),
    )

    blocks = run(anvil, lambda adapter: adapter.scan(start, end, watched), token)

    assert [block.block.height for block in blocks] == list(range(start, end + 1))
    assert incoming_of(blocks) == [
        (eth_in, 0, DEPOSIT_A, DEV_ADDRESSES[2], "ETH", 10**18 + 7),
        (token_in, 1, DEPOSIT_B.lower(), DEV_ADDRESSES[1], "USDT", 2_500_000),
    ]
    assert [len(block.incoming) for block in blocks][:2] == [1, 1]


def test_block_refs_chain_by_parent_hash_and_match_block(anvil: Anvil) -> None:
    anvil.mine(5)

    async def scenario(adapter: EvmAdapter) -> None:
        blocks = await adapter.scan(0, 5, Watched(frozenset({DEPOSIT_A})))
        refs = [scanned.block for scanned in blocks]
        assert [ref.height for ref in refs] == [0, 1, 2, 3, 4, 5]
        for parent, child in itertools.pairwise(refs):
            assert child.parent_hash == parent.hash
            assert child.parent_height == parent.height
            assert child.timestamp >= parent.timestamp > 0
        assert [await adapter.block(height) for height in range(6)] == refs
        assert await adapter.block(6) is None
        assert await adapter.head() == 5
        finalized = await adapter.finalized()
        assert finalized is not None and 0 <= finalized <= 5

    run(anvil, scenario)


def test_a_failed_transaction_is_not_a_deposit(anvil: Anvil) -> None:
    token = usdt(anvil)
    start = anvil.head() + 1
    # ETH sent to the token contract reverts (it has no payable function); watch it.
    txhash = anvil.web3.eth.send_transaction(
        {"from": DEV_ADDRESSES[2], "to": token.contract, "value": 10**18, "gas": 100_000}
    )
    assert anvil.web3.eth.get_transaction_receipt(txhash)["status"] == 0
    watched = Watched(frozenset({token.contract}), (ETH, token))

    blocks = run(anvil, lambda adapter: adapter.scan(start, anvil.head(), watched), token)

    assert [block.block.height for block in blocks] == [start]
    assert incoming_of(blocks) == []


def _forwarder_code(token: str) -> str:
    """Runtime code that keeps the ETH it is sent and calls ``token`` twice with the
    calldata it got: one transaction with a value and two token logs."""
    copy = "366000600037"  # CALLDATACOPY(0, 0, CALLDATASIZE)
    call = "60006000366000600073" + token[2:].lower() + "5af150"
    return "0x" + copy + call + call + "00"


def test_one_transaction_with_value_and_token_logs_gets_distinct_stable_indexes(
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual
    token = usdt(anvil)
    anvil.mint(token.contract, DEV_ADDRESSES[1], 1_000_000)
    forwarder = Account.create().address  # a watched address with code (a smart wallet)
    anvil.rpc("anvil_setCode", forwarder, _forwarder_code(token.contract))
    anvil.mint(token.contract, forwarder, 1_000)
    anvil.mine()
    start = anvil.head() + 1
    # In the same block, first: a token transfer with a log of its own (block logIndex 0)
    anvil.transfer_token(token.contract, DEV_ADDRESSES[1], STRANGER, 1)
    calldata = ERC20_TRANSFER_SELECTOR + bytes(12) + bytes.fromhex(forwarder[2:])
    calldata += (300).to_bytes(32, "big")
    both = anvil.web3.eth.send_transaction(
        {"from": DEV_ADDRESSES[2], "to": forwarder, "value": 42, "data": calldata, "gas": 200_000}
    )
    anvil.mine()
    receipt = anvil.web3.eth.get_transaction_receipt(both)
    assert [log["logIndex"] for log in receipt["logs"]] == [1, 2]  # block-wide: not ours
    txid = "0x" + bytes(both).hex()
    watched = Watched(frozenset({forwarder}), (ETH, token))

    blocks = run(anvil, lambda adapter: adapter.scan(start, start, watched), token)

    assert incoming_of(blocks) == [
        (txid, 0, forwarder, DEV_ADDRESSES[2], "ETH", 42),
        (txid, 1, forwarder, forwarder, "USDT", 300),
        (txid, 2, forwarder, forwarder, "USDT", 300),
    ]


def test_a_reorg_changes_the_block_hash_and_keeps_the_deposit_index(
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual
    token = usdt(anvil)
    anvil.mint(token.contract, DEV_ADDRESSES[1], 1_000_000)
    anvil.mine()
    height = anvil.head() + 1
    nonce = anvil.web3.eth.get_transaction_count(DEV_ADDRESSES[1])
    deposit = Account.sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": nonce,
            "to": token.contract,
            "value": 0,
            "gas": 100_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "data": ERC20_TRANSFER_SELECTOR
            + bytes(12)
            + bytes.fromhex(DEPOSIT_A[2:])
            + (700_000).to_bytes(32, "big"),
        },
        DEV_KEYS[1],
    )
    txid = "0x" + bytes(deposit.hash).hex()
    raw = "0x" + bytes(deposit.raw_transaction).hex()
    watched = Watched(frozenset({DEPOSIT_A}), (ETH, token))
    snapshot = anvil.snapshot()
    anvil.rpc("eth_sendRawTransaction", raw)
    anvil.mine()
    before = run(anvil, lambda adapter: adapter.scan(height, height, watched), token)
    assert incoming_of(before) == [(txid, 1, DEPOSIT_A, DEV_ADDRESSES[1], "USDT", 700_000)]

    anvil.revert(snapshot)  # the other fork: another token transfer first, then ours
    first = {"maxFeePerGas": 2 * 10**10, "maxPriorityFeePerGas": 5 * 10**9}  # a higher tip
    anvil.token(token.contract).functions.mint(STRANGER, 5).transact(
        {"from": DEV_ADDRESSES[0], **first}
    )
    anvil.rpc("eth_sendRawTransaction", raw)
    anvil.mine()
    assert anvil.web3.eth.get_transaction_receipt(txid)["logs"][0]["logIndex"] == 1

    async def after_reorg(adapter: EvmAdapter) -> list[ScannedBlock]:
        ref = await adapter.block(height)
        assert ref is not None and ref.hash != before[0].block.hash
        assert ref.parent_hash == before[0].block.parent_hash  # same parent: the fork point
        return await adapter.scan(height, height, watched)

    after = run(anvil, after_reorg, token)
    assert incoming_of(after) == incoming_of(before)


def test_scan_calls_do_not_grow_with_watched_addresses(anvil: Anvil) -> None:
    token = usdt(anvil)
    anvil.mint(token.contract, DEV_ADDRESSES[1], 10_000_000)
    start = anvil.head() + 1
    for _ in range(5):
        anvil.send_eth(DEV_ADDRESSES[2], DEPOSIT_A, 1_000)
        anvil.transfer_token(token.contract, DEV_ADDRESSES[1], DEPOSIT_B, 1_000)
    end = anvil.head()
    assert end - start + 1 == 10
    few = frozenset({DEPOSIT_A, DEPOSIT_B})
    many = few | {Account.create().address for _ in range(198)}
    huge = few | {Account.create().address for _ in range(2_498)}

    def measured(addresses: frozenset[str], batch_size: int) -> tuple[dict[str, int], int, int]:
        async def scenario(adapter: EvmAdapter) -> tuple[dict[str, int], int, int]:
            methods: dict[str, int] = {}
            requests = 0
            single, batch = adapter.provider.make_request, adapter.provider.make_batch_request

            async def count_single(method: Any, params: Any) -> Any:
                nonlocal requests
                requests += 1
                methods[method] = methods.get(method, 0) + 1
                return await single(method, params)

            async def count_batch(calls: Any) -> Any:
                nonlocal requests
                requests += 1
                for method, _ in calls:
                    methods[method] = methods.get(method, 0) + 1
                return await batch(calls)

            adapter.provider.make_request = count_single  # type: ignore[method-assign]
            adapter.provider.make_batch_request = count_batch  # type: ignore[method-assign]
            blocks = await adapter.scan(start, end, Watched(addresses, (ETH, token)))
            return methods, requests, len(incoming_of(blocks))

        return run(anvil, scenario, token, batch_size=batch_size)

    few_calls = measured(few, 50)
    assert few_calls == (
        {"eth_getBlockByNumber": 10, "eth_getLogs": 1, "eth_getTransactionReceipt": 10},
        3,  # HTTP requests: the blocks' batch, the logs, the receipts' batch
        10,
    )
    assert measured(many, 50) == few_calls
    huge_calls = measured(huge, 50)  # 2500 addresses: 3 topic lists of at most 1000
    assert huge_calls[0]["eth_getLogs"] == 3 and huge_calls[1] == 5 and huge_calls[2] == 10
    unbatched = measured(many, 0)  # a node without batches: one request per call
    assert unbatched == (few_calls[0], 21, 10)


# ------------------------------------------------------ fees, balances, nonces


def test_fees_follow_eip1559_and_the_asset(anvil: Anvil) -> None:
    token = usdt(anvil)

    async def scenario(adapter: EvmAdapter) -> tuple[FeeQuote, FeeQuote]:
        return await adapter.fees(ETH), await adapter.fees(token)

    eth_fee, token_fee = run(anvil, scenario, token)
    latest = anvil.web3.eth.get_block("latest")
    priority = int(anvil.rpc("eth_maxPriorityFeePerGas"), 16)
    assert eth_fee == FeeQuote(2 * latest["baseFeePerGas"] + priority, priority, 21_000)
    assert token_fee.max_fee == eth_fee.max_fee and token_fee.gas_limit >= 65_000


def test_fee_bumped_raises_both_fields_by_an_eighth_rounded_up() -> None:
    bumped = fee_bumped(FeeQuote(max_fee=1_000_000_001, priority_fee=7, gas_limit=21_000))
    assert bumped.max_fee == 1_125_000_002  # ceil(1_000_000_001 * 1.125)
    assert bumped.priority_fee == 8  # ceil(7.875)
    assert bumped.gas_limit == 21_000
    assert fee_bumped(FeeQuote(0, 0)) == FeeQuote(1, 1)  # a zero fee moves
    assert fee_bumped(FeeQuote(8, 1)) == FeeQuote(9, 2)
    for value in (1, 2, 3, 8, 9, 10**9, 10**9 + 1, 3 * 10**10 + 5):
        up = fee_bumped(FeeQuote(value, value)).max_fee
        assert up * 1000 >= value * 1125 and up >= value + 1
        assert (up - 1) * 1000 < value * 1125 or up - 1 < value + 1  # the least such


def test_balance_and_next_nonce(anvil: Anvil) -> None:
    token = usdt(anvil)
    anvil.mint(token.contract, DEPOSIT_A, 123_456)
    anvil.send_eth(DEV_ADDRESSES[4], DEPOSIT_A, 789)

    async def scenario(adapter: EvmAdapter) -> tuple[int, int, int, int]:
        return (
            await adapter.balance(DEPOSIT_A.lower(), ETH),
            await adapter.balance(DEPOSIT_A, token),
            await adapter.next_nonce(DEV_ADDRESSES[4]),
            await adapter.balance(DEPOSIT_B, token),
        )

    assert run(anvil, scenario, token) == (789, 123_456, 1, 0)


# -------------------------------------------------- sign, broadcast, status


def spend(adapter_fee: FeeQuote, asset: ChainAsset, amount: int, nonce: int) -> Spend:
    return Spend(HOT, SENDER, DEPOSIT_A, asset, amount, adapter_fee, nonce)


def test_eth_withdrawal_lands_once_even_when_broadcast_again(anvil: Anvil) -> None:
    async def scenario(adapter: EvmAdapter) -> None:
        nonce = await adapter.next_nonce(SENDER)
        fee = await adapter.fees(ETH)
        tx = await adapter.sign(spend(fee, ETH, 10**17 + 3, nonce), SIGNER)
        assert tx.nonce == nonce and tx.fee == fee and tx.txid.startswith("0x")
        assert (await adapter.status(tx.txid)).state == "UNKNOWN"
        await adapter.broadcast(tx)
        status = await settled(adapter, tx.txid)
        receipt = anvil.web3.eth.get_transaction_receipt(tx.txid)
        assert status.state == "MINED" and status.height == receipt["blockNumber"]
        assert status.fee_paid == receipt["gasUsed"] * receipt["effectiveGasPrice"] > 0
        assert await adapter.balance(DEPOSIT_A, ETH) == 10**17 + 3
        await adapter.broadcast(tx)  # the same bytes after a restart: success, no resend
        await adapter.broadcast(tx)
        assert await adapter.balance(DEPOSIT_A, ETH) == 10**17 + 3
        assert await adapter.next_nonce(SENDER) == nonce + 1
        assert await adapter.can_still_land(tx)  # it did land

    run(anvil, scenario)


def test_token_withdrawal_moves_exactly_the_amount(anvil: Anvil) -> None:
    token = usdt(anvil)
    anvil.mint(token.contract, SENDER, 50_000_000)

    async def scenario(adapter: EvmAdapter) -> None:
        fee = await adapter.fees(token)
        tx = await adapter.sign(
            spend(fee, token, 12_345_678, await adapter.next_nonce(SENDER)), SIGNER
        )
        await adapter.broadcast(tx)
        status = await settled(adapter, tx.txid)
        assert status.state == "MINED" and status.fee_paid > 0
        assert await adapter.balance(DEPOSIT_A, token) == 12_345_678
        assert await adapter.balance(SENDER, token) == 50_000_000 - 12_345_678
        await adapter.broadcast(tx)
        assert await adapter.balance(DEPOSIT_A, token) == 12_345_678

    run(anvil, scenario, token)


def test_a_reverted_token_transfer_is_failed_with_its_fee(anvil: Anvil) -> None:
    token = usdt(anvil)  # the sender holds none of it: transfer() reverts

    async def scenario(adapter: EvmAdapter) -> None:
        fee = await adapter.fees(token)
        tx = await adapter.sign(spend(fee, token, 1, await adapter.next_nonce(SENDER)), SIGNER)
        await adapter.broadcast(tx)
        status = await settled(adapter, tx.txid)
        assert status.state == "FAILED" and status.height is not None and status.fee_paid > 0

    run(anvil, scenario, token)


def test_a_replacement_at_the_same_nonce_lands_instead_of_the_original(
    anvil_manual: Anvil,
) -> None:
    anvil = anvil_manual

    async def scenario(adapter: EvmAdapter) -> None:
        nonce = await adapter.next_nonce(SENDER)
        fee = await adapter.fees(ETH)
        first = await adapter.sign(spend(fee, ETH, 5 * 10**16, nonce), SIGNER)
        await adapter.broadcast(first)
        await adapter.broadcast(first)  # already known: success
        assert (await adapter.status(first.txid)).state == "PENDING"
        assert await adapter.can_still_land(first)
        second = await adapter.sign(spend(fee_bumped(fee), ETH, 5 * 10**16, nonce), SIGNER)
        assert second.txid != first.txid and second.nonce == first.nonce
        await adapter.broadcast(second)
        anvil.mine()
        states = {(await adapter.status(tx.txid)).state for tx in (first, second)}
        assert states == {"MINED", "UNKNOWN"}
        mined, replaced = (
            (second, first)
            if (await adapter.status(second.txid)).state == "MINED"
            else (first, second)
        )
        assert await adapter.balance(DEPOSIT_A, ETH) == 5 * 10**16
        assert not await adapter.can_still_land(replaced)
        assert await adapter.can_still_land(mined)
        await adapter.broadcast(mined)  # mined: success
        with pytest.raises(BroadcastRejected, match="nonce too low"):
            await adapter.broadcast(replaced)
        anvil.mine()
        assert await adapter.balance(DEPOSIT_A, ETH) == 5 * 10**16

    run(anvil, scenario)


def test_broadcast_refusals_carry_the_nodes_reason(anvil_manual: Anvil) -> None:
    anvil = anvil_manual

    async def scenario(adapter: EvmAdapter) -> None:
        nonce = await adapter.next_nonce(SENDER)
        fee = await adapter.fees(ETH)
        too_much = await adapter.sign(spend(fee, ETH, 10**30, nonce), SIGNER)
        with pytest.raises(BroadcastRejected, match=r"(?i)insufficient funds"):
            await adapter.broadcast(too_much)
        pending = await adapter.sign(spend(fee, ETH, 1, nonce), SIGNER)
        await adapter.broadcast(pending)
        same_fee = await adapter.sign(spend(fee, ETH, 2, nonce), SIGNER)  # not a bump
        with pytest.raises(BroadcastRejected, match="replacement transaction underpriced"):
            await adapter.broadcast(same_fee)
        anvil.mine()
        assert (await adapter.status(pending.txid)).state == "MINED"
        assert (await adapter.status(same_fee.txid)).state == "UNKNOWN"
        assert (await adapter.status(too_much.txid)).state == "UNKNOWN"
        assert await adapter.balance(DEPOSIT_A, ETH) == 1

    run(anvil, scenario)


def test_can_still_land_until_another_transaction_takes_the_nonce(anvil_manual: Anvil) -> None:
    anvil = anvil_manual

    async def scenario(adapter: EvmAdapter) -> None:
        nonce = await adapter.next_nonce(SENDER)
        fee = await adapter.fees(ETH)
        never_sent = await adapter.sign(spend(fee, ETH, 1, nonce), SIGNER)
        assert await adapter.can_still_land(never_sent)
        other = await adapter.sign(Spend(HOT, SENDER, DEPOSIT_B, ETH, 2, fee, nonce), SIGNER)
        await adapter.broadcast(other)
        assert await adapter.can_still_land(never_sent)  # only pending: not yet decided
        anvil.mine()
        assert not await adapter.can_still_land(never_sent)
        assert (await adapter.status(never_sent.txid)).state == "UNKNOWN"

    run(anvil, scenario)


def test_sign_needs_a_nonce() -> None:
    adapter = EvmAdapter("ethereum", "http://127.0.0.1:9", (ETH,), chain_id=31337)
    without = Spend(HOT, SENDER, DEPOSIT_A, ETH, 1, FeeQuote(10**10, 10**9, 21_000), None)
    with pytest.raises(ValueError, match="nonce"):
        asyncio.run(adapter.sign(without, SIGNER))


# ------------------------------------------------------------- a node down


def test_every_call_to_a_stopped_node_is_chain_unavailable(anvil: Anvil) -> None:
    async def scenario(adapter: EvmAdapter) -> None:
        fee = await adapter.fees(ETH)
        tx = await adapter.sign(spend(fee, ETH, 1, 0), SIGNER)
        anvil.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            adapter.head,
            adapter.finalized,
            lambda: adapter.block(0),
            lambda: adapter.scan(0, 0, Watched(frozenset({DEPOSIT_A}))),
            lambda: adapter.balance(DEPOSIT_A, ETH),
            lambda: adapter.fees(ETH),
            lambda: adapter.next_nonce(SENDER),
            lambda: adapter.broadcast(tx),
            lambda: adapter.status(tx.txid),
            lambda: adapter.can_still_land(tx),
        ]
        for call in calls:
            with pytest.raises(ChainUnavailable):
                await call()

    run(anvil, scenario)


def test_chain_id_comes_from_the_node_once_unless_configured(anvil: Anvil) -> None:
    async def scenario(adapter: EvmAdapter) -> SignedTx:
        assert await adapter.chain_id() == 31337
        anvil.stop()
        return await adapter.sign(spend(FeeQuote(10**10, 10**9, 21_000), ETH, 1, 0), SIGNER)

    tx = run(anvil, scenario)  # signing needs no node once the chain id is known
    assert Account.recover_transaction(tx.raw) == SENDER
    configured = EvmAdapter("other", "http://127.0.0.1:9", (ETH,), chain_id=5)
    assert asyncio.run(configured.chain_id()) == 5


# ------------------------------------------------- a node that answers garbage


class ScriptedNode:
    """A JSON-RPC endpoint that answers what ``answer(method, params)`` returns: a
    result, an ``RpcError``-like dict under "error", or raw bytes / an HTTP status for
    what Anvil never says (a refused batch, HTML from a proxy, a 502)."""

    def __init__(self, answer: Callable[[str, list[Any]], Any]) -> None:
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = node.reply(body)
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    return
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.answer = answer
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, body: Any) -> Any:
        if isinstance(body, list):
            return self.answer("batch", body)
        answer = self.answer(body["method"], body["params"])
        if isinstance(answer, bytes | int):
            return answer
        if isinstance(answer, dict) and "error" in answer:
            return {"jsonrpc": "2.0", "id": body["id"], "error": answer["error"]}
        return {"jsonrpc": "2.0", "id": body["id"], "result": answer}

    def __enter__(self) -> ScriptedNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def on_scripted(
    answer: Callable[[str, list[Any]], Any], scenario: Callable[[EvmAdapter], Awaitable[T]]
) -> T:
    with ScriptedNode(answer) as node:

        async def main() -> T:
            adapter = EvmAdapter("ethereum", node.url, (ETH,), chain_id=1)
            try:
                return await scenario(adapter)
            finally:
                await adapter.close()

        return asyncio.run(main())


def test_finalized_is_none_where_the_node_has_no_such_tag() -> None:
    def answer(method: str, params: list[Any]) -> Any:
        return {"error": {"code": -32602, "message": "invalid block number: finalized"}}

    assert on_scripted(answer, lambda adapter: adapter.finalized()) is None


@pytest.mark.parametrize(
    "garbage",
    [
        502,  # a proxy in front of a node that is down
        b"<html>Bad gateway</html>",
        b'{"jsonrpc": "2.0", "id": 1}',  # neither result nor error
        b'"0x10"',  # not an object
        "not a quantity",  # eth_blockNumber answering text
    ],
)
def test_garbled_answers_are_chain_unavailable(garbage: Any) -> None:
    with pytest.raises(ChainUnavailable):
        on_scripted(lambda method, params: garbage, lambda adapter: adapter.head())


def test_a_node_that_refuses_batches_is_chain_unavailable_for_batched_reads() -> None:
    def answer(method: str, params: list[Any]) -> Any:
        if method == "batch":  # what some providers answer to a JSON array
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}}
        return {"error": {"code": -32000, "message": "unexpected"}}

    with pytest.raises(ChainUnavailable):
        on_scripted(answer, lambda adapter: adapter.scan(1, 2, Watched(frozenset({DEPOSIT_A}))))


def test_an_unknown_broadcast_error_is_retried_not_a_refusal_for_good() -> None:
    """Only the node's known refusals end a transfer: 'internal error' or a rate limit
    must not fail a withdrawal whose bytes may still land."""

    def answer(method: str, params: list[Any]) -> Any:
        if method == "eth_sendRawTransaction":
            return {"error": {"code": -32603, "message": "internal error"}}
        return None  # no receipt, no such transaction

    async def scenario(adapter: EvmAdapter) -> None:
        tx = await adapter.sign(spend(FeeQuote(10**10, 10**9, 21_000), ETH, 1, 0), SIGNER)
        await adapter.broadcast(tx)

    with pytest.raises(ChainUnavailable) as unavailable:
        on_scripted(answer, scenario)
    assert not isinstance(unavailable.value, BroadcastRejected)


def test_a_block_missing_its_fields_is_chain_unavailable() -> None:
    def answer(method: str, params: list[Any]) -> Any:
        if method == "batch":
            return [
                {"jsonrpc": "2.0", "id": call["id"], "result": {"number": "0x1"}} for call in params
            ]
        return {"number": "0x1"}  # no hash, no parent hash, no transactions

    async def scenario(adapter: EvmAdapter) -> None:
        for call in (lambda: adapter.block(1), lambda: adapter.scan(1, 1, Watched(frozenset()))):
            with pytest.raises(ChainUnavailable, match="garbled"):
                await call()

    on_scripted(answer, scenario)


def test_logs_from_another_fork_than_the_blocks_read_are_chain_unavailable() -> None:
    """A reorg between the block reads and eth_getLogs: the scan must not mix forks."""
    token = ChainAsset("USDT", "0x" + "11" * 20, 6)
    target = "0x" + "0" * 24 + DEPOSIT_A[2:].lower()

    def block(number: int) -> dict[str, Any]:
        return {
            "number": hex(number),
            "hash": "0x" + f"{number:064x}",
            "timestamp": "0x1",
            "parentHash": "0x" + f"{number - 1:064x}",
            "transactions": [],
        }

    def answer(method: str, params: list[Any]) -> Any:
        if method == "batch":
            return [
                {"jsonrpc": "2.0", "id": call["id"], "result": block(int(call["params"][0], 16))}
                for call in params
            ]
        assert method == "eth_getLogs"
        return [
            {
                "address": token.contract,
                "blockNumber": "0x1",
                "blockHash": "0x" + "ab" * 32,
                "transactionHash": "0x" + "cd" * 32,
                "transactionIndex": "0x0",
                "logIndex": "0x0",
                "topics": [TRANSFER_TOPIC, "0x" + "0" * 64, target],
                "data": "0x" + "0" * 63 + "1",
                "removed": False,
            }
        ]

    async def scenario(adapter: EvmAdapter) -> None:
        with pytest.raises(ChainUnavailable, match="another fork"):
            await adapter.scan(1, 1, Watched(frozenset({DEPOSIT_A}), (ETH, token)))

    on_scripted(answer, scenario)
