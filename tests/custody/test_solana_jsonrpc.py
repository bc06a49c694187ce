"""JsonRpcSolana's mapping of node answers, without a node.

No solana-test-validator runs on the machines this is built on, so these tests answer the
AsyncClient's HTTP requests in-process with JSON in the shapes the Solana JSON-RPC
documentation gives (and solders parses): they check which method and parameters each
call sends and how answers and errors map to the adapter's values. That a real node
answers so is not tested here (docs/custody.md, "Solana adapter")."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from collections.abc import Callable

import httpx2
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from mercato.custody.chains.base import (
    BroadcastRejected,
    ChainAsset,
    ChainUnavailable,
    FeeQuote,
    SignedTx,
)
from mercato.custody.chains.solana import JsonRpcSolana, RpcRefused, SolanaAdapter, network_cost

Answer = Callable[[list[object]], dict[str, object]]


def node(answers: dict[str, Answer], seen: list[dict[str, object]]) -> JsonRpcSolana:
    """A JsonRpcSolana whose HTTP requests are answered by ``answers[method](params)``
    (a JSON-RPC ``result`` or ``error`` member); every request lands in ``seen``."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        reply = {"jsonrpc": "2.0", "id": body["id"], **answers[body["method"]](body["params"])}
        return httpx2.Response(200, json=reply)

    rpc = JsonRpcSolana("http://node.invalid")
    rpc.client._provider.session = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    return rpc


def sent(call: dict[str, object]) -> tuple[object, list[object]]:
    """A request's method and parameters, config members the client sent as null left
    out (the node reads them as absent)."""
    params = call["params"]
    assert isinstance(params, list)
    given = [
        {k: v for k, v in param.items() if v is not None} if isinstance(param, dict) else param
        for param in params
    ]
    return call["method"], given


def result(value: object) -> Answer:
    return lambda params: {"result": value}


def in_context(value: object) -> Answer:
    return result({"context": {"slot": 1}, "value": value})


def error(code: int, message: str, data: object = None) -> Answer:
    payload: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        payload["data"] = data
    return lambda params: {"error": payload}


def preflight_failure(message: str, err: object) -> Answer:
    data = {"accounts": None, "err": err, "logs": [], "unitsConsumed": 0}
    return error(-32002, f"Transaction simulation failed: {message}", data)


def token_account(mint: Pubkey, owner: Pubkey, amount: int) -> str:
    """A 165-byte SPL token account (initialized, no delegate), base64."""
    data = bytes(mint) + bytes(owner) + struct.pack("<Q", amount)
    data += b"\0" * 36 + b"\x01" + b"\0" * 12 + b"\0" * 8 + b"\0" * 36
    assert len(data) == 165
    return base64.b64encode(data).decode()


def test_reads_send_the_documented_calls_and_map_the_answers() -> None:
    mint, owner = Pubkey.new_unique(), Keypair().pubkey()
    blockhash = str(Pubkey.new_unique())
    signature = str(Signature.new_unique())
    status = {"slot": 50, "confirmations": None, "err": None, "status": {"Ok": None}}
    account = {
        "data": [token_account(mint, owner, 1_234_567), "base64"],
        "executable": False,
        "lamports": 2_039_280,
        "owner": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        "rentEpoch": 0,
        "space": 165,
    }
    seen: list[dict[str, object]] = []
    answers: dict[str, Answer] = {
        "getSlot": result(1234),
        "getBalance": in_context(777),
        "getAccountInfo": lambda params: in_context(account if params[0] != "absent" else None)(
            params
        ),
        "getLatestBlockhash": in_context({"blockhash": blockhash, "lastValidBlockHeight": 420}),
        "getBlockHeight": result(99),
        "getSignatureStatuses": in_context([{**status, "confirmationStatus": "finalized"}]),
        "isBlockhashValid": in_context(False),
    }
    rpc = node(answers, seen)

    async def scenario() -> None:
        assert await rpc.get_slot("finalized") == 1234
        assert await rpc.get_balance(str(owner)) == 777
        assert await rpc.get_token_account_balance(str(Pubkey.new_unique())) == 1_234_567
        assert await rpc.get_latest_blockhash() == (blockhash, 420)
        assert await rpc.get_block_height("finalized") == 99
        found = await rpc.get_signature_status(signature)
        assert found is not None and (found.slot, found.err) == (50, None)
        assert await rpc.is_blockhash_valid(blockhash, "finalized") is False

    asyncio.run(scenario())
    calls = [sent(call) for call in seen]
    assert calls[0] == ("getSlot", [{"commitment": "finalized"}])
    assert calls[1] == ("getBalance", [str(owner), {"commitment": "confirmed"}])
    assert calls[5][0] == "getSignatureStatuses"
    assert calls[5][1] == [[signature], {"searchTransactionHistory": True}]
    assert calls[6] == ("isBlockhashValid", [blockhash, {"commitment": "finalized"}])


def test_an_absent_token_account_holds_zero() -> None:
    rpc = node({"getAccountInfo": in_context(None)}, [])
    assert asyncio.run(rpc.get_token_account_balance(str(Pubkey.new_unique()))) == 0


def test_a_skipped_slot_is_none_and_an_unavailable_block_is_the_node_failing() -> None:
    seen: list[dict[str, object]] = []
    answers = {
        "getBlock": lambda params: (
            error(-32007, f"Slot {params[0]} was skipped, or missing due to ledger jump")
            if params[0] == 5
            else error(-32004, f"Block not available for slot {params[0]}")
        )(params)
    }
    rpc = node(answers, seen)
    assert asyncio.run(rpc.get_block(5, "finalized")) is None
    with pytest.raises(ChainUnavailable, match="not available"):
        asyncio.run(rpc.get_block(6, "finalized"))
    assert sent(seen[0])[1] == [
        5,
        {"encoding": "json", "commitment": "finalized", "maxSupportedTransactionVersion": 0},
    ]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (
            preflight_failure("This transaction has already been processed", "AlreadyProcessed"),
            None,
        ),
        (preflight_failure("Blockhash not found", "BlockhashNotFound"), ChainUnavailable),
        (
            preflight_failure(
                "Error processing Instruction 1: custom program error: 0x1",
                {"InstructionError": [1, {"Custom": 1}]},
            ),
            BroadcastRejected,
        ),
    ],
)
def test_broadcast_maps_the_preflight_refusals(
    answer: Answer, outcome: type[Exception] | None
) -> None:
    seen: list[dict[str, object]] = []
    rpc = node({"sendTransaction": answer}, seen)
    adapter = SolanaAdapter("solana", rpc, [ChainAsset("SOL", "", 9)])
    tx = SignedTx("sig", b"\x01raw", None, FeeQuote(5000, 0), "hash", 10)
    if outcome is None:
        asyncio.run(adapter.broadcast(tx))  # already processed: success
    else:
        with pytest.raises(outcome):
            asyncio.run(adapter.broadcast(tx))
    params = sent(seen[0])[1]
    assert base64.b64decode(str(params[0])) == b"\x01raw"
    assert params[1] == {
        "skipPreflight": False,
        "preflightCommitment": "confirmed",
        "encoding": "base64",
    }


def test_a_refused_send_keeps_the_node_message() -> None:
    rpc = node(
        {"sendTransaction": preflight_failure("Blockhash not found", "BlockhashNotFound")}, []
    )
    with pytest.raises(RpcRefused, match="Blockhash not found"):
        asyncio.run(rpc.send_raw(b"\x01raw"))


def test_a_node_that_does_not_answer_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rpc = JsonRpcSolana(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ChainUnavailable):
        asyncio.run(rpc.get_slot("finalized"))


def test_get_transaction_reads_the_fee_payer_cost() -> None:
    payer, recipient = Keypair().pubkey(), Keypair().pubkey()
    signature = str(Signature.new_unique())
    system = "1" * 32
    transfer_data = "3Bxs4Bc3VYuGVB19"  # System Transfer of 1_000_000 lamports, base58
    landed = {
        "slot": 77,
        "blockTime": 1_700_000_000,
        "version": "legacy",
        "meta": {
            "err": None,
            "status": {"Ok": None},
            "fee": 5000,
            "preBalances": [10_000_000, 0, 1],
            "postBalances": [8_995_000, 1_000_000, 1],
            "innerInstructions": [],
            "logMessages": [],
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
        },
        "transaction": {
            "signatures": [signature],
            "message": {
                "header": {
                    "numRequiredSignatures": 1,
                    "numReadonlySignedAccounts": 0,
                    "numReadonlyUnsignedAccounts": 1,
                },
                "accountKeys": [str(payer), str(recipient), system],
                "recentBlockhash": str(Pubkey.new_unique()),
                "instructions": [{"programIdIndex": 2, "accounts": [0, 1], "data": transfer_data}],
            },
        },
    }
    seen: list[dict[str, object]] = []
    rpc = node({"getTransaction": result(landed)}, seen)
    tx = asyncio.run(rpc.get_transaction(signature))
    assert tx is not None
    assert (tx.signature, tx.succeeded, tx.fee_payer) == (signature, True, str(payer))
    assert network_cost(tx) == 5000  # 1_005_000 spent, 1_000_000 of it transferred
    assert sent(seen[0]) == (
        "getTransaction",
        [
            signature,
            {"encoding": "json", "commitment": "confirmed", "maxSupportedTransactionVersion": 0},
        ],
    )
    rpc = node({"getTransaction": result(None)}, [])
    assert asyncio.run(rpc.get_transaction(signature)) is None
