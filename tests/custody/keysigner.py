"""A test ``Signer`` over known private keys (Anvil's dev keys), with eth-account: the
adapter tests sign real transactions without the seed-based LocalSeedSigner."""

from __future__ import annotations

from eth_account import Account

from mercato.custody.chains.base import KeyRef


class KeySigner:
    """``Signer`` over a dict KeyRef -> hex private key (EVM only)."""

    def __init__(self, keys: dict[KeyRef, str]) -> None:
        self.keys = dict(keys)

    def address(self, key: KeyRef) -> str:
        return str(Account.from_key(self.keys[key]).address)

    def sign_evm(self, key: KeyRef, transaction: dict[str, object]) -> tuple[bytes, str]:
        signed = Account.sign_transaction(transaction, self.keys[key])
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def sign_solana(self, key: KeyRef, message: bytes) -> bytes:
        raise NotImplementedError("KeySigner holds EVM keys only")
