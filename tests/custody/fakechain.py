"""An in-memory chain behind the ChainAdapter interface, for the workers' logic tests
(reorgs at any depth, a node that is down, a transaction that never lands). The real
chains are tested through the real adapters on Anvil and LiteSVM (tests/custody/); this
double exists because those cannot, for example, drop a mined block on demand at an
exact point inside a worker's step."""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field

from mercato.custody.chains.base import (
    BlockRef,
    BroadcastRejected,
    ChainAsset,
    ChainUnavailable,
    FeeQuote,
    Incoming,
    InvalidAddress,
    ScannedBlock,
    SignedTx,
    Signer,
    Spend,
    TxStatus,
    Watched,
)

GAS_FEE = 21_000


@dataclass
class FakeTx:
    txid: str
    sender: str
    to: str
    asset: str
    amount: int
    nonce: int | None
    fee: int


@dataclass
class FakeBlock:
    ref: BlockRef
    txs: list[FakeTx] = field(default_factory=list)


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


class FakeChain:
    """Blocks are mined explicitly (``mine``); ``reorg(depth)`` replaces the newest
    ``depth`` blocks with new empty ones (a different fork); ``down`` makes every call
    raise ChainUnavailable; ``mempool`` holds broadcast transactions until mined."""

    kind = "evm"
    uses_nonces = True

    def __init__(self, name: str = "fake", assets: tuple[ChainAsset, ...] = ()) -> None:
        self.name = name
        self.assets = {asset.symbol: asset for asset in assets}
        genesis = BlockRef(0, _hash(name, 0, "genesis"), "0x" + "0" * 64, -1)
        self.blocks: list[FakeBlock] = [FakeBlock(genesis)]
        self.balances: dict[tuple[str, str], int] = {}
        self.nonces: dict[str, int] = {}
        self.mempool: dict[str, FakeTx] = {}
        self.mined: dict[str, int] = {}  # txid -> height
        self.broadcasts: list[str] = []  # every txid ever handed to broadcast
        self.down = False
        self.fork = 0
        self.accept_broadcasts = True

    # ------------------------------------------------------------ test controls

    def fund(self, address: str, asset: str, amount: int, sender: str = "0xexternal") -> str:
        """An external transfer to ``address``, in the mempool until the next block."""
        txid = _hash("fund", address, asset, amount, len(self.broadcasts), len(self.blocks))
        self.mempool[txid] = FakeTx(txid, sender, address, asset, amount, None, 0)
        self.broadcasts.append(txid)
        return txid

    def mine(self, count: int = 1) -> None:
        for _ in range(count):
            parent = self.blocks[-1].ref
            height = parent.height + 1
            ref = BlockRef(height, _hash(self.name, height, self.fork), parent.hash, height - 1)
            block = FakeBlock(ref)
            for tx in list(self.mempool.values()):
                if tx.nonce is not None and tx.nonce != self.nonces.get(tx.sender, 0):
                    continue  # a gap: waits
                del self.mempool[tx.txid]
                self._apply(tx)
                block.txs.append(tx)
                self.mined[tx.txid] = height
            self.blocks.append(block)

    def reorg(self, depth: int) -> list[FakeTx]:
        """Drop the newest ``depth`` blocks (their transactions are undone and forgotten),
        then mine ``depth`` + 1 empty blocks of a new fork. Returns what was dropped."""
        self.fork += 1
        dropped: list[FakeTx] = []
        for block in self.blocks[-depth:]:
            for tx in reversed(block.txs):
                self._undo(tx)
                del self.mined[tx.txid]
                dropped.append(tx)
        del self.blocks[-depth:]
        self.mine(depth + 1)
        return dropped

    def _apply(self, tx: FakeTx) -> None:
        key = (tx.sender, tx.asset)
        if tx.nonce is not None:
            self.balances[key] = self.balances.get(key, 0) - tx.amount
            native = (tx.sender, "NATIVE")
            self.balances[native] = self.balances.get(native, 0) - tx.fee
            self.nonces[tx.sender] = tx.nonce + 1
        self.balances[(tx.to, tx.asset)] = self.balances.get((tx.to, tx.asset), 0) + tx.amount

    def _undo(self, tx: FakeTx) -> None:
        self.balances[(tx.to, tx.asset)] -= tx.amount
        if tx.nonce is not None:
            self.balances[(tx.sender, tx.asset)] += tx.amount
            self.balances[(tx.sender, "NATIVE")] += tx.fee
            self.nonces[tx.sender] = tx.nonce

    def _check(self) -> None:
        if self.down:
            raise ChainUnavailable(f"{self.name}: node down")

    # ------------------------------------------------------------ ChainAdapter

    def normalize_address(self, text: str) -> str:
        if not text.startswith("0x") or len(text) < 3:
            raise InvalidAddress(f"{text!r} is not a {self.name} address (0x...)")
        return text.lower()

    async def head(self) -> int:
        self._check()
        return self.blocks[-1].ref.height

    async def finalized(self) -> int | None:
        self._check()
        return None

    async def block(self, height: int) -> BlockRef | None:
        self._check()
        return self.blocks[height].ref if 0 <= height < len(self.blocks) else None

    async def scan(self, start: int, end: int, watched: Watched) -> list[ScannedBlock]:
        self._check()
        out = []
        for block in self.blocks[start : end + 1]:
            incoming = tuple(
                Incoming(tx.txid, 0, tx.to, tx.sender, tx.asset, tx.amount)
                for tx in block.txs
                if tx.to in watched.addresses and tx.sender not in watched.ignore_from
            )
            out.append(ScannedBlock(block.ref, incoming))
        return out

    async def balance(self, address: str, asset: ChainAsset) -> int:
        self._check()
        return self.balances.get((address, asset.symbol), 0)

    async def fees(self, asset: ChainAsset) -> FeeQuote:
        self._check()
        return FeeQuote(max_fee=1, priority_fee=1, gas_limit=GAS_FEE)

    async def next_nonce(self, address: str) -> int:
        self._check()
        return self.nonces.get(address, 0)

    async def sign(self, spend: Spend, signer: Signer) -> SignedTx:
        assert spend.nonce is not None, "the fake chain is an EVM-like chain: nonces"
        txid = _hash("tx", spend.from_address, spend.nonce, spend.fee.max_fee, spend.amount)
        raw = repr((spend.from_address, spend.to_address, spend.asset.symbol, spend.amount,
                    spend.nonce, spend.fee.max_fee * spend.fee.gas_limit)).encode()  # fmt: skip
        return SignedTx(txid, raw, spend.nonce, spend.fee)

    async def broadcast(self, tx: SignedTx) -> None:
        self._check()
        self.broadcasts.append(tx.txid)
        if tx.txid in self.mined or tx.txid in self.mempool:
            return  # already known
        if not self.accept_broadcasts:
            return  # the node takes it and it never lands (a stuck transaction)
        sender, to, asset, amount, nonce, fee = ast.literal_eval(tx.raw.decode())
        if nonce < self.nonces.get(sender, 0):
            raise BroadcastRejected("nonce too low")
        for other in list(self.mempool.values()):
            if other.sender == sender and other.nonce == nonce:
                if fee <= other.fee:
                    raise BroadcastRejected("replacement transaction underpriced")
                del self.mempool[other.txid]
        self.mempool[tx.txid] = FakeTx(tx.txid, sender, to, asset, amount, nonce, fee)

    async def status(self, txid: str) -> TxStatus:
        self._check()
        if txid in self.mined:
            return TxStatus("MINED", self.mined[txid], GAS_FEE)
        return TxStatus("PENDING" if txid in self.mempool else "UNKNOWN")

    async def can_still_land(self, tx: SignedTx) -> bool:
        self._check()
        assert tx.nonce is not None
        sender = eval(tx.raw.decode())[0]
        return tx.txid in self.mined or tx.nonce >= self.nonces.get(sender, 0)
