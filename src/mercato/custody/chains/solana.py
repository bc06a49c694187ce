"""The Solana adapter: SOL and SPL tokens (the classic Token program), over a
``SolanaRpc`` backend.

solders builds and serializes every transaction; what the node is asked goes through
``SolanaRpc``, a handful of calls. Production uses ``JsonRpcSolana`` (the ``solana``
package's AsyncClient over JSON-RPC); the tests drive this same adapter through
``tests/custody/litesvm_ledger.py`` (LiteSVM: the real System, Token and Associated Token
Account programs executing real signed transactions). docs/custody.md, "Solana adapter",
says what is scanned and what the LiteSVM ledger leaves untested.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.commitment_config import CommitmentLevel
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.config import RpcContextConfig
from solders.rpc.errors import LongTermStorageSlotSkippedMessage, SlotSkippedMessage
from solders.rpc.requests import IsBlockhashValid
from solders.rpc.responses import IsBlockhashValidResp
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.token.associated import get_associated_token_address
from solders.token.state import TokenAccount
from solders.transaction import Transaction

from mercato.custody.chains.base import (
    BlockRef,
    BroadcastRejected,
    ChainAsset,
    ChainKind,
    ChainUnavailable,
    FeeQuote,
    Incoming,
    InvalidAddress,
    KeyRef,
    ScannedBlock,
    SignedTx,
    Signer,
    Spend,
    TxState,
    TxStatus,
    Watched,
)

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
LAMPORTS_PER_SIGNATURE = 5_000  # the base fee; Mercato adds no priority fee (yet)

# Instruction tags (the first bytes of the instruction data) of the documented layouts.
SYSTEM_TRANSFER = 2  # u32 tag, u64 lamports; accounts [from, to]
SYSTEM_TRANSFER_WITH_SEED = 11  # u32 tag, u64 lamports, seed, owner; [from, base, to]
TOKEN_TRANSFER = 3  # u8 tag, u64 amount; [source, destination, authority]
TOKEN_TRANSFER_CHECKED = 12  # u8 tag, u64 amount, u8 decimals; [source, mint, dest, authority]
ATA_CREATE_IDEMPOTENT = 1  # u8 tag; [payer, ata, owner, mint, system program, token program]


# ------------------------------------------------------------------ the RPC boundary


@dataclass(frozen=True)
class SolInstruction:
    """A top-level instruction with its accounts resolved to addresses."""

    program_id: str
    accounts: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class SolTransaction:
    signature: str  # the first signature: the transaction's id
    succeeded: bool
    instructions: tuple[SolInstruction, ...]
    fee_payer: str = ""  # the first account
    payer_spent: int = 0  # lamports the fee payer lost over the transaction


@dataclass(frozen=True)
class SolBlock:
    slot: int
    blockhash: str
    previous_blockhash: str
    parent_slot: int
    block_time: int
    transactions: tuple[SolTransaction, ...]


@dataclass(frozen=True)
class SignatureStatus:
    slot: int
    err: str | None  # None: succeeded


class RpcRefused(Exception):
    """The node answered, and refused (a send it will not forward, for ``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SolanaRpc(Protocol):
    """The calls the adapter makes. Each raises ChainUnavailable when the node cannot be
    reached or answers garbage; ``send_raw`` raises RpcRefused when it refuses."""

    async def get_slot(self, commitment: str) -> int: ...

    async def get_block(self, slot: int, commitment: str) -> SolBlock | None:
        """None: the slot was skipped (or is not produced yet)."""
        ...

    async def get_balance(self, address: str) -> int: ...

    async def get_token_account_balance(self, account: str) -> int:
        """The token amount in ``account``; 0 when the account does not exist."""
        ...

    async def get_latest_blockhash(self) -> tuple[str, int]:
        """(blockhash, last valid block height)."""
        ...

    async def get_block_height(self, commitment: str) -> int: ...

    async def send_raw(self, raw: bytes) -> str: ...

    async def get_signature_status(self, signature: str) -> SignatureStatus | None: ...

    async def get_transaction(self, signature: str) -> SolTransaction | None:
        """A landed transaction (None: not on chain, or not yet at 'confirmed')."""
        ...

    async def is_blockhash_valid(self, blockhash: str, commitment: str) -> bool: ...


# ------------------------------------------------------------------ the adapter


def associated_token_address(owner: str, mint: str) -> str:
    """The owner's associated token account for ``mint`` (classic Token program)."""
    return str(get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint)))


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


class SolanaAdapter:
    """``ChainAdapter`` for Solana. Heights are slots; ``commitment`` (``finalized`` or
    ``confirmed``) is the level the head, blocks and scans are read at."""

    kind: ChainKind = "solana"
    uses_nonces = False

    def __init__(
        self,
        name: str,
        rpc: SolanaRpc,
        assets: Sequence[ChainAsset],
        commitment: str = "finalized",
    ) -> None:
        if commitment not in ("finalized", "confirmed"):
            raise ValueError("getBlock serves only 'confirmed' or 'finalized' blocks")
        self.name = name
        self.rpc = rpc
        self.assets = tuple(assets)
        self.commitment = commitment

    # ------------------------------------------------------------ addresses

    def normalize_address(self, text: str) -> str:
        """The base58 form of a 32-byte wallet address. Off-curve addresses (program
        derived, e.g. an associated token account pasted instead of the wallet) are
        refused: a token sent "to" one would create a token account nobody can sign for."""
        text = text.strip()
        if text[:2].lower() == "0x":
            raise InvalidAddress(
                f"{text!r} looks like an EVM (0x...) address; a Solana address is base58"
            )
        try:
            key = Pubkey.from_string(text)
        except ValueError:
            raise InvalidAddress(
                f"{text!r} is not a Solana address (32 bytes in base58, 32 to 44 characters)"
            ) from None
        if str(key) != text:
            raise InvalidAddress(f"{text!r} is not in canonical base58 form; use {key}")
        if not key.is_on_curve():
            raise InvalidAddress(
                f"{text} is a program-derived address (for example a token account), not "
                "a wallet: give the wallet (owner) address"
            )
        return text

    # ------------------------------------------------------------ blocks

    async def head(self) -> int:
        return await self.rpc.get_slot(self.commitment)

    async def finalized(self) -> int | None:
        return await self.rpc.get_slot("finalized")

    async def block(self, height: int) -> BlockRef | None:
        block = await self.rpc.get_block(height, self.commitment)
        return None if block is None else _block_ref(block)

    async def scan(self, start: int, end: int, watched: Watched) -> list[ScannedBlock]:
        targets = _Targets.build(watched, watched.assets or self.assets)
        scanned: list[ScannedBlock] = []
        for slot in range(start, end + 1):
            block = await self.rpc.get_block(slot, self.commitment)
            if block is None:
                continue  # a skipped slot
            incoming = [
                found
                for tx in block.transactions
                if tx.succeeded
                for found in targets.incoming_in(tx)
                if found.from_address not in watched.ignore_from
            ]
            scanned.append(ScannedBlock(_block_ref(block), tuple(incoming)))
        return scanned

    # ------------------------------------------------------------ balances and fees

    async def balance(self, address: str, asset: ChainAsset) -> int:
        if asset.native:
            return await self.rpc.get_balance(address)
        return await self.rpc.get_token_account_balance(
            associated_token_address(address, asset.contract)
        )

    async def fees(self, asset: ChainAsset) -> FeeQuote:
        """The base fee of a one-signature transaction; no priority fee. (Creating the
        recipient's token account also costs its rent, ~0.002 SOL, paid by the sender;
        ``status`` reports it in ``fee_paid`` once mined.)"""
        return FeeQuote(max_fee=LAMPORTS_PER_SIGNATURE, priority_fee=0)

    async def next_nonce(self, address: str) -> int:
        raise NotImplementedError("Solana transactions carry a recent blockhash, no nonce")

    # ------------------------------------------------------------ sending

    async def sign(self, spend: Spend, signer: Signer) -> SignedTx:
        blockhash, last_valid_height = await self.rpc.get_latest_blockhash()
        # Every signing key, by address: today the sender alone, also the fee payer. A
        # separate fee payer (the hot wallet paying a deposit address's sweep) is one more
        # entry here and a different ``payer``.
        keys: dict[Pubkey, KeyRef] = {Pubkey.from_string(spend.from_address): spend.key}
        payer = Pubkey.from_string(spend.from_address)
        message = Message.new_with_blockhash(
            _transfer_instructions(spend, payer), payer, Hash.from_string(blockhash)
        )
        required = message.account_keys[: message.header.num_required_signatures]
        signatures = [_signature(signer, keys[key], key, bytes(message)) for key in required]
        tx = Transaction.populate(message, signatures)
        fee = FeeQuote(max_fee=LAMPORTS_PER_SIGNATURE * len(signatures), priority_fee=0)
        return SignedTx(
            txid=str(signatures[0]),
            raw=bytes(tx),
            nonce=None,
            fee=fee,
            recent_blockhash=blockhash,
            valid_until=last_valid_height,
        )

    async def broadcast(self, tx: SignedTx) -> None:
        """Send the stored bytes. Already processed: success. Blockhash not found is not a
        refusal for good: a node behind the cluster says it of a fresh blockhash, and a
        copy sent before may still land, so it raises ChainUnavailable and the sender's
        ``can_still_land`` decides when to replace the transaction."""
        try:
            await self.rpc.send_raw(tx.raw)
        except RpcRefused as refused:
            reason = refused.reason
            if "AlreadyProcessed" in reason or "already been processed" in reason:
                return
            if "BlockhashNotFound" in reason or "Blockhash not found" in reason:
                raise ChainUnavailable(f"{tx.txid}: {reason}") from refused
            raise BroadcastRejected(reason) from refused

    async def status(self, txid: str) -> TxStatus:
        """MINED / FAILED with the slot as soon as the node has it (at any commitment:
        the sender counts depth against ``head``). PENDING is never reported: a Solana
        node has no mempool to ask."""
        found = await self.rpc.get_signature_status(txid)
        if found is None:
            return TxStatus("UNKNOWN")
        state: TxState = "MINED" if found.err is None else "FAILED"
        landed = await self.rpc.get_transaction(txid)
        # Until the node serves the transaction itself: the base fee of our one signature.
        paid = LAMPORTS_PER_SIGNATURE if landed is None else network_cost(landed)
        return TxStatus(state, height=found.slot, fee_paid=paid)

    async def can_still_land(self, tx: SignedTx) -> bool:
        """False once the blockhash has expired at the *finalized* level and the signature
        is not on chain. The expiry is read first, the status second: a transaction that
        landed before the expiry was read is then seen by the status read. At finalized,
        every block that could hold it (height <= ``valid_until``) is final, so "not
        found" is for good."""
        if tx.valid_until is None:
            raise ValueError("a Solana SignedTx carries valid_until")
        # Both read at finalized, as the blockhash ``sign`` used (so "not valid" cannot
        # mean "too new for this node").
        height = await self.rpc.get_block_height("finalized")
        expired = height > tx.valid_until or not await self.rpc.is_blockhash_valid(
            tx.recent_blockhash, "finalized"
        )
        if not expired:
            return True
        return (await self.status(tx.txid)).state in ("MINED", "FAILED")


def _signature(signer: Signer, key: KeyRef, address: Pubkey, message: bytes) -> Signature:
    """The signer's signature, checked: a remote signer (HSM, MPC) answering for another
    key or message is caught here rather than stored as a transaction that cannot land."""
    signature = Signature.from_bytes(signer.sign_solana(key, message))
    if not signature.verify(address, message):
        raise RuntimeError(f"the signer's signature for {key} does not verify as {address}")
    return signature


def network_cost(tx: SolTransaction) -> int:
    """What the fee payer lost beyond the SOL it transferred: the fee, plus the rent of
    an account the transaction created (the recipient's token account, ~0.002 SOL), which
    leaves custody as surely as the fee does."""
    if not tx.succeeded:
        return tx.payer_spent  # nothing moved but the fee
    sent = sum(
        _u64(ix.data, 4)
        for ix in tx.instructions
        if ix.program_id == str(SYSTEM_PROGRAM_ID)
        and len(ix.data) >= 12
        and struct.unpack_from("<I", ix.data)[0] == SYSTEM_TRANSFER
        and ix.accounts[:1] == (tx.fee_payer,)
    )
    return tx.payer_spent - sent


def _block_ref(block: SolBlock) -> BlockRef:
    return BlockRef(
        height=block.slot,
        hash=block.blockhash,
        parent_hash=block.previous_blockhash,
        parent_height=block.parent_slot,
        timestamp=block.block_time,
    )


def _transfer_instructions(spend: Spend, payer: Pubkey) -> list[Instruction]:
    sender = Pubkey.from_string(spend.from_address)
    recipient = Pubkey.from_string(spend.to_address)
    if spend.asset.native:
        return [
            transfer(TransferParams(from_pubkey=sender, to_pubkey=recipient, lamports=spend.amount))
        ]
    mint = Pubkey.from_string(spend.asset.contract)
    source = get_associated_token_address(sender, mint)
    destination = get_associated_token_address(recipient, mint)
    return [
        create_associated_token_account_idempotent(payer, recipient, mint),
        transfer_checked(
            source, mint, destination, sender, spend.amount, spend.asset.chain_decimals
        ),
    ]


def create_associated_token_account_idempotent(
    payer: Pubkey, owner: Pubkey, mint: Pubkey
) -> Instruction:
    """The ATA program's CreateIdempotent: creates ``owner``'s token account for ``mint``
    unless it exists (then a no-op), rent paid by ``payer``."""
    accounts = [
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(get_associated_token_address(owner, mint), is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=False, is_writable=False),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
        AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False),
    ]
    return Instruction(ASSOCIATED_TOKEN_PROGRAM_ID, bytes([ATA_CREATE_IDEMPOTENT]), accounts)


def transfer_checked(
    source: Pubkey,
    mint: Pubkey,
    destination: Pubkey,
    owner: Pubkey,
    amount: int,
    decimals: int,
) -> Instruction:
    """The Token program's TransferChecked: the program refuses it unless ``decimals``
    are the mint's, which catches a misconfigured asset before money moves."""
    data = struct.pack("<BQB", TOKEN_TRANSFER_CHECKED, amount, decimals)
    accounts = [
        AccountMeta(source, is_signer=False, is_writable=True),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(destination, is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=True, is_writable=False),
    ]
    return Instruction(TOKEN_PROGRAM_ID, data, accounts)


# ------------------------------------------------------------------ scanning


@dataclass(frozen=True)
class _Targets:
    """What a scan looks for: watched wallets (SOL) and their token accounts (one per
    watched owner per configured mint, derived once per scan, no RPC)."""

    native: ChainAsset | None
    wallets: frozenset[str]
    token_accounts: dict[str, tuple[str, ChainAsset]]  # ATA -> (owner, asset)

    @staticmethod
    def build(watched: Watched, assets: Sequence[ChainAsset]) -> _Targets:
        native = next((asset for asset in assets if asset.native), None)
        token_accounts = {
            associated_token_address(owner, asset.contract): (owner, asset)
            for asset in assets
            if not asset.native
            for owner in watched.addresses
        }
        return _Targets(native, frozenset(watched.addresses), token_accounts)

    def incoming_in(self, tx: SolTransaction) -> list[Incoming]:
        found = (
            self._incoming(tx.signature, index, ix) for index, ix in enumerate(tx.instructions)
        )
        return [incoming for incoming in found if incoming is not None]

    def _incoming(self, txid: str, index: int, ix: SolInstruction) -> Incoming | None:
        if ix.program_id == str(SYSTEM_PROGRAM_ID):
            return self._sol_transfer(txid, index, ix)
        if ix.program_id == str(TOKEN_PROGRAM_ID):
            return self._token_transfer(txid, index, ix)
        return None

    def _sol_transfer(self, txid: str, index: int, ix: SolInstruction) -> Incoming | None:
        if self.native is None or len(ix.data) < 12:
            return None
        tag = int(struct.unpack_from("<I", ix.data)[0])
        if tag == SYSTEM_TRANSFER and len(ix.accounts) >= 2:
            source, destination = ix.accounts[0], ix.accounts[1]
        elif tag == SYSTEM_TRANSFER_WITH_SEED and len(ix.accounts) >= 3:
            source, destination = ix.accounts[0], ix.accounts[2]
        else:
            return None
        if destination not in self.wallets:
            return None
        amount = _u64(ix.data, 4)
        return Incoming(txid, index, destination, source, self.native.symbol, amount)

    def _token_transfer(self, txid: str, index: int, ix: SolInstruction) -> Incoming | None:
        if len(ix.data) < 9:
            return None
        tag = ix.data[0]
        if tag == TOKEN_TRANSFER and len(ix.accounts) >= 3:
            destination, authority, mint = ix.accounts[1], ix.accounts[2], None
        elif tag == TOKEN_TRANSFER_CHECKED and len(ix.accounts) >= 4:
            destination, authority, mint = ix.accounts[2], ix.accounts[3], ix.accounts[1]
        else:
            return None
        target = self.token_accounts.get(destination)
        if target is None:
            return None
        owner, asset = target
        # The program refuses a transfer between accounts of different mints, so a
        # successful transfer into our ATA is of its mint; the check is belt and braces.
        if mint is not None and mint != asset.contract:
            return None
        # ``from``: the signing authority (the sender's wallet, or a delegate).
        return Incoming(txid, index, owner, authority, asset.symbol, _u64(ix.data, 1))


# ------------------------------------------------------------------ JSON-RPC (production)


class JsonRpcSolana:
    """``SolanaRpc`` over a Solana JSON-RPC node with the ``solana`` package's
    AsyncClient. Not exercised by the tests (no solana-test-validator on the machines
    this is built on): each method is the one RPC call its name says."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.client = AsyncClient(url, timeout=timeout)

    async def _call(self, method: str, *args: object, **kwargs: object) -> Any:
        try:
            return await getattr(self.client, method)(*args, **kwargs)
        except (SolanaRpcException, RPCNoResultException, OSError, ValueError) as error:
            # ValueError: an answer solders could not parse (garbage, for our purposes).
            raise ChainUnavailable(f"{method}: {error}") from error
        except RPCException as error:
            raise _RpcError(error.args[0] if error.args else error) from error

    async def get_slot(self, commitment: str) -> int:
        resp = await self._checked("get_slot", commitment=commitment)
        return int(resp.value)

    async def get_block(self, slot: int, commitment: str) -> SolBlock | None:
        try:
            resp = await self._call(
                "get_block",
                slot,
                encoding="json",
                max_supported_transaction_version=0,
                commitment=commitment,
            )
        except _RpcError as error:
            if isinstance(error.detail, SlotSkippedMessage | LongTermStorageSlotSkippedMessage):
                return None
            raise ChainUnavailable(f"getBlock {slot}: {error.detail}") from error
        return block_from_rpc(slot, resp.value)

    async def get_balance(self, address: str) -> int:
        resp = await self._checked("get_balance", Pubkey.from_string(address), "confirmed")
        return int(resp.value)

    async def get_token_account_balance(self, account: str) -> int:
        # getTokenAccountBalance errors for an account that does not exist; getAccountInfo
        # tells "absent" (0) from a node error.
        resp = await self._checked("get_account_info", Pubkey.from_string(account), "confirmed")
        if resp.value is None:
            return 0
        return int(TokenAccount.from_bytes(bytes(resp.value.data)).amount)

    async def get_latest_blockhash(self) -> tuple[str, int]:
        resp = await self._checked("get_latest_blockhash", "finalized")
        return str(resp.value.blockhash), int(resp.value.last_valid_block_height)

    async def get_block_height(self, commitment: str) -> int:
        resp = await self._checked("get_block_height", commitment)
        return int(resp.value)

    async def send_raw(self, raw: bytes) -> str:
        try:
            resp = await self._call(
                "send_raw_transaction",
                raw,
                TxOpts(
                    skip_confirmation=True, skip_preflight=False, preflight_commitment=Confirmed
                ),
            )
        except _RpcError as error:
            detail = error.detail
            err = getattr(getattr(detail, "data", None), "err", None)
            raise RpcRefused(f"{getattr(detail, 'message', detail)} ({err})") from error
        return str(resp.value)

    async def get_signature_status(self, signature: str) -> SignatureStatus | None:
        resp = await self._checked(
            "get_signature_statuses",
            [Signature.from_string(signature)],
            search_transaction_history=True,
        )
        status = resp.value[0]
        if status is None:
            return None
        return SignatureStatus(int(status.slot), None if status.err is None else str(status.err))

    async def get_transaction(self, signature: str) -> SolTransaction | None:
        resp = await self._checked(
            "get_transaction",
            Signature.from_string(signature),
            encoding="json",
            commitment=Confirmed,
            max_supported_transaction_version=0,
        )
        return None if resp.value is None else transaction_from_rpc(resp.value.transaction)

    async def is_blockhash_valid(self, blockhash: str, commitment: str) -> bool:
        # The AsyncClient has no wrapper for isBlockhashValid: its provider sends the body.
        level = (
            CommitmentLevel.Finalized if commitment == "finalized" else CommitmentLevel.Confirmed
        )
        body = IsBlockhashValid(Hash.from_string(blockhash), RpcContextConfig(level))
        resp = await self._call_provider(body, IsBlockhashValidResp)
        return bool(resp.value)

    async def _call_provider(self, body: Any, parser: Any) -> Any:
        try:
            return await self.client._provider.make_request(body, parser)
        except (SolanaRpcException, RPCException, OSError) as error:
            raise ChainUnavailable(f"isBlockhashValid: {error}") from error

    async def _checked(self, method: str, *args: object, **kwargs: object) -> Any:
        try:
            return await self._call(method, *args, **kwargs)
        except _RpcError as error:
            raise ChainUnavailable(f"{method}: {error.detail}") from error


class _RpcError(Exception):
    """The node's error answer (a solders RPCError value in ``detail``)."""

    def __init__(self, detail: object) -> None:
        super().__init__(str(detail))
        self.detail = detail


def block_from_rpc(slot: int, block: Any) -> SolBlock:
    """A getBlock answer (``json`` encoding, versioned transactions) as a SolBlock:
    account indexes resolved against the static keys followed by the addresses loaded
    from lookup tables (writable, then read-only), as the runtime orders them."""
    transactions = tuple(transaction_from_rpc(entry) for entry in block.transactions or ())
    return SolBlock(
        slot=slot,
        blockhash=str(block.blockhash),
        previous_blockhash=str(block.previous_blockhash),
        parent_slot=int(block.parent_slot),
        block_time=int(block.block_time or 0),
        transactions=transactions,
    )


def transaction_from_rpc(entry: Any) -> SolTransaction:
    """One transaction of a getBlock / getTransaction answer (``json`` encoding)."""
    message = entry.transaction.message
    meta = entry.meta
    keys = [str(key) for key in message.account_keys]
    loaded = getattr(meta, "loaded_addresses", None)
    if loaded is not None:
        keys += [str(key) for key in loaded.writable] + [str(key) for key in loaded.readonly]
    instructions = tuple(
        SolInstruction(
            program_id=keys[ix.program_id_index],
            accounts=tuple(keys[i] for i in ix.accounts),
            data=b58decode(ix.data),
        )
        for ix in message.instructions
    )
    spent = 0 if meta is None else int(meta.pre_balances[0]) - int(meta.post_balances[0])
    return SolTransaction(
        signature=str(entry.transaction.signatures[0]),
        succeeded=meta is not None and meta.err is None,
        instructions=instructions,
        fee_payer=keys[0],
        payer_spent=spent,
    )


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(text: str) -> bytes:
    """Bitcoin-alphabet base58 (instruction data in getBlock's ``json`` encoding)."""
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise ChainUnavailable(f"the node sent {text!r} as base58")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
