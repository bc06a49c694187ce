"""LocalSeedSigner against known vectors: the standard "abandon ... about" mnemonic's first
EVM address (m/44'/60'/0'/0/0) and first Solana account (m/44'/501'/0'/0', as Phantom
and Solflare derive it), and every documented path against bip-utils' own path parser."""

from __future__ import annotations

import pytest
from bip_utils import Bip32Slip10Ed25519, Bip32Slip10Secp256k1, Bip39SeedGenerator
from eth_account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from mercato.custody.chains.base import KeyRef
from mercato.custody.signer import LocalSeedSigner

ABANDON = " ".join(["abandon"] * 11 + ["about"])
SEED = bytes(Bip39SeedGenerator(ABANDON).Generate())


@pytest.fixture(scope="module")
def signer() -> LocalSeedSigner:
    return LocalSeedSigner(SEED)


def test_known_vectors_of_the_abandon_mnemonic(signer: LocalSeedSigner) -> None:
    assert (
        signer.address(KeyRef("evm", "deposit", 0)) == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    )
    assert (
        signer.address(KeyRef("solana", "hot", 0)) == "HAgk14JpMQLgt6rVgv7cBQFJWFto5Dqxi472uT3DKpqk"
    )


@pytest.mark.parametrize(
    ("key", "path"),
    [
        (KeyRef("evm", "hot", 0), "m/44'/60'/1'/0/0"),
        (KeyRef("evm", "deposit", 0), "m/44'/60'/0'/0/0"),
        (KeyRef("evm", "deposit", 7), "m/44'/60'/0'/0/7"),
    ],
)
def test_evm_keys_sit_at_the_documented_paths(
    signer: LocalSeedSigner, key: KeyRef, path: str
) -> None:
    private = Bip32Slip10Secp256k1.FromSeedAndPath(SEED, path).PrivateKey().Raw().ToBytes()
    assert signer.address(key) == Account.from_key(private).address


@pytest.mark.parametrize(
    ("key", "path"),
    [
        (KeyRef("solana", "hot", 0), "m/44'/501'/0'/0'"),
        (KeyRef("solana", "deposit", 0), "m/44'/501'/1'/0'"),
        (KeyRef("solana", "deposit", 4), "m/44'/501'/5'/0'"),
    ],
)
def test_solana_keys_sit_at_the_documented_paths(
    signer: LocalSeedSigner, key: KeyRef, path: str
) -> None:
    private = Bip32Slip10Ed25519.FromSeedAndPath(SEED, path).PrivateKey().Raw().ToBytes()
    assert signer.address(key) == str(Keypair.from_seed(private).pubkey())


def test_every_key_is_distinct(signer: LocalSeedSigner) -> None:
    keys = [KeyRef(kind, "hot", 0) for kind in ("evm", "solana")] + [
        KeyRef(kind, "deposit", i)
        for kind in ("evm", "solana")
        for i in range(5)  # type: ignore[arg-type]
    ]
    assert len({signer.address(key) for key in keys}) == len(keys)


def test_an_evm_signature_recovers_to_the_key_address(signer: LocalSeedSigner) -> None:
    key = KeyRef("evm", "deposit", 3)
    transaction: dict[str, object] = {
        "to": "0x" + "11" * 20,
        "value": 10**15,
        "gas": 21_000,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 5,
        "chainId": 31337,
        "type": 2,
    }
    raw, txid = signer.sign_evm(key, transaction)
    assert Account.recover_transaction(raw) == signer.address(key)
    assert txid.startswith("0x") and len(txid) == 66
    with pytest.raises(ValueError):
        signer.sign_evm(KeyRef("solana", "hot", 0), transaction)


def test_a_solana_signature_verifies_under_the_key_address(signer: LocalSeedSigner) -> None:
    key = KeyRef("solana", "deposit", 2)
    signature = signer.sign_solana(key, b"a serialized message")
    assert len(signature) == 64
    pubkey = Pubkey.from_string(signer.address(key))
    assert Signature.from_bytes(signature).verify(pubkey, b"a serialized message")
    assert not Signature.from_bytes(signature).verify(pubkey, b"another message")
    with pytest.raises(ValueError):
        signer.sign_solana(KeyRef("evm", "hot", 0), b"x")


def test_the_repr_never_shows_the_seed(signer: LocalSeedSigner) -> None:
    signer.address(KeyRef("evm", "hot", 0))
    assert SEED.hex() not in repr(signer) and "sealed" in repr(signer)
