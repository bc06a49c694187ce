"""The interface every chain adapter implements, and the values that cross it.

Amounts that cross this interface are integers in the chain's own smallest unit (wei,
lamports, token base units): conversion to ledger atoms happens in one place only
(``mercato.custody.units``). Adapters are stateless apart from their RPC connection:
what must survive a crash (cursors, nonces, signed transactions) is stored by the
workers, never inside an adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mercato.core.errors import CodedError, ErrorKind

ChainKind = Literal["evm", "solana"]
KeyRole = Literal["hot", "deposit"]
TxState = Literal["UNKNOWN", "PENDING", "MINED", "FAILED"]


class InvalidAddress(CodedError):
    """The text is not an address of this chain (wrong checksum, wrong alphabet or
    length, another chain's address). ``code`` is ``INVALID_ADDRESS``."""

    def __init__(self, message: str) -> None:
        super().__init__("INVALID_ADDRESS", message, ErrorKind.INVALID)


class ChainUnavailable(RuntimeError):
    """The node did not answer or answered garbage; the caller retries later."""


class BroadcastRejected(RuntimeError):
    """The node refused a transaction for good (not 'already known', which is success).
    ``reason`` is the node's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyRef:
    """Which key of the HD tree: a chain's hot wallet (index 0) or a deposit address
    (the index assigned once to a user and stored). The derivation path is the signer's
    business (docs/custody.md, "Keys")."""

    chain_kind: ChainKind
    role: KeyRole
    index: int


@dataclass(frozen=True)
class ChainAsset:
    """An asset as one chain knows it: the native coin (``contract`` empty) or a token
    (ERC-20 contract address, SPL mint), with its decimals on chain."""

    symbol: str
    contract: str
    chain_decimals: int

    @property
    def native(self) -> bool:
        return not self.contract


@dataclass(frozen=True)
class BlockRef:
    """A block as the watcher stores it. ``parent_height`` is ``height - 1`` on EVM; on
    Solana slots can be skipped, so it is the parent slot."""

    height: int
    hash: str
    parent_hash: str
    parent_height: int
    timestamp: int = 0  # seconds, as the chain says


@dataclass(frozen=True)
class Incoming:
    """A transfer to one of our addresses found in a block. ``index`` makes
    ``chain:txid:index`` unique and stable when the transaction moves to another block
    in a reorg: on EVM 0 is the value the transaction itself carries and 1+k its k-th log;
    on Solana it is the instruction's position in the transaction."""

    txid: str
    index: int
    to_address: str  # the owner address we gave out (for SPL: the wallet, not the ATA)
    from_address: str
    asset: str  # symbol
    amount: int  # chain units


@dataclass(frozen=True)
class ScannedBlock:
    block: BlockRef
    incoming: tuple[Incoming, ...] = ()


@dataclass(frozen=True)
class FeeQuote:
    """What a transaction will pay. EVM (EIP-1559): ``max_fee`` and ``priority_fee`` per
    gas and the ``gas_limit``. Solana: ``priority_fee`` is micro-lamports per compute unit
    (0 for none), ``max_fee`` the lamports the fee payer is charged at most."""

    max_fee: int
    priority_fee: int
    gas_limit: int = 0


@dataclass(frozen=True)
class Spend:
    """One outgoing transfer to sign: from one of our keys to an address, in chain units.
    ``nonce`` is Mercato's own allocation on EVM (``None`` on Solana)."""

    key: KeyRef
    from_address: str
    to_address: str
    asset: ChainAsset
    amount: int
    fee: FeeQuote
    nonce: int | None = None


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction, stored before it is ever broadcast. ``raw`` is exactly the
    bytes the node gets (again, after a restart). ``valid_until`` is, on Solana, the last
    block height at which its blockhash can land (``None`` on EVM, where only the nonce
    being used by another transaction ends it)."""

    txid: str
    raw: bytes
    nonce: int | None
    fee: FeeQuote
    recent_blockhash: str = ""
    valid_until: int | None = None


@dataclass(frozen=True)
class TxStatus:
    """``MINED`` with the block height it is in (``FAILED``: mined but reverted, or an
    error the chain recorded; the fee was still paid). ``fee_paid`` is in the native
    coin's chain units, known once mined."""

    state: TxState
    height: int | None = None
    fee_paid: int = 0


@dataclass(frozen=True)
class Watched:
    """The addresses a scan looks for, and the assets of the chain (by contract)."""

    addresses: frozenset[str]
    assets: Sequence[ChainAsset] = field(default_factory=tuple)
    ignore_from: frozenset[str] = frozenset()  # our own senders (hot wallet gas top-ups)


class Signer(Protocol):
    """All signing goes through here: a local seed today, an HSM / KMS / MPC service
    tomorrow, without a change to the workers. Nothing else sees a private key."""

    def address(self, key: KeyRef) -> str:
        """The address (EVM checksummed hex, Solana base58) of ``key``."""
        ...

    def sign_evm(self, key: KeyRef, transaction: dict[str, object]) -> tuple[bytes, str]:
        """Sign an EVM transaction dict (eth-account's fields); (raw bytes, tx hash)."""
        ...

    def sign_solana(self, key: KeyRef, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of a serialized Solana message."""
        ...


class ChainAdapter(Protocol):
    """One chain: addresses, scanning, fees, build/sign/broadcast, status, balances.
    Every method that talks to the node raises ChainUnavailable when it cannot."""

    name: str  # the configured chain name ("ethereum", "solana"): first part of ids
    kind: ChainKind
    uses_nonces: bool  # EVM: the sender allocates nonces (Mercato's allocator)

    def normalize_address(self, text: str) -> str:
        """The canonical form of ``text`` (EIP-55 for EVM), or raise InvalidAddress."""
        ...

    async def head(self) -> int:
        """The newest block height (EVM block number, Solana slot) the node has."""
        ...

    async def finalized(self) -> int | None:
        """The node's finalized height, or None where the chain has no such tag."""
        ...

    async def block(self, height: int) -> BlockRef | None:
        """The block at ``height`` on the node's current chain (None: skipped slot, or
        beyond the head)."""
        ...

    async def scan(self, start: int, end: int, watched: Watched) -> list[ScannedBlock]:
        """Every block in [start, end] (skipped Solana slots left out), in height order,
        each with the transfers to watched addresses in it. Must not make one RPC call
        per address: logs filtered by topic and block-level reads."""
        ...

    async def balance(self, address: str, asset: ChainAsset) -> int:
        """What ``address`` holds of ``asset`` now, in chain units (latest state)."""
        ...

    async def fees(self, asset: ChainAsset) -> FeeQuote:
        """A fee quote for one transfer of ``asset`` now."""
        ...

    async def next_nonce(self, address: str) -> int:
        """The chain's count of mined transactions from ``address`` (EVM): only used to
        start Mercato's allocator once and to tell that a nonce is spent, never to
        allocate."""
        ...

    async def sign(self, spend: Spend, signer: Signer) -> SignedTx:
        """Build and sign ``spend`` (Solana: with a fresh recent blockhash)."""
        ...

    async def broadcast(self, tx: SignedTx) -> None:
        """Send the stored bytes. 'Already known' / already mined is success; a refusal
        for good raises BroadcastRejected; no answer raises ChainUnavailable."""
        ...

    async def status(self, txid: str) -> TxStatus: ...

    async def can_still_land(self, tx: SignedTx) -> bool:
        """False once ``tx`` can never be included (Solana: its blockhash expired; EVM:
        its nonce was used by another transaction). Only then may a new transaction
        replace it with a new blockhash; an EVM replacement keeps the nonce instead."""
        ...


def fee_bumped(fee: FeeQuote, permille: int = 125) -> FeeQuote:
    """Both fee fields raised by at least ``permille`` / 10 percent (125: 12.5 %), rounded
    up, and by at least 1 so that a zero fee moves. Geth refuses a replacement under 10 %."""

    def up(value: int) -> int:
        return max(value + 1, -(-value * (1000 + permille) // 1000))

    return FeeQuote(up(fee.max_fee), up(fee.priority_fee), fee.gas_limit)
