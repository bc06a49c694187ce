"""A thin in-process Solana ledger over LiteSVM, implementing ``SolanaRpc``.

LiteSVM executes every transaction with the real runtime and the real System, SPL Token
and Associated Token Account programs (loaded by default), checks signatures and the
recent blockhash, charges fees and remembers processed signatures. It has no blocks: this
ledger adds them. Transactions execute when sent and are recorded into the pending block;
``produce_block`` closes it at the next slot (``skip`` slots left empty in between, which
``get_block`` then reports as skipped) and expires LiteSVM's blockhash, so each block has
its own hash and the previous one stops being accepted.

What this leaves untested (docs/custody.md, "Solana adapter"): the JSON-RPC transport and
``JsonRpcSolana``'s mapping of answers; consensus, forks and reorgs (every produced block
is final, unless ``finalized_lag`` holds the finalized slot back); a cluster's skipped
slots as leaders produce them; commitment levels (all the same here); the 150-block
blockhash lifetime (LiteSVM accepts only its latest blockhash, so a transaction must be
sent in the block it was signed for); the priority-fee market; durable nonces; rate
limits; address lookup tables.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.token.associated import get_associated_token_address
from solders.token.state import TokenAccount
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from mercato.custody.chains.solana import (
    TOKEN_PROGRAM_ID,
    RpcRefused,
    SignatureStatus,
    SolBlock,
    SolInstruction,
    SolTransaction,
    create_associated_token_account_idempotent,
    transfer_checked,
)

MINT_SIZE = 82
TOKEN_INITIALIZE_MINT2 = 20  # u8 tag, u8 decimals, mint authority, COption freeze authority
TOKEN_MINT_TO = 7  # u8 tag, u64 amount; [mint, destination, authority]
TOKEN_TRANSFER = 3


class LiteSvmLedger:
    """``SolanaRpc`` over LiteSVM. ``preflight`` (as a node's default) refuses a
    transaction whose simulation fails; without it, a failing transaction lands, failed,
    and pays its fee, as on a cluster."""

    def __init__(self, preflight: bool = True) -> None:
        self.svm = LiteSVM()
        self.preflight = preflight
        self.finalized_lag = 0  # blocks behind the newest that are not final yet
        slot = self.svm.get_clock().slot
        genesis = SolBlock(slot, str(self.svm.latest_blockhash()), str(Hash.default()), slot, 0, ())
        self.blocks: list[SolBlock] = [genesis]
        self.pending: list[SolTransaction] = []
        self.landed: dict[str, SignatureStatus] = {}
        self.sent: list[bytes] = []  # every raw transaction LiteSVM accepted

    # ------------------------------------------------------------ test controls

    def produce_block(self, skip: int = 0) -> SolBlock:
        """Close the pending block at the next slot after ``skip`` empty (skipped) slots."""
        previous = self.blocks[-1]
        slot = previous.slot + 1 + skip
        self.svm.warp_to_slot(slot)
        self.svm.expire_blockhash()
        block = SolBlock(
            slot=slot,
            blockhash=str(self.svm.latest_blockhash()),
            previous_blockhash=previous.blockhash,
            parent_slot=previous.slot,
            block_time=int(self.svm.get_clock().unix_timestamp),
            transactions=tuple(self.pending),
        )
        for tx in self.pending:
            self.landed[tx.signature] = SignatureStatus(slot, None if tx.succeeded else "failed")
        self.blocks.append(block)
        self.pending = []
        return block

    def airdrop(self, address: str, lamports: int) -> None:
        """Fund an account outside any block (genesis money, not a transfer)."""
        self.svm.airdrop(Pubkey.from_string(address), lamports)

    def send(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
        """Sign ``instructions`` with ``signers`` (the first pays) and send them."""
        blockhash = self.svm.latest_blockhash()
        message = Message.new_with_blockhash(list(instructions), signers[0].pubkey(), blockhash)
        tx = Transaction(list(signers), message, blockhash)
        return self._execute(bytes(tx))

    def create_mint(self, authority: Keypair, decimals: int) -> Pubkey:
        """A new SPL mint (System CreateAccount + Token InitializeMint2)."""
        mint = Keypair()
        rent = self.svm.minimum_balance_for_rent_exemption(MINT_SIZE)
        create = create_account(
            CreateAccountParams(
                from_pubkey=authority.pubkey(),
                to_pubkey=mint.pubkey(),
                lamports=rent,
                space=MINT_SIZE,
                owner=TOKEN_PROGRAM_ID,
            )
        )
        data = struct.pack("<BB", TOKEN_INITIALIZE_MINT2, decimals) + bytes(authority.pubkey())
        data += b"\0"  # no freeze authority
        initialize = Instruction(TOKEN_PROGRAM_ID, data, [AccountMeta(mint.pubkey(), False, True)])
        self.send([create, initialize], [authority, mint])
        return mint.pubkey()

    def mint_to(self, mint: Pubkey, authority: Keypair, owner: Pubkey, amount: int) -> str:
        """Mint into ``owner``'s associated token account, creating it if needed."""
        account = get_associated_token_address(owner, mint)
        mint_ix = Instruction(
            TOKEN_PROGRAM_ID,
            struct.pack("<BQ", TOKEN_MINT_TO, amount),
            [
                AccountMeta(mint, False, True),
                AccountMeta(account, False, True),
                AccountMeta(authority.pubkey(), True, False),
            ],
        )
        create = create_associated_token_account_idempotent(authority.pubkey(), owner, mint)
        return self.send([create, mint_ix], [authority])

    def transfer_sol(self, sender: Keypair, to: Pubkey, lamports: int) -> str:
        ix = transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=to, lamports=lamports))
        return self.send([ix], [sender])

    def token_transfer_instruction(
        self, sender: Keypair, mint: Pubkey, to_owner: Pubkey, amount: int, decimals: int | None
    ) -> Instruction:
        """TransferChecked (``decimals`` given) or the unchecked Transfer, ATA to ATA."""
        source = get_associated_token_address(sender.pubkey(), mint)
        destination = get_associated_token_address(to_owner, mint)
        if decimals is not None:
            return transfer_checked(source, mint, destination, sender.pubkey(), amount, decimals)
        return Instruction(
            TOKEN_PROGRAM_ID,
            struct.pack("<BQ", TOKEN_TRANSFER, amount),
            [
                AccountMeta(source, False, True),
                AccountMeta(destination, False, True),
                AccountMeta(sender.pubkey(), True, False),
            ],
        )

    # ------------------------------------------------------------ SolanaRpc

    def _newest(self, commitment: str) -> SolBlock:
        lag = self.finalized_lag if commitment == "finalized" else 0
        return self.blocks[max(0, len(self.blocks) - 1 - lag)]

    async def get_slot(self, commitment: str) -> int:
        return self._newest(commitment).slot

    async def get_block(self, slot: int, commitment: str) -> SolBlock | None:
        if slot > self._newest(commitment).slot:
            return None
        return next((block for block in self.blocks if block.slot == slot), None)

    async def get_balance(self, address: str) -> int:
        return int(self.svm.get_balance(Pubkey.from_string(address)) or 0)

    async def get_token_account_balance(self, account: str) -> int:
        found = self.svm.get_account(Pubkey.from_string(account))
        return 0 if found is None else int(TokenAccount.from_bytes(bytes(found.data)).amount)

    async def get_latest_blockhash(self) -> tuple[str, int]:
        # Valid for the pending block only: LiteSVM accepts nothing but its latest hash.
        return str(self.svm.latest_blockhash()), len(self.blocks)

    async def get_block_height(self, commitment: str) -> int:
        return self.blocks.index(self._newest(commitment))

    async def send_raw(self, raw: bytes) -> str:
        return self._execute(raw)

    async def get_signature_status(self, signature: str) -> SignatureStatus | None:
        return self.landed.get(signature)

    async def get_transaction(self, signature: str) -> SolTransaction | None:
        if signature not in self.landed:
            return None
        return next(
            tx for block in self.blocks for tx in block.transactions if tx.signature == signature
        )

    async def is_blockhash_valid(self, blockhash: str, commitment: str) -> bool:
        return blockhash == str(self.svm.latest_blockhash())

    # ------------------------------------------------------------ execution

    def _execute(self, raw: bytes) -> str:
        tx = VersionedTransaction.from_bytes(raw)
        signature = tx.signatures[0]
        if self.preflight:
            simulated = self.svm.simulate_transaction(tx)
            if isinstance(simulated, FailedTransactionMetadata):
                raise RpcRefused(f"Transaction simulation failed: {simulated.err()}")
        payer = tx.message.account_keys[0]
        payer_before = self.svm.get_balance(payer) or 0
        result = self.svm.send_transaction(tx)
        failed = isinstance(result, FailedTransactionMetadata)
        if isinstance(result, FailedTransactionMetadata) and result.meta().signature() != signature:
            raise RpcRefused(str(result.err()))  # refused before execution: nothing landed
        landed = self._landed(tx, signature, succeeded=not failed)
        spent = payer_before - (self.svm.get_balance(payer) or 0)
        self.pending.append(replace(landed, payer_spent=spent))
        self.sent.append(raw)
        return str(signature)

    @staticmethod
    def _landed(tx: VersionedTransaction, signature: Signature, succeeded: bool) -> SolTransaction:
        keys = [str(key) for key in tx.message.account_keys]
        instructions = tuple(
            SolInstruction(
                program_id=keys[ix.program_id_index],
                accounts=tuple(keys[i] for i in ix.accounts),
                data=bytes(ix.data),
            )
            for ix in tx.message.instructions
        )
        return SolTransaction(str(signature), succeeded, instructions, fee_payer=keys[0])
