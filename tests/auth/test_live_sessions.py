"""The live-session cache that spares the order path a database read per request."""

from __future__ import annotations

import time

import jwt
import pytest

from mercato.auth import sessions
from mercato.auth.errors import AuthError
from mercato.auth.sessions import LiveSessions


def test_a_remembered_session_is_live_until_it_ages_out() -> None:
    cache = LiveSessions(seconds=0.05)
    cache.remember("s1", cache.generation)
    assert cache.is_live("s1") and not cache.is_live("s2")
    time.sleep(0.06)
    assert not cache.is_live("s1")  # re-checked against the database from now on


def test_a_revocation_voids_every_entry_at_once() -> None:
    cache = LiveSessions()
    cache.remember("s1", cache.generation)
    cache.revoked()
    assert not cache.is_live("s1")


def test_a_lookup_that_began_before_a_revocation_is_not_trusted() -> None:
    cache = LiveSessions()
    began = cache.generation  # a request reads the session row...
    cache.revoked()  # ...a logout commits meanwhile...
    cache.remember("s1", began)  # ...and the stale read is stored afterwards
    assert not cache.is_live("s1")


def test_the_cache_is_bounded() -> None:
    cache = LiveSessions(capacity=10)
    for index in range(25):
        cache.remember(f"s{index}", cache.generation)
    assert cache.is_live("s24") and not cache.is_live("s0")


def test_a_verified_token_is_cached_until_it_expires() -> None:
    key = b"k" * 32
    token = jwt.encode({"sub": "7", "role": "user", "sid": "s7", "typ": "access",
                        "exp": int(time.time()) + 60}, key, algorithm="HS256")  # fmt: skip
    assert sessions._verified(key, token).user_id == 7
    assert (token, key) in sessions._VERIFIED
    with pytest.raises(AuthError) as other_key:  # the cache is per key: no bypass
        sessions._verified(b"x" * 32, token)
    assert other_key.value.code == "UNAUTHORIZED"
    principal, _ = sessions._VERIFIED[(token, key)]
    sessions._VERIFIED[(token, key)] = (principal, time.time() - 1)  # its exp has passed
    with pytest.raises(AuthError) as expired:
        sessions._verified(key, token)
    assert expired.value.code == "TOKEN_EXPIRED"
