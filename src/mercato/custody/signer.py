"""The local signer: every key of the custody HD tree derived from the unsealed seed.

This module is the only code that touches private keys (docs/custody.md, "Keys"). The
derivation paths are BIP44:

| key                 | EVM (secp256k1)      | Solana (ed25519, SLIP-10, all hardened) |
|---------------------|----------------------|-----------------------------------------|
| hot wallet          | ``m/44'/60'/1'/0/0`` | ``m/44'/501'/0'/0'``                    |
| deposit address i   | ``m/44'/60'/0'/0/i`` | ``m/44'/501'/(i+1)'/0'``                |

Derived keys are cached (a derivation costs about a millisecond of elliptic-curve work
and the watcher asks for every address each pass). Neither the seed nor a key ever
appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

from typing import Any

from bip_utils import Bip44, Bip44Changes, Bip44Coins  # type: ignore[import-untyped]
from eth_account import Account
from solders.keypair import Keypair

from mercato.custody.chains.base import KeyRef


def evm_private_key(seed: bytes, key: KeyRef) -> bytes:
    """The 32-byte secp256k1 private key of ``key`` (an EVM key) under ``seed``."""
    account = 1 if key.role == "hot" else 0
    index = 0 if key.role == "hot" else key.index
    node = (
        Bip44.FromSeed(seed, Bip44Coins.ETHEREUM)
        .Purpose()
        .Coin()
        .Account(account)
        .Change(Bip44Changes.CHAIN_EXT)
        .AddressIndex(index)
    )
    return bytes(node.PrivateKey().Raw().ToBytes())


def solana_private_key(seed: bytes, key: KeyRef) -> bytes:
    """The 32-byte ed25519 private key (the keypair's seed) of ``key`` (a Solana key).
    bip-utils derives ed25519 with SLIP-10, where every level is hardened: the account
    level carries the index, as Phantom and Solflare number their accounts."""
    account = 0 if key.role == "hot" else key.index + 1
    node = (
        Bip44.FromSeed(seed, Bip44Coins.SOLANA)
        .Purpose()
        .Coin()
        .Account(account)
        .Change(Bip44Changes.CHAIN_EXT)
    )
    return bytes(node.PrivateKey().Raw().ToBytes())


class LocalSeedSigner:
    """:class:`~mercato.custody.chains.base.Signer` over a BIP39 seed held in memory."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 16:
            raise ValueError("a BIP39 seed is at least 16 bytes")
        self.__seed = seed
        self.__evm: dict[tuple[str, int], Any] = {}  # (role, index) -> eth_account LocalAccount
        self.__solana: dict[tuple[str, int], Keypair] = {}

    def __repr__(self) -> str:
        return "LocalSeedSigner(<sealed seed>)"

    def _evm(self, key: KeyRef) -> Any:
        slot = (key.role, key.index)
        account = self.__evm.get(slot)
        if account is None:
            account = Account.from_key(evm_private_key(self.__seed, key))
            self.__evm[slot] = account
        return account

    def _solana(self, key: KeyRef) -> Keypair:
        slot = (key.role, key.index)
        keypair = self.__solana.get(slot)
        if keypair is None:
            keypair = Keypair.from_seed(solana_private_key(self.__seed, key))
            self.__solana[slot] = keypair
        return keypair

    def address(self, key: KeyRef) -> str:
        if key.chain_kind == "evm":
            return str(self._evm(key).address)  # EIP-55 checksummed
        return str(self._solana(key).pubkey())  # base58

    def sign_evm(self, key: KeyRef, transaction: dict[str, object]) -> tuple[bytes, str]:
        if key.chain_kind != "evm":
            raise ValueError(f"sign_evm with a {key.chain_kind} key")
        signed = self._evm(key).sign_transaction(transaction)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def sign_solana(self, key: KeyRef, message: bytes) -> bytes:
        if key.chain_kind != "solana":
            raise ValueError(f"sign_solana with a {key.chain_kind} key")
        return bytes(self._solana(key).sign_message(message))
