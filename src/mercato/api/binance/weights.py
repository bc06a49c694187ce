"""Binance's rate limits: request weight per IP per minute and order counts per account
per 10 seconds and per day, with the headers Binance sends (``X-MBX-USED-WEIGHT-1M``,
``X-MBX-ORDER-COUNT-10S``, ``X-MBX-ORDER-COUNT-1D``).

These are Binance's fixed windows (a minute that starts on the minute, and so on), kept
in this process' memory: they are accounting clients read and obey, and they sit on top
of Mercato's own budgets (api/ratelimit.py: per IP, per account, per account for order
entry), which are shared through Redis and stay the protection. Counting costs a dict
lookup and an addition per request. With ``[rate_limits] enabled = false`` the counts
and headers remain and nothing is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mercato.auth.api_keys import form_fields
from mercato.wire.binance_errors import too_many_orders, too_many_requests
from mercato.wire.binance_market import WEIGHTS as MARKET_WEIGHTS
from mercato.wire.binance_market import depth_weight, rate_limits, ticker_weight

Params = Mapping[str, str]

# Binance spot's own limits, for a server whose budgets are off (nothing is refused then).
REQUEST_WEIGHT_PER_MINUTE = 6000
ORDERS_PER_10S = 100
ORDERS_PER_DAY = 200_000


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a meter enforces, as exchangeInfo's ``rateLimits`` declares them
    (wire/binance_market.py derives them from Mercato's budgets), None when off."""

    weight_per_minute: int | None
    orders_per_10s: int | None
    orders_per_day: int | None

    @classmethod
    def declared(cls, rate_limits: list[dict[str, Any]]) -> Limits:
        found: dict[tuple[str, str], int] = {
            (str(r["rateLimitType"]), str(r["interval"])): int(r["limit"]) for r in rate_limits
        }
        return cls(found.get(("REQUEST_WEIGHT", "MINUTE")), found.get(("ORDERS", "SECOND")),
                   found.get(("ORDERS", "DAY")))  # fmt: skip

    def order_limits(self) -> list[dict[str, object]]:
        """The ORDERS entries, for ``GET /api/v3/rateLimit/order``."""
        return [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
             "limit": self.orders_per_10s or ORDERS_PER_10S},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
             "limit": self.orders_per_day or ORDERS_PER_DAY},
        ]  # fmt: skip


def _with_symbol(alone: int, every: int) -> Callable[[Params], int]:
    return lambda params: alone if params.get("symbol") else every


def _with(name: str, given: int, absent: int) -> Callable[[Params], int]:
    return lambda params: given if params.get(name) else absent


#: (method, path) -> weight, or a function of the parameters (Binance's documented
#: weights, rest-api.md) for the signed endpoints ...
SIGNED_WEIGHTS: dict[tuple[str, str], int | Callable[[Params], int]] = {
    ("GET", "/api/v3/account"): 20,
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): _with("computeCommissionRates", 20, 1),
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/cancelReplace"): 1,
    ("PUT", "/api/v3/order/amend/keepPriority"): 4,
    ("GET", "/api/v3/openOrders"): _with_symbol(6, 80),
    ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/myTrades"): _with("orderId", 5, 20),
    ("GET", "/api/v3/myPreventedMatches"): _with("orderId", 20, 2),
    ("GET", "/api/v3/rateLimit/order"): 40,
}


def _depth(params: Params) -> int:
    limit = params.get("limit", "")
    return depth_weight(int(limit) if limit.isdigit() else 100)


def _ticker(path: str) -> Callable[[Params], int]:
    def weigh(params: Params) -> int:
        if params.get("symbol"):
            return ticker_weight(path, 1)
        listed = params.get("symbols")
        return ticker_weight(path, listed.count(",") + 1 if listed else None)

    return weigh


#: ... and for the public ones (wire/binance_market.py's table and rules).
PUBLIC_WEIGHTS: dict[tuple[str, str], int | Callable[[Params], int]] = {
    **{("GET", path): count for path, count in MARKET_WEIGHTS.items()},
    ("GET", "/api/v3/depth"): _depth,
    **{("GET", path): _ticker(path) for path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price",
                                                 "/api/v3/ticker/bookTicker", "/api/v3/ticker")},
}  # fmt: skip

#: The requests that place orders, counted in ORDERS as well.
ORDER_PLACEMENTS = frozenset({("POST", "/api/v3/order"), ("POST", "/api/v3/order/cancelReplace")})


def weight(method: str, path: str, params: Params) -> int:
    """The request weight of a request to ``/api/v3`` (1 for a path not in the tables)."""
    key = (method, path)
    found = SIGNED_WEIGHTS.get(key) or PUBLIC_WEIGHTS.get(key) or 1
    return found if isinstance(found, int) else found(params)


@dataclass(slots=True)
class Window:
    """A count in a fixed window of ``seconds``."""

    seconds: int
    start: int = 0
    count: int = 0

    def add(self, now: float, amount: int) -> int:
        start = int(now) // self.seconds * self.seconds
        if start != self.start:
            self.start, self.count = start, 0
        self.count += amount
        return self.count

    def retry_after(self, now: float) -> int:
        return max(1, int(self.start + self.seconds - now + 0.999))


@dataclass(slots=True)
class OrderCounts:
    ten_seconds: int
    day: int

    def headers(self) -> dict[str, str]:
        return {"X-MBX-ORDER-COUNT-10S": str(self.ten_seconds),
                "X-MBX-ORDER-COUNT-1D": str(self.day)}  # fmt: skip


class Meter:
    """The used weight of each IP and the order counts of each account."""

    MAX_KEYS = 100_000  # windows kept before the stale ones are dropped

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._clock = clock
        self._weights: dict[str, Window] = {}
        self._orders: dict[int, tuple[Window, Window]] = {}

    def charge(self, ip: str, amount: int) -> int:
        """Add ``amount`` to the IP's weight this minute; the weight used (a -1003 when
        over the limit, its headers saying how much)."""
        window = self._weights.get(ip)
        if window is None:
            self._prune(self._weights)
            window = self._weights[ip] = Window(60)
        now = self._clock()
        used = window.add(now, amount)
        most = self.limits.weight_per_minute
        if most is not None and used > most:
            refusal = too_many_requests(window.retry_after(now))
            refusal.msg = (
                f"Too much request weight used; current limit is {most} "
                "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                "to avoid polling the API."
            )
            refusal.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            raise refusal
        return used

    def used(self, ip: str) -> int:
        window = self._weights.get(ip)
        if window is None:
            return 0
        return window.count if int(self._clock()) // 60 * 60 == window.start else 0

    def count_order(self, user: int) -> OrderCounts:
        """Count one new order of ``user`` (-1015 when over a limit)."""
        windows = self._orders.get(user)
        if windows is None:
            self._prune(self._orders)
            windows = self._orders[user] = (Window(10), Window(86_400))
        now = self._clock()
        counts = OrderCounts(windows[0].add(now, 1), windows[1].add(now, 1))
        limits = ((windows[0], self.limits.orders_per_10s, "10 SECOND"),
                  (windows[1], self.limits.orders_per_day, "1 DAY"))  # fmt: skip
        for window, limit, interval in limits:
            if limit is not None and window.count > limit:
                refusal = too_many_orders(limit, interval, window.retry_after(now))
                refusal.headers.update(counts.headers())
                raise refusal
        return counts

    def order_counts(self, user: int) -> OrderCounts:
        windows = self._orders.get(user)
        if windows is None:
            return OrderCounts(0, 0)
        now = int(self._clock())
        ten, day = windows
        return OrderCounts(ten.count if now // 10 * 10 == ten.start else 0,
                           day.count if now // 86_400 * 86_400 == day.start else 0)  # fmt: skip

    def _prune(self, table: dict[Any, Any]) -> None:
        if len(table) >= self.MAX_KEYS:
            table.clear()  # every window restarts: at worst a client gets a fresh minute


def meter_of(app: Any) -> Meter:
    """The app's meter, enforcing the limits exchangeInfo declares (none when Mercato's
    rate limits are off)."""
    meter: Meter | None = getattr(app.state, "binance_meter", None)
    if meter is None:
        budgets = app.state.limiter.budgets
        ip, orders = budgets.get("ip"), budgets.get("orders")
        declared = rate_limits(ip.per_second if ip else None,
                               orders.per_second if orders else None)  # fmt: skip
        meter = app.state.binance_meter = Meter(Limits.declared(declared))
    return meter


def charge_public(app: Any, method: str, path: str, query: bytes, ip: str) -> dict[str, str]:
    """Charge a public endpoint's weight (the signed ones charge in their own route, with
    their parameters); the header to answer with, or -1003 over the limit."""
    if (method, path) not in PUBLIC_WEIGHTS:
        return {}
    used = meter_of(app).charge(ip, weight(method, path, form_fields(query)))
    return {"X-MBX-USED-WEIGHT-1M": str(used)}
