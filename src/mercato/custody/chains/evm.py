"""The EVM adapter: ETH and ERC-20 tokens over any Ethereum JSON-RPC node (docs/custody.md,
"EVM adapter").

It speaks plain JSON-RPC through web3.py's ``AsyncHTTPProvider`` (one HTTP request per
call, or one per batch) rather than through ``AsyncWeb3.eth``: the answers are parsed
here, so that a null (no receipt, no block) is a value and not an exception, every node
failure becomes ``ChainUnavailable`` in one place, and the calls a scan makes are exactly
the ones written below. Signing is the ``Signer``'s; checksums are eth-utils'.

A scan reads, for a height range: every block with its transactions (batched), one
``eth_getLogs`` per 1000 watched addresses for the configured tokens' ``Transfer`` logs
to them, and the receipts of the transactions that matched (batched). The number of
calls grows with the blocks and the matches, never with the watched addresses alone.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import aiohttp
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncHTTPProvider
from web3.exceptions import Web3Exception
from web3.types import RPCEndpoint

from mercato.custody.chains.base import (
    BlockRef,
    BroadcastRejected,
    ChainAdapter,
    ChainAsset,
    ChainKind,
    ChainUnavailable,
    FeeQuote,
    Incoming,
    InvalidAddress,
    ScannedBlock,
    SignedTx,
    Signer,
    Spend,
    TxState,
    TxStatus,
    Watched,
)

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
ERC20_TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]
ERC20_BALANCE_OF_SELECTOR = keccak(text="balanceOf(address)")[:4]
ETH_TRANSFER_GAS = 21_000
# Enough for transfer() of the common tokens (USDT ~63k to a fresh holder, USDC ~65k);
# unused gas is not paid, so a margin costs nothing but headroom in the fee quote.
ERC20_TRANSFER_GAS = 100_000
MAX_TOPIC_ADDRESSES = 1000  # per eth_getLogs: node limits on filter size are about there
# How nodes (geth, Erigon, Nethermind, Besu, Reth, Anvil) say it, lowercased.
ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")
NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")
# Refusals for good: these bytes will not be accepted (unless the nonce is ours and
# already mined, checked first). Any other JSON-RPC error (rate limits, internal
# errors, a node still syncing) is ChainUnavailable: retried, never given up on.
REFUSED = (
    *NONCE_TOO_LOW,
    "replacement transaction underpriced",
    "replacement fee too low",
    "insufficient funds",
    "intrinsic gas too low",
    "exceeds block gas limit",
    "transaction underpriced",
    "invalid chain id",
    "invalid sender",
    "fee cap less than tip",
    "max priority fee per gas higher than max fee per gas",
    "exceeds the configured cap",
)

_HEX_ADDRESS = re.compile(r"^(0x|0X)?[0-9a-fA-F]{40}$")
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
# What a node failure looks like from here: no connection, a timeout, an HTTP error, or
# an answer that does not parse as the JSON-RPC we expect.
_NODE_FAILURES = (Web3Exception, aiohttp.ClientError, OSError, TimeoutError, ValueError)


P = ParamSpec("P")
R = TypeVar("R")


def _answers_checked(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """A node answer missing a field or holding the wrong type (a broken proxy, a node
    that is not what it claims) is ChainUnavailable too, never a KeyError to a worker."""

    @functools.wraps(method)
    async def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
            raise ChainUnavailable(f"{method.__name__}: garbled node answer: {error!r}") from error

    return checked


class RpcError(Exception):
    """The node answered a call with a JSON-RPC error (``message`` is the node's)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} ({code})")
        self.method = method
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Match:
    """A candidate transfer found in a block, before its receipt confirms it."""

    txid: str
    height: int
    position: int  # the transaction's index in its block, for ordering
    to_address: str  # as watched
    from_address: str
    asset: str
    amount: int
    log_index: int | None  # None: the transaction's own value


class EvmAdapter:
    """One EVM chain behind ``ChainAdapter``. Stateless but for the connection and the
    chain id, asked once. ``batch_size`` is the most calls per JSON-RPC batch (0: no
    batches, concurrent single calls instead, for nodes that refuse batches)."""

    kind: ChainKind = "evm"
    uses_nonces = True

    def __init__(
        self,
        name: str,
        rpc_url: str,
        assets: Sequence[ChainAsset],
        chain_id: int | None = None,
        *,
        timeout_seconds: float = 15.0,
        batch_size: int = 50,
        concurrency: int = 8,
    ) -> None:
        self.name = name
        self.rpc_url = rpc_url
        self.assets = tuple(assets)
        self._chain_id = chain_id
        self._batch_size = batch_size
        self._concurrency = concurrency
        # No retries inside the provider: the workers retry on ChainUnavailable, and a
        # stopped node must be reported now, not after a backoff.
        self.provider = AsyncHTTPProvider(
            rpc_url,
            exception_retry_configuration=None,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_seconds)},
        )

    async def close(self) -> None:
        """Close the HTTP sessions (the adapter is unusable afterwards only until the
        next call, which opens a new one)."""
        await self.provider.disconnect()

    # ------------------------------------------------------------------ addresses

    def normalize_address(self, text: str) -> str:
        candidate = text.strip()
        if not _HEX_ADDRESS.match(candidate):
            if _BASE58.match(candidate):
                raise InvalidAddress(
                    f"{candidate!r} looks like another chain's address (base58, e.g. "
                    "Solana), not an EVM address: 0x followed by 40 hex digits"
                )
            raise InvalidAddress(
                f"{candidate!r} is not an EVM address: 0x followed by 40 hex digits (20 bytes)"
            )
        digits = candidate[2:] if candidate[:2] in ("0x", "0X") else candidate
        checksummed = to_checksum_address("0x" + digits)
        single_case = digits == digits.lower() or digits == digits.upper()
        if not single_case and checksummed[2:] != digits:
            raise InvalidAddress(
                f"{candidate!r}: EIP-55 checksum mismatch (a typo?); check the address"
            )
        return checksummed

    # --------------------------------------------------------------------- blocks

    @_answers_checked
    async def head(self) -> int:
        return _quantity(await self._call("eth_blockNumber"))

    @_answers_checked
    async def finalized(self) -> int | None:
        try:
            block = await self._call("eth_getBlockByNumber", "finalized", False)
        except ChainUnavailable as error:
            # A node without the tag (pre-merge chains, some L2s) refuses the call: that
            # is an answer, not an outage.
            if isinstance(error.__cause__, RpcError):
                return None
            raise
        return None if block is None else _quantity(block["number"])

    @_answers_checked
    async def block(self, height: int) -> BlockRef | None:
        block = await self._call("eth_getBlockByNumber", hex(height), False)
        return None if block is None else _block_ref(block)

    # ----------------------------------------------------------------------- scan

    @_answers_checked
    async def scan(self, start: int, end: int, watched: Watched) -> list[ScannedBlock]:
        if end < start:
            return []
        blocks = await self._full_blocks(start, end)
        targets = {address.lower(): address for address in watched.addresses}
        ignored = {address.lower() for address in watched.ignore_from}
        tokens = {
            asset.contract.lower(): asset
            for asset in (watched.assets or self.assets)
            if not asset.native
        }
        native = next((a for a in (watched.assets or self.assets) if a.native), None)
        matches = list(_native_matches(blocks, targets, ignored, native))
        if tokens and targets:
            logs = await self._transfer_logs(start, end, tokens, targets)
            matches += _log_matches(logs, blocks, targets, ignored, tokens)
        incoming = await self._confirm(matches, blocks, ignored)
        return [
            ScannedBlock(_block_ref(block), tuple(incoming.get(height, ())))
            for height, block in sorted(blocks.items())
        ]

    async def _full_blocks(self, start: int, end: int) -> dict[int, dict[str, Any]]:
        heights = range(start, end + 1)
        answers = await self._many(
            [("eth_getBlockByNumber", (hex(height), True)) for height in heights]
        )
        blocks: dict[int, dict[str, Any]] = {}
        for height, block in zip(heights, answers, strict=True):
            if block is None:
                raise ChainUnavailable(f"{self.name}: block {height} not on the node yet")
            blocks[height] = block
        return blocks

    async def _transfer_logs(
        self,
        start: int,
        end: int,
        tokens: dict[str, ChainAsset],
        targets: dict[str, str],
    ) -> list[dict[str, Any]]:
        contracts = [to_checksum_address(contract) for contract in tokens]
        padded = ["0x" + "0" * 24 + address[2:] for address in sorted(targets)]
        logs: list[dict[str, Any]] = []
        for offset in range(0, len(padded), MAX_TOPIC_ADDRESSES):
            chunk = padded[offset : offset + MAX_TOPIC_ADDRESSES]
            query = {
                "fromBlock": hex(start),
                "toBlock": hex(end),
                "address": contracts,
                "topics": [TRANSFER_TOPIC, None, chunk],
            }
            logs += await self._call("eth_getLogs", query)
        return logs

    async def _confirm(
        self,
        matches: list[_Match],
        blocks: dict[int, dict[str, Any]],
        ignored: set[str],
    ) -> dict[int, list[Incoming]]:
        """Keep the matches whose transaction succeeded in the block we read, each with
        its stable index (0: the value; 1 + k: the transaction's k-th log)."""
        txids = sorted({match.txid for match in matches})
        receipts = dict(
            zip(
                txids,
                await self._many([("eth_getTransactionReceipt", (txid,)) for txid in txids]),
                strict=True,
            )
        )
        found: dict[int, list[Incoming]] = {}
        for match in sorted(
            matches,
            key=lambda m: (m.height, m.position, -1 if m.log_index is None else m.log_index),
        ):
            receipt = receipts[match.txid]
            if receipt is None or receipt["blockHash"] != blocks[match.height]["hash"]:
                raise ChainUnavailable(
                    f"{self.name}: the chain moved under the scan of block {match.height}"
                )
            if _quantity(receipt.get("status", "0x1")) != 1:
                continue  # reverted: it moved nothing (a reverted tx has no logs anyway)
            if match.log_index is not None and str(receipt["from"]).lower() in ignored:
                continue
            index = 0 if match.log_index is None else _log_position(receipt, match.log_index)
            found.setdefault(match.height, []).append(
                Incoming(
                    match.txid,
                    index,
                    match.to_address,
                    match.from_address,
                    match.asset,
                    match.amount,
                )
            )
        return found

    # ----------------------------------------------------------- balances and fees

    @_answers_checked
    async def balance(self, address: str, asset: ChainAsset) -> int:
        owner = self.normalize_address(address)
        if asset.native:
            return _quantity(await self._call("eth_getBalance", owner, "latest"))
        data = "0x" + (ERC20_BALANCE_OF_SELECTOR + _word(int(owner, 16))).hex()
        call = {"to": to_checksum_address(asset.contract), "data": data}
        answer = await self._call("eth_call", call, "latest")
        try:
            return int(answer, 16)
        except (TypeError, ValueError) as error:
            raise ChainUnavailable(f"{self.name}: balanceOf answered {answer!r}") from error

    @_answers_checked
    async def fees(self, asset: ChainAsset) -> FeeQuote:
        latest = await self._call("eth_getBlockByNumber", "latest", False)
        if latest is None or "baseFeePerGas" not in latest:
            raise ChainUnavailable(f"{self.name}: the node reports no EIP-1559 base fee")
        base_fee = _quantity(latest["baseFeePerGas"])
        priority_fee = await self._priority_fee()
        # Twice the base fee: still enough after six full blocks of +12.5 % each.
        gas_limit = ETH_TRANSFER_GAS if asset.native else ERC20_TRANSFER_GAS
        return FeeQuote(2 * base_fee + priority_fee, priority_fee, gas_limit)

    async def _priority_fee(self) -> int:
        """The node's suggestion, else the median tip of the last 10 blocks."""
        try:
            return _quantity(await self._call("eth_maxPriorityFeePerGas"))
        except ChainUnavailable as error:
            if not isinstance(error.__cause__, RpcError):
                raise
        history = await self._call("eth_feeHistory", hex(10), "latest", [50])
        tips = sorted(_quantity(rewards[0]) for rewards in history.get("reward") or [])
        return tips[len(tips) // 2] if tips else 0

    @_answers_checked
    async def next_nonce(self, address: str) -> int:
        owner = self.normalize_address(address)
        return _quantity(await self._call("eth_getTransactionCount", owner, "latest"))

    # ----------------------------------------------------- sign, send and follow

    async def sign(self, spend: Spend, signer: Signer) -> SignedTx:
        if spend.nonce is None:
            raise ValueError("an EVM spend needs its nonce from Mercato's allocator")
        to = self.normalize_address(spend.to_address)
        transaction: dict[str, object] = {
            "type": 2,
            "chainId": await self.chain_id(),
            "nonce": spend.nonce,
            "gas": spend.fee.gas_limit,
            "maxFeePerGas": spend.fee.max_fee,
            "maxPriorityFeePerGas": spend.fee.priority_fee,
        }
        if spend.asset.native:
            transaction |= {"to": to, "value": spend.amount, "data": b""}
        else:
            calldata = ERC20_TRANSFER_SELECTOR + _word(int(to, 16)) + _word(spend.amount)
            contract = to_checksum_address(spend.asset.contract)
            transaction |= {"to": contract, "value": 0, "data": calldata}
        raw, txid = signer.sign_evm(spend.key, transaction)
        return SignedTx(_txid(txid), bytes(raw), spend.nonce, spend.fee)

    async def chain_id(self) -> int:
        """The configured chain id, else the node's (asked once)."""
        if self._chain_id is None:
            self._chain_id = _quantity(await self._call("eth_chainId"))
        return self._chain_id

    async def broadcast(self, tx: SignedTx) -> None:
        try:
            await self._call("eth_sendRawTransaction", "0x" + tx.raw.hex())
        except ChainUnavailable as error:
            refusal = error.__cause__
            if not isinstance(refusal, RpcError):
                raise
            reason = refusal.message.lower()
            if _has(reason, ALREADY_KNOWN):
                return
            # "nonce too low" after a restart usually means these very bytes were mined.
            if (await self.status(tx.txid)).state in ("MINED", "FAILED"):
                return
            if _has(reason, REFUSED):
                raise BroadcastRejected(refusal.message) from refusal
            raise

    @_answers_checked
    async def status(self, txid: str) -> TxStatus:
        receipt = await self._call("eth_getTransactionReceipt", txid)
        if receipt is None:
            known = await self._call("eth_getTransactionByHash", txid)
            return TxStatus("PENDING" if known is not None else "UNKNOWN")
        state: TxState = "MINED" if _quantity(receipt.get("status", "0x1")) == 1 else "FAILED"
        fee = _quantity(receipt["gasUsed"]) * _quantity(receipt["effectiveGasPrice"])
        return TxStatus(state, _quantity(receipt["blockNumber"]), fee)

    async def can_still_land(self, tx: SignedTx) -> bool:
        if tx.nonce is None:
            raise ValueError("an EVM transaction carries its nonce")
        sender = await self._sender(tx)
        if await self.next_nonce(sender) <= tx.nonce:
            return True
        # The nonce is spent: by this transaction (it landed) or by another (never).
        return (await self.status(tx.txid)).state in ("MINED", "FAILED")

    async def _sender(self, tx: SignedTx) -> str:
        try:
            return str(Account.recover_transaction(tx.raw))
        except Exception as error:  # eth-account raises several kinds on bad bytes
            raise ValueError(f"not a signed EVM transaction: {error}") from error

    # ------------------------------------------------------------------- JSON-RPC

    async def _call(self, method: str, *params: Any) -> Any:
        """One call; its ``result``. A JSON-RPC error or no answer: ChainUnavailable
        (caused by RpcError for the former, so that callers can read the refusal)."""
        try:
            response = await self.provider.make_request(RPCEndpoint(method), list(params))
        except _NODE_FAILURES as error:
            raise ChainUnavailable(f"{self.name}: {method}: {error!r}") from error
        return self._result(method, response)

    async def _many(self, calls: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        """The results of ``calls``, in order: JSON-RPC batches of ``batch_size`` calls,
        or (``batch_size`` 0) single calls, ``concurrency`` at a time."""
        if not calls:
            return []
        if self._batch_size <= 0:
            limit = asyncio.Semaphore(self._concurrency)

            async def one(method: str, params: Sequence[Any]) -> Any:
                async with limit:
                    return await self._call(method, *params)

            return list(await asyncio.gather(*(one(m, p) for m, p in calls)))
        results: list[Any] = []
        for offset in range(0, len(calls), self._batch_size):
            results += await self._batch(calls[offset : offset + self._batch_size])
        return results

    async def _batch(self, calls: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        requests = [(RPCEndpoint(method), list(params)) for method, params in calls]
        try:
            responses = await self.provider.make_batch_request(requests)
        except (*_NODE_FAILURES, AttributeError, TypeError) as error:
            # (AttributeError, TypeError: a single error object where a list belongs)
            raise ChainUnavailable(f"{self.name}: batch: {error!r}") from error
        if not isinstance(responses, list) or len(responses) != len(calls):
            raise ChainUnavailable(f"{self.name}: batch answered {responses!r:.200}")
        return [
            self._result(method, response)
            for (method, _), response in zip(calls, responses, strict=True)
        ]

    def _result(self, method: str, response: Any) -> Any:
        if not isinstance(response, dict):
            raise ChainUnavailable(f"{self.name}: {method} answered {response!r:.200}")
        if "error" in response:
            error = response["error"] or {}
            refusal = RpcError(method, int(error.get("code", 0)), str(error.get("message")))
            raise ChainUnavailable(f"{self.name}: {refusal}") from refusal
        if "result" not in response:
            raise ChainUnavailable(f"{self.name}: {method} answered {response!r:.200}")
        return response["result"]


# ----------------------------------------------------------------- pure helpers


def _native_matches(
    blocks: dict[int, dict[str, Any]],
    targets: dict[str, str],
    ignored: set[str],
    native: ChainAsset | None,
) -> Iterable[_Match]:
    """Transactions whose own value goes to a watched address (index 0). Value moved by
    a contract's internal call is not in the block, and not seen (docs/custody.md)."""
    if native is None:
        return
    for height, block in blocks.items():
        for tx in block["transactions"]:
            to = (tx.get("to") or "").lower()
            value = _quantity(tx.get("value", "0x0"))
            if to in targets and value > 0 and tx["from"].lower() not in ignored:
                yield _Match(
                    txid=tx["hash"].lower(),
                    height=height,
                    position=_quantity(tx["transactionIndex"]),
                    to_address=targets[to],
                    from_address=to_checksum_address(tx["from"]),
                    asset=native.symbol,
                    amount=value,
                    log_index=None,
                )


def _log_matches(
    logs: list[dict[str, Any]],
    blocks: dict[int, dict[str, Any]],
    targets: dict[str, str],
    ignored: set[str],
    tokens: dict[str, ChainAsset],
) -> Iterable[_Match]:
    for log in logs:
        if log.get("removed"):
            continue
        height = _quantity(log["blockNumber"])
        if height not in blocks or log["blockHash"] != blocks[height]["hash"]:
            raise ChainUnavailable(f"logs of block {height} are from another fork")
        topics = log["topics"]
        data = bytes.fromhex(log["data"][2:])
        asset = tokens.get(log["address"].lower())
        if asset is None or len(topics) != 3 or len(data) != 32:
            continue  # not an ERC-20 Transfer (e.g. ERC-721's has the id as a topic)
        to = "0x" + topics[2][-40:].lower()
        sender = "0x" + topics[1][-40:].lower()
        amount = int.from_bytes(data, "big")
        if to not in targets or sender in ignored or amount == 0:
            continue
        yield _Match(
            txid=log["transactionHash"].lower(),
            height=height,
            position=_quantity(log["transactionIndex"]),
            to_address=targets[to],
            from_address=to_checksum_address(sender),
            asset=asset.symbol,
            amount=amount,
            log_index=_quantity(log["logIndex"]),
        )


def _log_position(receipt: dict[str, Any], log_index: int) -> int:
    """1 + the log's position within its transaction: stable when the transaction moves
    to another block, unlike ``logIndex``, which counts from the block's first log."""
    for position, log in enumerate(receipt["logs"]):
        if _quantity(log["logIndex"]) == log_index:
            return 1 + position
    raise ChainUnavailable(f"receipt of {receipt['transactionHash']} lacks log {log_index}")


def _block_ref(block: dict[str, Any]) -> BlockRef:
    height = _quantity(block["number"])
    return BlockRef(
        height, block["hash"], block["parentHash"], height - 1, _quantity(block["timestamp"])
    )


def _quantity(value: Any) -> int:
    """A JSON-RPC quantity ("0x1a") as an int; anything else is a garbled answer."""
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainUnavailable(f"not a JSON-RPC quantity: {value!r:.80}")
    return int(value, 16)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _txid(value: object) -> str:
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    text = text.lower()
    return text if text.startswith("0x") else "0x" + text


def _has(text: str, phrases: Iterable[str]) -> bool:
    return any(phrase in text for phrase in phrases)


if TYPE_CHECKING:  # mypy checks that the adapter is a ChainAdapter
    _conforms: ChainAdapter = EvmAdapter("", "", ())
