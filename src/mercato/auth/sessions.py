"""Sessions: login, short-lived JWT access tokens, rotating refresh tokens, lockout.

A session is a refresh-token *family*. Each refresh spends the presented token and
issues the next one of the family; presenting a spent token again means it was copied,
so the whole family is revoked (reuse detection). Access tokens (HS256, 15 minutes)
name their family (`sid`), and every authenticated request checks that the family is
still live, so logout and logout-everywhere take effect at once, not at expiry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import Callable, Collection
from typing import Final

import jwt
import msgspec
from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.errors import AuthError as AuthError  # re-exported: it used to live here
from mercato.auth.passwords import hash_password, verify_password
from mercato.auth.totp import second_factor
from mercato.auth.users import UserError, normalize_email
from mercato.store.tables import api_keys, login_history, refresh_tokens, users

ACCESS_TTL_SECONDS = 15 * 60
REFRESH_TTL_MS = 30 * 24 * 3600 * 1000
MAX_FAILED_LOGINS = 5
LOCKOUT_MS = 15 * 60 * 1000
JWT_ALGORITHM = "HS256"


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a login takes as long either way."""
    return hash_password(secrets.token_urlsafe(16))


class Tokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


ALL_PERMISSIONS = ("read", "trade", "withdraw")


class Principal(msgspec.Struct, frozen=True):
    """Who a request speaks for: a login session (every permission) or an API key."""

    user_id: int
    role: str
    session: str
    permissions: tuple[str, ...] = ALL_PERMISSIONS

    @property
    def by_api_key(self) -> bool:
        return self.session.startswith("apikey:")


class Client(msgspec.Struct, frozen=True):
    ip: str
    user_agent: str


def _now_ms() -> int:
    return int(time.time() * 1000)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _access_token(key: bytes, user_id: int, role: str, family: str) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "role": role, "sid": family, "iat": now,
              "exp": now + ACCESS_TTL_SECONDS, "typ": "access"}  # fmt: skip
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


async def _new_refresh(
    connection: AsyncConnection, user_id: int, family: str, client: Client, now: int
) -> str:
    token = secrets.token_urlsafe(32)
    await connection.execute(
        insert(refresh_tokens).values(
            user_id=user_id, family_id=family, token_hash=_hash(token), created_at=now,
            expires_at=now + REFRESH_TTL_MS, ip=client.ip, user_agent=client.user_agent,
        )
    )  # fmt: skip
    return token


async def _record(
    connection: AsyncConnection, user_id: int | None, email: str, client: Client,
    success: bool, reason: str, now: int,
) -> None:  # fmt: skip
    await connection.execute(
        insert(login_history).values(
            user_id=user_id, email=email, ip=client.ip, user_agent=client.user_agent,
            success=success, reason=reason, created_at=now,
        )
    )  # fmt: skip


async def _failed(connection: AsyncConnection, user: Row[tuple[object, ...]], now: int) -> None:
    """One more failed login; the last one allowed locks the account."""
    failures = user.failed_logins + 1
    locked = failures >= MAX_FAILED_LOGINS
    await connection.execute(
        update(users).where(users.c.id == user.id).values(
            failed_logins=0 if locked else failures,
            locked_until=now + LOCKOUT_MS if locked else user.locked_until,
            updated_at=now,
        )
    )  # fmt: skip


async def login(
    db: AsyncEngine,
    key: bytes,
    email: str,
    password: str,
    client: Client,
    *,
    master_key: bytes,
    totp_code: str | None = None,
) -> Tokens:
    """Check the credentials (and the second factor when 2FA is on); count failures and
    lock the account after too many."""
    now = _now_ms()
    try:
        address = normalize_email(email)
    except UserError:
        address = email.strip().lower()
    # A refusal is raised only after the transaction commits: failed attempts, lockouts
    # and the login history must be recorded, not rolled back with the error.
    refusal: AuthError | None = None
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.email == address))).first()
        if user is None:
            verify_password(_dummy_hash(), password)
            await _record(connection, None, address, client, False, "unknown email", now)
            refusal = AuthError(401, "INVALID_CREDENTIALS", "wrong email or password")
        elif user.locked_until is not None and user.locked_until > now:
            await _record(connection, user.id, address, client, False, "locked", now)
            minutes = -(-(user.locked_until - now) // 60_000)
            refusal = AuthError(
                403, "ACCOUNT_LOCKED", f"too many failed logins; try again in {minutes} min"
            )
        elif not verify_password(user.password_hash, password):
            await _failed(connection, user, now)
            await _record(connection, user.id, address, client, False, "wrong credentials", now)
            # Word for word the unknown email's answer: no account enumeration.
            refusal = AuthError(401, "INVALID_CREDENTIALS", "wrong email or password")
        elif user.totp_enabled and not totp_code:
            await _record(connection, user.id, address, client, False, "2fa code missing", now)
            refusal = AuthError(401, "TOTP_REQUIRED", "2FA is on: send totp_code as well")
        else:
            outcome = "ok"
            if user.totp_enabled:
                outcome = await second_factor(connection, master_key, user, totp_code or "")
            if outcome == "ok":
                await connection.execute(
                    update(users).where(users.c.id == user.id)
                    .values(failed_logins=0, locked_until=None, updated_at=now)
                )  # fmt: skip
                family = secrets.token_urlsafe(16)
                refresh = await _new_refresh(connection, user.id, family, client, now)
                await _record(connection, user.id, address, client, True, "", now)
            else:
                # Both count towards the lockout. A reused code gets its own answer: the
                # caller had the password and a code right a moment ago; wait for the next.
                await _failed(connection, user, now)
                reason = f"2fa code {outcome}"
                await _record(connection, user.id, address, client, False, reason, now)
                refusal = (
                    AuthError(
                        401, "TOTP_REUSED", "this 2FA code was used already; wait for the next"
                    )
                    if outcome == "reused"
                    else AuthError(401, "INVALID_CREDENTIALS", "wrong email, password or 2FA code")
                )
    if refusal is not None:
        raise refusal
    assert user is not None
    return Tokens(_access_token(key, user.id, user.role, family), refresh, ACCESS_TTL_SECONDS)


async def refresh(db: AsyncEngine, key: bytes, token: str, client: Client) -> Tokens:
    """Spend ``token`` for a new pair; a spent token presented again revokes its family."""
    now = _now_ms()
    async with db.begin() as connection:
        row = (
            await connection.execute(
                select(refresh_tokens, users.c.role)
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.token_hash == _hash(token))
            )
        ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise AuthError(401, "INVALID_TOKEN", "unknown, revoked or expired refresh token")
        spent = await connection.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.id == row.id, refresh_tokens.c.rotated_at.is_(None))
            .values(rotated_at=now)
        )
        if spent.rowcount == 0:
            await _revoke(connection, refresh_tokens.c.family_id == row.family_id, now)
            reused = True
        else:
            reused = False
            fresh = await _new_refresh(connection, row.user_id, row.family_id, client, now)
    if reused:  # committed above: the revocation stands
        LIVE_SESSIONS.revoked()
        raise AuthError(401, "TOKEN_REUSED", "refresh token used twice; the session is revoked")
    return Tokens(
        _access_token(key, row.user_id, row.role, row.family_id), fresh, ACCESS_TTL_SECONDS
    )


class LiveSessions:
    """Sessions recently found live, so most requests skip the database.

    An entry is trusted for ``seconds`` and only while no revocation happened in this
    process since its lookup began: revocations bump ``generation`` after they commit,
    which invalidates every entry, including one a concurrent lookup stores afterwards
    from a read that predates the commit. So a logout takes effect at once in the
    process that handled it, and within ``seconds`` in the others.
    """

    def __init__(self, seconds: float = 2.0, capacity: int = 100_000) -> None:
        self.seconds = seconds
        self.capacity = capacity
        self.generation = 0
        self._seen: dict[str, tuple[float, int]] = {}
        # Called after each revocation (for the WebSocket's private channels): they must
        # only schedule work, never block.
        self.on_revoked: list[Callable[[], None]] = []

    def is_live(self, session: str) -> bool:
        entry = self._seen.get(session)
        return entry is not None and entry[1] == self.generation and entry[0] > time.monotonic()

    def remember(self, session: str, generation: int) -> None:
        if len(self._seen) >= self.capacity:
            self._seen.clear()
        self._seen[session] = (time.monotonic() + self.seconds, generation)

    def revoked(self) -> None:
        """Call after a revocation commits."""
        self.generation += 1
        self._seen.clear()
        for listener in self.on_revoked:
            listener()


LIVE_SESSIONS: Final = LiveSessions()


async def _revoke(connection: AsyncConnection, which: object, now: int) -> None:
    await connection.execute(
        update(refresh_tokens)
        .where(and_(which, refresh_tokens.c.revoked_at.is_(None)))  # type: ignore[arg-type]
        .values(revoked_at=now)
    )


async def logout(db: AsyncEngine, principal: Principal) -> None:
    """End the caller's session."""
    async with db.begin() as connection:
        await _revoke(connection, refresh_tokens.c.family_id == principal.session, _now_ms())
    LIVE_SESSIONS.revoked()


async def logout_everywhere(db: AsyncEngine, principal: Principal) -> None:
    """End every session of the caller."""
    async with db.begin() as connection:
        await _revoke(connection, refresh_tokens.c.user_id == principal.user_id, _now_ms())
    LIVE_SESSIONS.revoked()


# Verified access tokens -> (principal, expiry in s): a token's signature is checked once,
# not on every request. Keyed by the token and the key, so a key change verifies anew.
_VERIFIED: dict[tuple[str, bytes], tuple[Principal, float]] = {}
_VERIFIED_CAPACITY = 50_000


def _verified(key: bytes, access_token: str) -> Principal:
    cached = _VERIFIED.get((access_token, key))
    if cached is not None:
        if cached[1] > time.time():
            return cached[0]
        del _VERIFIED[(access_token, key)]
        raise AuthError(401, "TOKEN_EXPIRED", "access token expired; refresh it")
    try:
        claims = jwt.decode(
            access_token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "sub", "sid"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "TOKEN_EXPIRED", "access token expired; refresh it") from None
    except jwt.InvalidTokenError:
        raise AuthError(401, "UNAUTHORIZED", "invalid access token") from None
    if claims.get("typ") != "access":
        raise AuthError(401, "UNAUTHORIZED", "not an access token")
    principal = Principal(int(claims["sub"]), str(claims["role"]), str(claims["sid"]))
    if len(_VERIFIED) >= _VERIFIED_CAPACITY:
        _VERIFIED.clear()
    _VERIFIED[(access_token, key)] = (principal, float(claims["exp"]))
    return principal


async def authenticate(db: AsyncEngine, key: bytes, access_token: str) -> Principal:
    """The principal of a bearer token whose session is still live. ``db`` is only read
    (on SQLite, pass an engine that begins DEFERRED so the check never queues for the
    write lock)."""
    principal = _verified(key, access_token)
    if LIVE_SESSIONS.is_live(principal.session):
        return principal
    # One lookup per session at a time: when a busy session's trust runs out, its
    # in-flight requests share one query instead of each sending its own. Keyed by the
    # revocation generation too, so a request that follows a logout never joins a lookup
    # that began before it.
    lookup = (principal.session, LIVE_SESSIONS.generation)
    check = _SESSION_CHECKS.get(lookup)
    if check is None or check.get_loop() is not asyncio.get_running_loop():
        check = asyncio.ensure_future(_session_is_live(db, principal.session))
        _SESSION_CHECKS[lookup] = check
        check.add_done_callback(lambda done: _forget_check(lookup, done))
    if not await asyncio.shield(check):
        raise AuthError(401, "SESSION_REVOKED", "this session was logged out")
    return principal


_SESSION_CHECKS: dict[tuple[str, int], asyncio.Future[bool]] = {}
_CHUNK = 500  # ids per IN (...) list


async def live_credentials(db: AsyncEngine, sessions: Collection[str]) -> set[str]:
    """Which of ``sessions`` (login sessions, or ``apikey:<id>`` for API keys) are still
    live: not logged out, not revoked, the key not deleted."""
    families = sorted(s for s in sessions if not s.startswith("apikey:"))
    keys = sorted(s.removeprefix("apikey:") for s in sessions if s.startswith("apikey:"))
    live: set[str] = set()
    async with db.connect() as connection:
        for start in range(0, len(families), _CHUNK):
            chunk = families[start : start + _CHUNK]
            rows = await connection.execute(
                select(refresh_tokens.c.family_id).distinct().where(
                    refresh_tokens.c.family_id.in_(chunk), refresh_tokens.c.revoked_at.is_(None)
                )
            )  # fmt: skip
            live.update(row.family_id for row in rows)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = await connection.execute(
                select(api_keys.c.key_id).where(
                    api_keys.c.key_id.in_(chunk), api_keys.c.deleted_at.is_(None)
                )
            )
            live.update(f"apikey:{row.key_id}" for row in rows)
    return live


def _forget_check(key: tuple[str, int], done: asyncio.Future[bool]) -> None:
    if _SESSION_CHECKS.get(key) is done:
        del _SESSION_CHECKS[key]


async def _session_is_live(db: AsyncEngine, session: str) -> bool:
    generation = LIVE_SESSIONS.generation
    live = session in await live_credentials(db, [session])
    if live:
        LIVE_SESSIONS.remember(session, generation)
    return live
