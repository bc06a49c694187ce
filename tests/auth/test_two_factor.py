"""2FA in the store (both backends): a TOTP code works once, even when two requests race
with it; the second factor of sensitive actions; refusals change nothing.

The TOTP clock (``mercato.auth.totp._unix_time``) is pinned to a fixed time in the
middle of a 30-second step, so that "the previous, current and next step" are exact and
no test depends on where the wall clock happens to be within a step. Codes are computed
here with pyotp for a given time, independently of the server's matching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.api.errors import http_status
from mercato.auth import totp
from mercato.auth.accounts import change_password
from mercato.auth.api_keys import create_key, list_keys
from mercato.auth.errors import AuthError
from mercato.auth.passwords import verify_password
from mercato.auth.sessions import Client, login
from mercato.auth.users import UserError, create_user
from mercato.store import create_engine, migrate
from mercato.store.tables import login_history, recovery_codes, refresh_tokens, users

MASTER_KEY = bytes(range(32))
JWT_KEY = b"j" * 32
PASSWORD = "correct-horse-9"
NEW_PASSWORD = "brand-new-pass-7"
T0 = 1_900_000_005.0  # 5 s into step 63_333_333
STEP = 30
CLIENT = Client("127.0.0.1", "pytest")


class Clock:
    def __init__(self) -> None:
        self.now = T0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    pinned = Clock()
    monkeypatch.setattr(totp, "_unix_time", lambda: pinned.now)
    yield pinned


def wrong_code(secret: str, now: float) -> str:
    """A well-formed code that matches no step of the window around ``now``."""
    valid = {pyotp.TOTP(secret).at(now + d * STEP) for d in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


async def _with_2fa(db: AsyncEngine, email: str) -> tuple[int, pyotp.TOTP, list[str]]:
    """A user with 2FA confirmed by the code of T0's step (so that step is spent)."""
    user = await create_user(db, email, PASSWORD, verified=True)
    secret, _ = await totp.enroll(db, MASTER_KEY, user.id)
    authenticator = pyotp.TOTP(secret)
    codes = await totp.confirm(db, MASTER_KEY, user.id, authenticator.at(T0))
    return user.id, authenticator, codes


async def _refused(code: str, call: Awaitable[object]) -> AuthError:
    with pytest.raises(AuthError) as refusal:
        await call
    assert refusal.value.code == code, refusal.value.message
    return refusal.value


async def _last_step(db: AsyncEngine, user_id: int) -> int:
    async with db.connect() as connection:
        query = select(users.c.totp_last_step).where(users.c.id == user_id)
        return int((await connection.execute(query)).scalar_one())


def run(database_url: str, scenario: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            await scenario(db)
        finally:
            await db.dispose()

    asyncio.run(main())


def test_a_totp_code_is_accepted_once_and_no_step_at_or_before_the_last(
    database_url: str, clock: Clock
) -> None:
    async def scenario(db: AsyncEngine) -> None:
        user_id, authenticator, _ = await _with_2fa(db, "ann@example.com")
        check = totp.require_second_factor
        step0 = int(T0) // STEP
        assert await _last_step(db, user_id) == step0  # the confirming code is spent

        # The confirming code, and the previous step's (inside the drift window).
        reused = await _refused("TOTP_REUSED", check(db, MASTER_KEY, user_id, authenticator.at(T0)))
        assert http_status(reused) == 400
        await _refused("TOTP_REUSED", check(db, MASTER_KEY, user_id, authenticator.at(T0 - STEP)))
        # The next step's code (a clock running ahead) passes, once; then even the
        # current step's code is refused, since it is older than the last accepted one.
        await check(db, MASTER_KEY, user_id, authenticator.at(T0 + STEP))
        await _refused("TOTP_REUSED", check(db, MASTER_KEY, user_id, authenticator.at(T0 + STEP)))
        assert await _last_step(db, user_id) == step0 + 1

        clock.now = T0 + 2 * STEP
        await _refused("TOTP_REUSED", check(db, MASTER_KEY, user_id, authenticator.at(T0 + STEP)))
        await check(db, MASTER_KEY, user_id, f" {authenticator.at(clock.now)} ")  # spaces trimmed
        await _refused("TOTP_REUSED", check(db, MASTER_KEY, user_id, authenticator.at(clock.now)))
        # Wrong, out of the window (two steps ahead), malformed: INVALID_TOTP; none moves
        # the last step.
        invalid = await _refused(
            "INVALID_TOTP",
            check(db, MASTER_KEY, user_id, wrong_code(authenticator.secret, clock.now)),
        )
        assert http_status(invalid) == 400
        far = authenticator.at(clock.now + 2 * STEP)
        await _refused("INVALID_TOTP", check(db, MASTER_KEY, user_id, far))
        await _refused("INVALID_TOTP", check(db, MASTER_KEY, user_id, "12345"))
        assert await _last_step(db, user_id) == step0 + 2
        # ...and then that far code is fine once its step is the next one.
        clock.now += STEP
        await check(db, MASTER_KEY, user_id, far)
        assert await _last_step(db, user_id) == step0 + 4

    run(database_url, scenario)


def test_require_second_factor_needs_a_code_only_when_2fa_is_on(
    database_url: str, clock: Clock
) -> None:
    async def scenario(db: AsyncEngine) -> None:
        plain = await create_user(db, "bob@example.com", PASSWORD, verified=True)
        await totp.require_second_factor(db, MASTER_KEY, plain.id, None)
        await totp.enroll(db, MASTER_KEY, plain.id)  # enrolled, not confirmed: still off
        await totp.require_second_factor(db, MASTER_KEY, plain.id, None)

        user_id, _, codes = await _with_2fa(db, "ann@example.com")
        for missing in (None, ""):
            refusal = await _refused(
                "TOTP_REQUIRED", totp.require_second_factor(db, MASTER_KEY, user_id, missing)
            )
            assert http_status(refusal) == 401
        # A recovery code works once (case and spaces do not matter), then it is spent.
        await totp.require_second_factor(db, MASTER_KEY, user_id, f"  {codes[0].upper()} ")
        await _refused(
            "INVALID_TOTP", totp.require_second_factor(db, MASTER_KEY, user_id, codes[0])
        )
        # Another user's recovery code is no use.
        other_id, _, other_codes = await _with_2fa(db, "cid@example.com")
        await _refused(
            "INVALID_TOTP", totp.require_second_factor(db, MASTER_KEY, user_id, other_codes[0])
        )
        async with db.connect() as connection:
            unused = await connection.execute(
                select(recovery_codes.c.user_id, func.count())
                .where(recovery_codes.c.used_at.is_(None))
                .group_by(recovery_codes.c.user_id)
                .order_by(recovery_codes.c.user_id)
            )
            assert [tuple(row) for row in unused] == [(user_id, 9), (other_id, 10)]

    run(database_url, scenario)


def test_two_requests_racing_with_one_code_let_exactly_one_through(
    database_url: str, clock: Clock
) -> None:
    """The step advances in one conditional UPDATE: on PostgreSQL the second transaction
    waits for the first's row lock, then finds the condition false."""

    async def scenario(db: AsyncEngine) -> None:
        user_id, authenticator, codes = await _with_2fa(db, "ann@example.com")
        for round_ in range(1, 6):
            clock.now = T0 + round_ * STEP
            code = authenticator.at(clock.now)
            results = await asyncio.gather(
                *(totp.require_second_factor(db, MASTER_KEY, user_id, code) for _ in range(3)),
                return_exceptions=True,
            )
            passed = [r for r in results if r is None]
            refused = [r.code for r in results if isinstance(r, AuthError)]
            assert (len(passed), refused) == (1, ["TOTP_REUSED"] * 2), results
        # The same for a recovery code.
        results = await asyncio.gather(
            *(totp.require_second_factor(db, MASTER_KEY, user_id, codes[3]) for _ in range(3)),
            return_exceptions=True,
        )
        assert sorted(str(getattr(r, "code", r)) for r in results) == [
            "INVALID_TOTP", "INVALID_TOTP", "None"
        ]  # fmt: skip

    run(database_url, scenario)


def _new_key(db: AsyncEngine, user_id: int, code: str | None) -> Awaitable[object]:
    return create_key(db, MASTER_KEY, user_id, "bot", ["read"], [], totp_code=code)


def _change(db: AsyncEngine, user_id: int, current: str, code: str | None) -> Awaitable[None]:
    return change_password(db, user_id, current, NEW_PASSWORD, master_key=MASTER_KEY,
                           totp_code=code)  # fmt: skip


async def _user(db: AsyncEngine, user_id: int) -> Any:
    async with db.connect() as connection:
        return (await connection.execute(select(users).where(users.c.id == user_id))).one()


async def _live_sessions(db: AsyncEngine) -> int:
    async with db.connect() as connection:
        query = select(func.count()).where(refresh_tokens.c.revoked_at.is_(None))
        return int((await connection.execute(query)).scalar_one())


def test_sensitive_actions_need_the_second_factor_and_a_refusal_changes_nothing(
    database_url: str, clock: Clock
) -> None:
    async def scenario(db: AsyncEngine) -> None:
        user_id, authenticator, codes = await _with_2fa(db, "ann@example.com")
        await login(db, JWT_KEY, "ann@example.com", PASSWORD, CLIENT, master_key=MASTER_KEY,
                    totp_code=codes[0])  # fmt: skip
        step0 = int(T0) // STEP

        # API keys: no code, a wrong one, a spent one: refused, no key created.
        await _refused("TOTP_REQUIRED", _new_key(db, user_id, None))
        await _refused("INVALID_TOTP", _new_key(db, user_id, wrong_code(authenticator.secret, T0)))
        await _refused("TOTP_REUSED", _new_key(db, user_id, authenticator.at(T0)))
        assert await list_keys(db, user_id) == []
        await _new_key(db, user_id, authenticator.at(T0 + STEP))
        assert len(await list_keys(db, user_id)) == 1
        await _refused("TOTP_REUSED", _new_key(db, user_id, authenticator.at(T0 + STEP)))
        assert len(await list_keys(db, user_id)) == 1

        # Password: the second factor first, whatever the current password.
        clock.now = T0 + 2 * STEP
        code = authenticator.at(clock.now)
        await _refused("TOTP_REQUIRED", _change(db, user_id, PASSWORD, None))
        await _refused("TOTP_REQUIRED", _change(db, user_id, "not-it-123", None))
        await _refused("TOTP_REUSED", _change(db, user_id, PASSWORD, authenticator.at(T0 + STEP)))
        # A right code with a wrong current password: refused, and the code is not spent.
        with pytest.raises(UserError) as wrong:
            await _change(db, user_id, "not-it-123", code)
        assert wrong.value.code == "INVALID_CREDENTIALS"
        user = await _user(db, user_id)
        assert verify_password(user.password_hash, PASSWORD)
        assert user.totp_last_step == step0 + 1
        assert await _live_sessions(db) == 1
        await _change(db, user_id, PASSWORD, code)
        assert verify_password((await _user(db, user_id)).password_hash, NEW_PASSWORD)
        assert await _live_sessions(db) == 0

        # Disabling: a code needed; refused, 2FA stays on.
        await _refused("TOTP_REQUIRED", totp.disable(db, MASTER_KEY, user_id, None))
        await _refused("TOTP_REUSED", totp.disable(db, MASTER_KEY, user_id, code))
        assert (await _user(db, user_id)).totp_enabled
        await totp.disable(db, MASTER_KEY, user_id, codes[1])
        user = await _user(db, user_id)
        assert (user.totp_enabled, user.totp_secret_enc) == (False, None)
        # Off: no code needed any more. Enrolling again starts afresh: the new secret's
        # code of the current step confirms, though that step is the last one accepted.
        await _new_key(db, user_id, None)
        secret, _ = await totp.enroll(db, MASTER_KEY, user_id)
        await totp.confirm(db, MASTER_KEY, user_id, pyotp.TOTP(secret).at(clock.now))

    run(database_url, scenario)


def test_login_refuses_a_replayed_code_and_counts_it_as_a_failure(
    database_url: str, clock: Clock
) -> None:
    async def scenario(db: AsyncEngine) -> None:
        user_id, authenticator, _ = await _with_2fa(db, "ann@example.com")

        def attempt(code: str, password: str = PASSWORD) -> Awaitable[object]:
            return login(db, JWT_KEY, "ann@example.com", password, CLIENT,
                         master_key=MASTER_KEY, totp_code=code)  # fmt: skip

        replayed = await _refused("TOTP_REUSED", attempt(authenticator.at(T0)))  # confirm's
        assert http_status(replayed) == 401
        await attempt(authenticator.at(T0 + STEP))
        await _refused("TOTP_REUSED", attempt(authenticator.at(T0 + STEP)))
        # A wrong password with a replayed code: the password's answer, as for anyone.
        await _refused("INVALID_CREDENTIALS", attempt(authenticator.at(T0), "not-it-123"))
        assert (await _user(db, user_id)).failed_logins == 2  # the success reset the count
        async with db.connect() as connection:
            query = select(login_history.c.reason).order_by(login_history.c.id)
            reasons = (await connection.execute(query)).scalars().all()
        assert reasons == ["2fa code reused", "", "2fa code reused", "wrong credentials"]

    run(database_url, scenario)
