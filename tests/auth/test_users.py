"""Users in the store (both backends) and the `mercato admin` commands that manage them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mercato.auth.passwords import PasswordPolicyError, check_policy, verify_password
from mercato.auth.standing import set_role
from mercato.auth.users import UserError, create_user, email_skeleton, list_users, normalize_email
from mercato.store import create_engine, migrate
from mercato.store.tables import PURPOSE_RESET_PASSWORD, users


async def _scenario(url: str) -> None:
    await migrate(url)
    db = create_engine(url)
    try:
        boss = await create_user(db, "  Boss@Example.COM ", "correct-horse-9", role="superadmin",
                                 verified=True)  # fmt: skip
        plain = await create_user(db, "ann@example.org", "another-pass-42")
        assert (boss.email, boss.role, boss.verified) == ("boss@example.com", "superadmin", True)
        assert (plain.role, plain.verified) == ("user", False)
        with pytest.raises(UserError) as taken:
            await create_user(db, "BOSS@example.com", "correct-horse-9")
        assert taken.value.code == "EMAIL_TAKEN"
        await set_role(db, "Ann@Example.org", "admin")
        with pytest.raises(UserError) as unknown:
            await set_role(db, "nobody@example.org", "admin")
        assert unknown.value.code == "UNKNOWN_USER"
        with pytest.raises(UserError) as bad_role:
            await set_role(db, "ann@example.org", "root")
        assert bad_role.value.code == "INVALID_ROLE"
        listed = [(u.id, u.email, u.role) for u in await list_users(db)]
        assert listed == [(boss.id, "boss@example.com", "superadmin"),
                          (plain.id, "ann@example.org", "admin")]  # fmt: skip
        async with db.connect() as connection:
            stored = (await connection.execute(select(users.c.password_hash))).scalars().all()
        assert all(h.startswith("$argon2id$") for h in stored)
        assert verify_password(stored[0], "correct-horse-9")
        assert not verify_password(stored[0], "correct-horse-8")
        assert not PasswordHasher().check_needs_rehash(stored[0])
    finally:
        await db.dispose()


def test_users_are_unique_by_normalised_email_and_hashed_with_argon2id(database_url: str) -> None:
    asyncio.run(_scenario(database_url))


@pytest.mark.parametrize(
    "email",
    ["", "no-at-sign", "a@b", "@example.com", "a b@example.com", "a@b@x.example.com",
     "ann\u200b@example.com", "ann\ufeff@example.com", "\u202eann@example.com"],
)  # fmt: skip
def test_malformed_emails_are_refused(email: str) -> None:
    with pytest.raises(UserError) as error:
        normalize_email(email)
    assert error.value.code == "INVALID_EMAIL"


@pytest.mark.parametrize(
    ("email", "normalised"),
    [(" Ann@Example.COM ", "ann@example.com"),
     ("\uff41\uff4e\uff4e@\uff45xample.com", "ann@example.com"),  # fullwidth: NFKC
     ("ann@xn--exmple-cua.com", "ann@ex\u00e4mple.com"),  # IDNA: the domain in Unicode
     ("Stra\u00dfe@example.com", "stra\u00dfe@example.com")],  # case dropped, not folded
)  # fmt: skip
def test_addresses_are_normalised(email: str, normalised: str) -> None:
    assert normalize_email(email) == normalised


def test_look_alikes_share_a_skeleton_and_others_do_not() -> None:
    ann = email_skeleton("ann@example.com")
    for look_alike in ("\u0430nn@example.com", "\u0251nn@example.com", "ann@ex\u0430mple.com"):
        assert email_skeleton(normalize_email(look_alike)) == ann, look_alike
    assert email_skeleton("stra\u00dfe@example.com") == email_skeleton("strasse@example.com")
    assert email_skeleton("anne@example.com") != ann


@given(
    st.one_of(
        st.emails(), st.text(max_size=40), st.text(max_size=20).map(lambda t: t + "@example.com")
    )
)
@settings(max_examples=500, deadline=None)
def test_normalising_is_idempotent_and_refuses_only_with_invalid_email(email: str) -> None:
    try:
        address = normalize_email(email)
    except UserError as error:
        assert error.code == "INVALID_EMAIL" and error.message
        return
    assert normalize_email(address) == address
    assert address == address.lower()  # the store's check constraint holds
    assert email_skeleton(address) == email_skeleton(normalize_email(address))


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("short1", "10 to 128"), ("x" * 129 + "1", "10 to 128"), ("onlyletters", "one digit"),
     ("1234567890", "one letter"), ("aaaaa11111", "four different")],
)  # fmt: skip
def test_password_policy(password: str, fragment: str) -> None:
    with pytest.raises(PasswordPolicyError, match=fragment):
        check_policy(password)
    check_policy("correct-horse-9")


def _admin(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MERCATO_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", "admin", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_admin_commands_manage_users_from_the_command_line(tmp_path: Path) -> None:
    created = _admin(tmp_path, "create-user", "Root@Example.com", "--role", "superadmin",
                     "--password-stdin", stdin="correct-horse-9\n")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "root@example.com with role superadmin" in created.stdout
    again = _admin(tmp_path, "create-user", "root@example.com", "--password-stdin",
                   stdin="correct-horse-9\n")  # fmt: skip
    assert again.returncode == 1 and "exists already" in again.stderr
    weak = _admin(tmp_path, "create-user", "weak@example.com", "--password-stdin", stdin="abc\n")
    assert weak.returncode == 1 and "10 to 128" in weak.stderr
    assert _admin(tmp_path, "set-role", "root@example.com", "admin").returncode == 0
    listed = _admin(tmp_path, "list-users")
    assert listed.returncode == 0
    assert "root@example.com" in listed.stdout and "admin" in listed.stdout
    assert "weak@example.com" not in listed.stdout  # the refused user was never stored


def test_passwords_are_hashed_and_checked_off_the_event_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 takes ~0.1-0.4 s of CPU: registration, password reset and password change run
    it in a thread, so the server's one event loop (order entry) keeps serving meanwhile."""
    import mercato.auth.accounts as accounts
    import mercato.auth.users as user_records

    calls: list[tuple[str, bool]] = []

    def on_the_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def spied(real: Any) -> Any:
        def call(*args: str) -> Any:
            calls.append((real.__name__, on_the_loop()))
            return real(*args)

        return call

    monkeypatch.setattr(user_records, "hash_password", spied(user_records.hash_password))
    monkeypatch.setattr(accounts, "hash_password", spied(accounts.hash_password))
    monkeypatch.setattr(accounts, "verify_password", spied(accounts.verify_password))

    async def scenario() -> None:
        await migrate(database_url)
        db = create_engine(database_url)
        try:
            user = await create_user(db, "ann@example.org", "correct-horse-9")
            token = await accounts.issue_token(db, user.id, PURPOSE_RESET_PASSWORD, 60_000)
            await accounts.reset_password(db, token, "another-pass-42")
            await accounts.change_password(db, user.id, "another-pass-42", "third-pass-77",
                                           master_key=b"k" * 32, totp_code=None)  # fmt: skip
            async with db.connect() as connection:
                stored = (await connection.execute(select(users.c.password_hash))).scalar_one()
            assert verify_password(stored, "third-pass-77")
        finally:
            await db.dispose()

    asyncio.run(scenario())
    assert calls == [
        ("hash_password", False),  # registration
        ("hash_password", False),  # reset
        ("hash_password", False),  # change: the new password
        ("verify_password", False),  # change: the current one
    ]
