"""A tests-only ``Signer`` over solders Keypairs, keyed by KeyRef. The production
signer (``LocalSeedSigner``, HD keys from the sealed seed) implements the same Protocol."""

from __future__ import annotations

from solders.keypair import Keypair

from mercato.custody.chains.base import KeyRef


class KeypairSigner:
    def __init__(self) -> None:
        self.keypairs: dict[KeyRef, Keypair] = {}

    def add(self, key: KeyRef, keypair: Keypair | None = None) -> Keypair:
        self.keypairs[key] = keypair or Keypair()
        return self.keypairs[key]

    def address(self, key: KeyRef) -> str:
        return str(self.keypairs[key].pubkey())

    def sign_evm(self, key: KeyRef, transaction: dict[str, object]) -> tuple[bytes, str]:
        raise NotImplementedError("KeypairSigner holds Solana keys only")

    def sign_solana(self, key: KeyRef, message: bytes) -> bytes:
        return bytes(self.keypairs[key].sign_message(message))
