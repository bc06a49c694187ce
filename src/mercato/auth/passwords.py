"""Password policy and argon2id hashing."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mercato.core.errors import CodedError

MIN_LENGTH = 10
MAX_LENGTH = 128

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class PasswordPolicyError(CodedError, ValueError):
    """The password does not meet the policy; the message says what is missing."""

    def __init__(self, message: str) -> None:
        super().__init__("WEAK_PASSWORD", message)


def check_policy(password: str) -> None:
    """10-128 characters with at least one letter and one digit, not the same
    character repeated; length matters more than character classes (NIST 800-63B)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordPolicyError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
    if not any(ch.isalpha() for ch in password) or not any(ch.isdigit() for ch in password):
        raise PasswordPolicyError("a password needs at least one letter and one digit")
    if len(set(password)) < 4:
        raise PasswordPolicyError("a password needs at least four different characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
