"""Sealing secrets at rest with the master key: AES-256-GCM, a fresh nonce per seal.

The associated data binds a sealed value to where it belongs (e.g. ``b"totp:42"``), so
a ciphertext copied to another row or user does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SealError(ValueError):
    """The value does not open with this key and context."""


def seal(master_key: bytes, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master_key).encrypt(nonce, plaintext, context)


def unseal(master_key: bytes, sealed: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(master_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except (InvalidTag, ValueError) as error:
        raise SealError("sealed value does not open: wrong key or context") from error
