"""Token-bucket rate limits: in-process by default, shared through Redis when configured.

A bucket holds at most ``burst`` tokens and refills at ``per_second``; a request takes
one token or is refused with the time until one is back. Buckets are keyed by budget and
identity (``ip:203.0.113.7``, ``account:42``, ``orders:42``), so a user's API keys and
sessions share one account budget and cannot multiply it.

With Redis the refill runs inside one Lua script on Redis' own clock, so every process
serving the exchange draws from the same buckets. If Redis cannot be reached the limiter
falls back to its in-process buckets (logging a warning at most every 30 s): each process
still limits, and the exchange stays up. Decision recorded in docs/configuration.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from mercato.config import Config
from mercato.config import RateBudget as Budget
from mercato.core.errors import CodedError, ErrorKind

log = logging.getLogger(__name__)

PRUNE_EVERY = 10_000  # takes between sweeps of idle in-process buckets
WARN_EVERY_SECONDS = 30.0


class Buckets(Protocol):
    async def take(self, key: str, budget: Budget) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        ...

    async def close(self) -> None: ...


class LocalBuckets:
    """Buckets in this process' memory; idle (full) buckets are dropped now and then."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}  # tokens, at, seconds_to_full
        self._takes = 0

    async def take(self, key: str, budget: Budget) -> float:
        now = self._clock()
        tokens, at, _ = self._buckets.get(key, (float(budget.burst), now, 0.0))
        tokens = min(float(budget.burst), tokens + (now - at) * budget.per_second)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / budget.per_second
        self._buckets[key] = (tokens, now, (budget.burst - tokens) / budget.per_second)
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        idle = [key for key, (_, at, to_full) in self._buckets.items() if now - at >= to_full]
        for key in idle:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV per_second, burst. Redis' TIME keeps every process on one clock.
# The wait is returned as a string: Redis would truncate a Lua number to an integer.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    """Buckets shared by every process using the same Redis and key prefix."""

    def __init__(self, url: str, prefix: str = "mercato:rl:") -> None:
        import redis.asyncio as redis  # only needed when REDIS_URL is set

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(TAKE_SCRIPT)
        self._prefix = prefix

    async def take(self, key: str, budget: Budget) -> float:
        wait = await self._script(
            keys=[self._prefix + key], args=[repr(budget.per_second), budget.burst]
        )
        return float(wait)

    async def close(self) -> None:
        await self._client.aclose()


class RateLimited(CodedError):
    """A budget is spent; ``retry_after`` is whole seconds (at least 1)."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, scope: str, budget: Budget, wait: float) -> None:
        self.retry_after = max(1, math.ceil(wait))
        self.budget = budget
        message = f"too many requests {scope} ({budget.describe()}); retry in {self.retry_after} s"
        super().__init__("RATE_LIMITED", message)


class RateLimiter:
    """The budgets of the exchange over one bucket store, with the in-process fallback."""

    def __init__(self, budgets: dict[str, Budget], shared: Buckets | None = None) -> None:
        self.budgets = budgets
        self._local = LocalBuckets()
        self._shared = shared
        self._warned_at = -math.inf

    async def check(self, budget_name: str, identity: str, scope: str) -> None:
        """Take a token from ``budget_name`` for ``identity``; raise RateLimited if spent.
        ``scope`` words the refusal ("from this IP", "for this account")."""
        budget = self.budgets.get(budget_name)
        if budget is None:
            return
        wait = await self._take(f"{budget_name}:{identity}", budget)
        if wait > 0:
            raise RateLimited(scope, budget, wait)

    async def _take(self, key: str, budget: Budget) -> float:
        if self._shared is not None:
            try:
                return await self._shared.take(key, budget)
            except Exception as error:  # any Redis failure: limit locally, stay up
                now = time.monotonic()
                if now - self._warned_at >= WARN_EVERY_SECONDS:
                    self._warned_at = now
                    log.warning("rate limits fall back to in-process buckets: %s", error)
        return await self._local.take(key, budget)

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()
        await self._local.close()


def limiter_for(config: Config) -> RateLimiter:
    """The configured budgets, in Redis when ``REDIS_URL`` is set, else in-process."""
    redis = config.redis
    shared = RedisBuckets(redis.url, redis.key_prefix + "rl:") if redis.url else None
    return RateLimiter(config.rate_limits.budgets(), shared)
