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
import re
import secrets
import time
from collections.abc import Callable, Collection
from typing import Final

import jwt
import msgspec
from sqlalchemy import and_, case, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercato.auth.errors import AuthError
from mercato.auth.passwords import hash_password, verify_password
from mercato.auth.totp import second_factor
from mercato.auth.users import lookup_address, standing_refusal
from mercato.core.errors import ErrorKind
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


class Standing(msgspec.Struct, frozen=True):
    """A credential's user as the store had them at one moment: only an active user may
    use a credential; the role is the one to act with."""

    user_id: int
    role: str
    status: str


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


async def _claim_attempt(connection: AsyncConnection, user_id: int, now: int) -> int | None:
    """Take one of the account's MAX_FAILED_LOGINS attempts before its password is checked:
    None if the account is locked, else the lock this attempt set (0 if it set none). One
    UPDATE, so it is atomic on every backend: however many logins race, only
    MAX_FAILED_LOGINS get an attempt, and the one that takes the last locks the account
    in the same statement. An attempt counts as failed until its credentials prove right."""
    reaches_limit = users.c.failed_logins + 1 >= MAX_FAILED_LOGINS
    claimed = (await connection.execute(
        update(users)
        .where(users.c.id == user_id,
               or_(users.c.locked_until.is_(None), users.c.locked_until <= now))
        .values(
            failed_logins=case((reaches_limit, 0), else_=users.c.failed_logins + 1),
            locked_until=case((reaches_limit, now + LOCKOUT_MS), else_=None),
            updated_at=now,
        )
        .returning(users.c.locked_until)
    )).first()  # fmt: skip
    if claimed is None:
        return None
    return int(claimed.locked_until or 0)


async def _lockout(connection: AsyncConnection, user_id: int, now: int) -> AuthError:
    locked_until = (
        await connection.execute(select(users.c.locked_until).where(users.c.id == user_id))
    ).scalar_one()
    minutes = max(1, -(-((locked_until or now) - now) // 60_000))
    return AuthError(
        "ACCOUNT_LOCKED",
        f"too many failed logins; try again in {minutes} min",
        kind=ErrorKind.FORBIDDEN,
    )


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
    """Check the credentials (and the second factor when 2FA is on) of an active user.
    Each check first takes one of the account's attempts, committed before the password
    is verified, so concurrent logins cannot check more passwords than the lockout
    allows. Refusals are raised only after their transaction commits: attempts, lockouts
    and the login history must be recorded, not rolled back with the error."""
    now = _now_ms()
    address = lookup_address(email)
    user, own_lock = await _take_attempt(db, address, password, client, now)
    # In a thread (argon2 releases the GIL): a check takes ~0.1-0.4 s of CPU, during which
    # the event loop must keep serving, above all the commits of other transactions.
    password_right = await asyncio.to_thread(verify_password, user.password_hash, password)
    async with db.begin() as connection:
        refusal = await _checked_credentials(
            connection, user, address, client, now, password_right, master_key, totp_code
        )
        if refusal is None:
            standing = await _start_over(connection, user.id, now, own_lock)
            refusal = standing_refusal(standing.status)
            reason = "" if refusal is None else f"account {standing.status}"
            await _record(connection, user.id, address, client, refusal is None, reason, now)
            if refusal is None:
                family = secrets.token_urlsafe(16)
                refresh = await _new_refresh(connection, user.id, family, client, now)
    if refusal is not None:
        raise refusal
    return Tokens(_access_token(key, user.id, standing.role, family), refresh, ACCESS_TTL_SECONDS)


async def _take_attempt(
    db: AsyncEngine, address: str, password: str, client: Client, now: int
) -> tuple[Row[tuple[object, ...]], int | None]:
    """The user of ``address`` once one of their attempts is taken, and the lock that
    attempt set (None if it set none); else the refusal, raised once recorded."""
    async with db.begin() as connection:
        user = (await connection.execute(select(users).where(users.c.email == address))).first()
        if user is None:
            await _record(connection, None, address, client, False, "unknown email", now)
        else:
            own_lock = await _claim_attempt(connection, user.id, now)
            if own_lock is not None:
                return user, own_lock or None
            await _record(connection, user.id, address, client, False, "locked", now)
            refusal = await _lockout(connection, user.id, now)
    if user is None:
        await asyncio.to_thread(verify_password, _dummy_hash(), password)  # takes as long
        raise AuthError("INVALID_CREDENTIALS", "wrong email or password")
    raise refusal


async def _checked_credentials(
    connection: AsyncConnection, user: Row[tuple[object, ...]], address: str, client: Client,
    now: int, password_right: bool, master_key: bytes, totp_code: str | None,
) -> AuthError | None:  # fmt: skip
    """None if the password (and the 2FA code when 2FA is on) are right, else the refusal
    (recorded in the login history; the attempt stays counted as failed)."""
    if not password_right:
        await _record(connection, user.id, address, client, False, "wrong credentials", now)
        # Word for word the unknown email's answer: no account enumeration.
        return AuthError("INVALID_CREDENTIALS", "wrong email or password")
    if not user.totp_enabled:
        return None
    if not totp_code:
        await _record(connection, user.id, address, client, False, "2fa code missing", now)
        return AuthError("TOTP_REQUIRED", "2FA is on: send totp_code as well")
    outcome = await second_factor(connection, master_key, user, totp_code)
    if outcome == "ok":
        return None
    await _record(connection, user.id, address, client, False, f"2fa code {outcome}", now)
    # A reused code gets its own answer: the caller had the password and a code right a
    # moment ago; wait for the next.
    if outcome == "reused":
        return AuthError("TOTP_REUSED", "this 2FA code was used already; wait for the next")
    return AuthError("INVALID_CREDENTIALS", "wrong email, password or 2FA code")


async def _start_over(
    connection: AsyncConnection, user_id: int, now: int, own_lock: int | None
) -> Standing:
    """Right credentials: the attempts count starts over, and the lock this attempt set
    (it was the last one allowed, and right after all) is lifted. A lock set by another
    attempt stays: once it lands, only its own attempt, its expiry or a password reset
    lifts it. Returns the user's standing as it is now."""
    values: dict[str, object] = {"failed_logins": 0, "updated_at": now}
    if own_lock is not None:
        values["locked_until"] = case(
            (users.c.locked_until == own_lock, None), else_=users.c.locked_until
        )
    row = (
        await connection.execute(
            update(users).where(users.c.id == user_id).values(values)
            .returning(users.c.role, users.c.status)
        )
    ).one()  # fmt: skip
    return Standing(user_id, row.role, row.status)


async def refresh(db: AsyncEngine, key: bytes, token: str, client: Client) -> Tokens:
    """Spend ``token`` for a new pair; a spent token presented again revokes its family."""
    now = _now_ms()
    async with db.begin() as connection:
        row = (
            await connection.execute(
                select(refresh_tokens, users.c.role, users.c.status)
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.token_hash == _hash(token))
            )
        ).first()
        if row is None:
            raise AuthError("INVALID_TOKEN", "unknown, revoked or expired refresh token")
        # Before anything is written (the token stays as it was), and before the token's
        # own checks: a deleted user's tokens are revoked, yet the answer says why.
        refusal = standing_refusal(row.status)
        if refusal is not None:
            raise refusal
        if row.revoked_at is not None or row.expires_at <= now:
            raise AuthError("INVALID_TOKEN", "unknown, revoked or expired refresh token")
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
        raise AuthError("TOKEN_REUSED", "refresh token used twice; the session is revoked")
    return Tokens(
        _access_token(key, row.user_id, row.role, row.family_id), fresh, ACCESS_TTL_SECONDS
    )


class LiveSessions:
    """Sessions recently found live, with their user's standing, so most requests skip
    the database.

    An entry is trusted for ``seconds`` and only while no revocation happened in this
    process since its lookup began: revocations and changes of a user's standing (role,
    status) bump ``generation`` after they commit, which invalidates every entry,
    including one a concurrent lookup stores afterwards from a read that predates the
    commit. So a logout or a freeze takes effect at once in the process that made it, and
    within ``seconds`` in the others.
    """

    def __init__(self, seconds: float = 2.0, capacity: int = 100_000) -> None:
        self.seconds = seconds
        self.capacity = capacity
        self.generation = 0
        self._seen: dict[str, tuple[float, int, Standing]] = {}
        # Called after each revocation (for the WebSocket's private channels): they must
        # only schedule work, never block.
        self.on_revoked: list[Callable[[], None]] = []

    def trusted(self, session: str) -> Standing | None:
        """The standing of ``session``'s user if the session is known live, else None."""
        entry = self._seen.get(session)
        if entry is None or entry[1] != self.generation or entry[0] <= time.monotonic():
            return None
        return entry[2]

    def is_live(self, session: str) -> bool:
        return self.trusted(session) is not None

    def remember(self, session: str, generation: int, standing: Standing) -> None:
        if len(self._seen) >= self.capacity:
            self._seen.clear()
        self._seen[session] = (time.monotonic() + self.seconds, generation, standing)

    def revoked(self) -> None:
        """Call after a revocation or a change of standing commits."""
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


_USER_ID = re.compile(r"[1-9][0-9]{0,18}")  # a positive 64-bit id, in its plain form


def _verified(key: bytes, access_token: str) -> Principal:
    cached = _VERIFIED.get((access_token, key))
    if cached is not None:
        if cached[1] > time.time():
            return cached[0]
        del _VERIFIED[(access_token, key)]
        raise AuthError("TOKEN_EXPIRED", "access token expired; refresh it")
    try:
        claims = jwt.decode(
            access_token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "sub", "sid", "role", "typ"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("TOKEN_EXPIRED", "access token expired; refresh it") from None
    except jwt.InvalidTokenError:
        raise AuthError("UNAUTHORIZED", "invalid access token") from None
    if claims["typ"] != "access":
        raise AuthError("UNAUTHORIZED", "not an access token")
    # Signed with our key, yet not as we sign them (a leaked key, a bug): refused, not 500.
    sub, role, sid = claims["sub"], claims["role"], claims["sid"]
    if not (isinstance(sub, str) and _USER_ID.fullmatch(sub) and isinstance(role, str)
            and isinstance(sid, str) and sid):  # fmt: skip
        raise AuthError("UNAUTHORIZED", "invalid access token: malformed claims")
    principal = Principal(int(sub), role, sid)
    if len(_VERIFIED) >= _VERIFIED_CAPACITY:
        _VERIFIED.clear()
    _VERIFIED[(access_token, key)] = (principal, float(claims["exp"]))
    return principal


async def authenticate(db: AsyncEngine, key: bytes, access_token: str) -> Principal:
    """The principal of a bearer token whose session is still live and belongs to the
    token's user, an active one; its role as the store has it now (not as the token
    says). ``db`` is only read (on SQLite, pass an engine that begins DEFERRED so the
    check never queues for the write lock)."""
    principal = _verified(key, access_token)
    standing = LIVE_SESSIONS.trusted(principal.session)
    if standing is None:
        standing = await _shared_lookup(db, principal.session)
    if standing is None:
        raise AuthError("SESSION_REVOKED", "this session was logged out")
    if standing.user_id != principal.user_id:
        raise AuthError("UNAUTHORIZED", "invalid access token: not its user's session")
    refusal = standing_refusal(standing.status)
    if refusal is not None:
        raise refusal
    if standing.role == principal.role:
        return principal
    return msgspec.structs.replace(principal, role=standing.role)


async def _shared_lookup(db: AsyncEngine, session: str) -> Standing | None:
    """One lookup per session at a time: when a busy session's trust runs out, its
    in-flight requests share one query instead of each sending its own. Keyed by the
    revocation generation too, so a request that follows a logout never joins a lookup
    that began before it."""
    lookup = (session, LIVE_SESSIONS.generation)
    check = _SESSION_CHECKS.get(lookup)
    if check is None or check.get_loop() is not asyncio.get_running_loop():
        check = asyncio.ensure_future(_session_standing(db, session))
        _SESSION_CHECKS[lookup] = check
        check.add_done_callback(lambda done: _forget_check(lookup, done))
    return await asyncio.shield(check)


_SESSION_CHECKS: dict[tuple[str, int], asyncio.Future[Standing | None]] = {}
_CHUNK = 500  # ids per IN (...) list


async def live_credentials(db: AsyncEngine, sessions: Collection[str]) -> dict[str, Standing]:
    """Which of ``sessions`` (login sessions, or ``apikey:<id>`` for API keys) are still
    live (not logged out, not revoked, the key not deleted), with the standing of their
    user: the caller refuses those whose user is not active."""
    families = sorted(s for s in sessions if not s.startswith("apikey:"))
    keys = sorted(s.removeprefix("apikey:") for s in sessions if s.startswith("apikey:"))
    live: dict[str, Standing] = {}
    async with db.connect() as connection:
        for start in range(0, len(families), _CHUNK):
            chunk = families[start : start + _CHUNK]
            rows = await connection.execute(
                select(refresh_tokens.c.family_id, users.c.id, users.c.role, users.c.status)
                .distinct()
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.family_id.in_(chunk), refresh_tokens.c.revoked_at.is_(None))
            )  # fmt: skip
            live.update((row.family_id, Standing(row.id, row.role, row.status)) for row in rows)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = await connection.execute(
                select(api_keys.c.key_id, users.c.id, users.c.role, users.c.status)
                .join(users, users.c.id == api_keys.c.user_id)
                .where(api_keys.c.key_id.in_(chunk), api_keys.c.deleted_at.is_(None))
            )  # fmt: skip
            live.update(
                (f"apikey:{row.key_id}", Standing(row.id, row.role, row.status)) for row in rows
            )
    return live


def _forget_check(key: tuple[str, int], done: asyncio.Future[Standing | None]) -> None:
    if _SESSION_CHECKS.get(key) is done:
        del _SESSION_CHECKS[key]


async def _session_standing(db: AsyncEngine, session: str) -> Standing | None:
    generation = LIVE_SESSIONS.generation
    standing = (await live_credentials(db, [session])).get(session)
    if standing is not None:
        LIVE_SESSIONS.remember(session, generation, standing)
    return standing
