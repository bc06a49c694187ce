"""Token buckets: the in-process store with a controlled clock, and the Redis store on the
local Redis server (shared between two independent clients, as two processes would be)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from mercato.api.ratelimit import LocalBuckets, RateLimited, RateLimiter, RedisBuckets
from mercato.config import RateBudget, RateLimitsConfig, load_config
from services import require_service, tcp_reachable

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_local_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    budget = RateBudget(per_second=2, burst=3)

    async def scenario() -> list[float]:
        waits = [await buckets.take("k", budget) for _ in range(4)]
        clock.now += 0.25  # half a token back: still refused, a quarter second to go
        waits.append(await buckets.take("k", budget))
        clock.now += 0.5  # now more than one token
        waits.append(await buckets.take("k", budget))
        waits.append(await buckets.take("other", budget))  # buckets are per key
        return waits

    waits = run(scenario())
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.5)  # empty: one token needs 1/2 s
    assert waits[4] == pytest.approx(0.25)
    assert waits[5:] == [0.0, 0.0]


def test_local_bucket_never_holds_more_than_the_burst() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    budget = RateBudget(per_second=10, burst=2)

    async def scenario() -> list[float]:
        await buckets.take("k", budget)
        clock.now += 3600  # an idle hour refills to the burst, not to 36,000
        return [await buckets.take("k", budget) for _ in range(3)]

    assert [wait > 0 for wait in run(scenario())] == [False, False, True]


def test_idle_local_buckets_are_dropped() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    budget = RateBudget(per_second=1000, burst=1)

    async def scenario() -> None:
        for index in range(10_000):  # one sweep happens at the 10,000th take
            await buckets.take(f"ip-{index}", budget)
            clock.now += 0.001

    run(scenario())
    assert len(buckets) < 100  # only the buckets refilled for less than 1 ms remain


def test_refusal_names_the_budget_and_rounds_retry_after_up() -> None:
    limiter = RateLimiter({"auth": RateBudget(per_second=0.5, burst=1)})

    async def scenario() -> RateLimited:
        await limiter.check("auth", "10.0.0.1", "from this IP")
        with pytest.raises(RateLimited) as refused:
            await limiter.check("auth", "10.0.0.1", "from this IP")
        await limiter.check("auth", "10.0.0.2", "from this IP")  # another IP is unaffected
        await limiter.check("orders", "10.0.0.1", "x")  # no such budget: unlimited
        return refused.value

    refused = run(scenario())
    assert refused.retry_after == 2  # one token at 0.5/s takes 2 s
    assert refused.code == "RATE_LIMITED"
    assert "0.5/s, burst 1" in refused.message and "retry in 2 s" in refused.message


def test_disabled_rate_limits_have_no_budgets() -> None:
    config = load_config(env={})
    assert set(config.rate_limits.budgets()) == {"ip", "auth", "account", "orders"}
    assert config.rate_limits.orders.burst < config.rate_limits.account.burst
    assert RateLimitsConfig(enabled=False).budgets() == {}


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_second > 0"):
        RateBudget(per_second=0, burst=5)
    with pytest.raises(ValueError, match="burst >= 1"):
        RateBudget(per_second=1, burst=0)


@pytest.fixture
def redis_url() -> str:
    require_service("redis", *tcp_reachable("127.0.0.1", 6379))
    return REDIS_URL


def test_redis_buckets_are_shared_between_clients(redis_url: str) -> None:
    budget = RateBudget(per_second=1, burst=5)
    key = f"test:{secrets.token_hex(6)}"

    async def scenario() -> list[float]:
        first, second = RedisBuckets(redis_url), RedisBuckets(redis_url)
        try:
            waits = [await (first if i % 2 else second).take(key, budget) for i in range(7)]
            ttl = await first._client.pttl("mercato:rl:" + key)
            return [*waits, ttl]
        finally:
            await first.close()
            await second.close()

    *waits, ttl = run(scenario())
    assert waits[:5] == [0.0] * 5  # five tokens between the two clients, not five each
    assert 0.9 < waits[5] <= 1.0 and 0.9 < waits[6] <= 1.0
    assert 0 < ttl <= 6000  # an empty bucket expires once it would be full again (+1 s)


def test_redis_refill_is_fractional(redis_url: str) -> None:
    budget = RateBudget(per_second=20, burst=1)
    key = f"test:{secrets.token_hex(6)}"

    async def scenario() -> list[float]:
        buckets = RedisBuckets(redis_url)
        try:
            taken = [await buckets.take(key, budget), await buckets.take(key, budget)]
            await asyncio.sleep(0.06)  # 1.2 tokens' worth at 20/s
            return [*taken, await buckets.take(key, budget)]
        finally:
            await buckets.close()

    waits = run(scenario())
    assert waits[0] == 0.0 and 0 < waits[1] <= 0.05 and waits[2] == 0.0


def test_unreachable_redis_falls_back_to_local_buckets(caplog: pytest.LogCaptureFixture) -> None:
    dead = RedisBuckets("redis://127.0.0.1:1/0")  # nothing listens on port 1
    limiter = RateLimiter({"ip": RateBudget(per_second=1, burst=2)}, dead)

    async def scenario() -> int:
        allowed = 0
        for _ in range(4):
            try:
                await limiter.check("ip", "10.0.0.1", "from this IP")
                allowed += 1
            except RateLimited:
                pass
        await limiter.close()
        return allowed

    assert run(scenario()) == 2  # still limited, by this process' own buckets
    warnings = [r for r in caplog.records if "fall back to in-process" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not once per request
