"""The engine's state: every attribute that defines it, and the queries over it.

The command handlers, matching, snapshots and invariant checks are functions over an
:class:`EngineState`; :class:`mercato.core.engine.Engine` adds ``apply`` on top. Keeping
the state in a module of its own lets all of them use its type without importing the
engine, so core's modules form no import cycle.
"""

from __future__ import annotations

from heapq import heappop, heappush

from mercato.core.book import MarketState, Order
from mercato.core.model import Asset
from mercato.core.results import Rejection


class IdWindow:
    """Ids remembered until a time (ms): the credited deposit ids, the finished
    withdrawal ids. ``forget_at`` maps each id to the last engine time it is remembered
    at; ``heap`` orders the same (forget_at, id) pairs so that forgetting the expired ones
    costs O(expired · log n), whatever the size of the window. Which ids are forgotten
    when depends only on the command timestamps, so replays agree."""

    def __init__(self) -> None:
        self.forget_at: dict[str, int] = {}
        self.heap: list[tuple[int, str]] = []

    def __contains__(self, key: str) -> bool:
        return key in self.forget_at

    def __len__(self) -> int:
        return len(self.forget_at)

    def remember(self, key: str, forget_at: int) -> None:
        """Remember ``key`` while the engine's clock is at most ``forget_at``."""
        self.forget_at[key] = forget_at
        heappush(self.heap, (forget_at, key))

    def forget_expired(self, now: int) -> None:
        """Drop every id whose ``forget_at`` is before ``now``."""
        heap, forget_at = self.heap, self.forget_at
        while heap and heap[0][0] < now:
            when, key = heappop(heap)
            if forget_at.get(key) == when:  # not re-remembered with another time since
                del forget_at[key]

    def live(self, now: int) -> list[tuple[str, int]]:
        """(id, forget_at) of the ids still remembered at ``now``, by id."""
        return sorted((k, t) for k, t in self.forget_at.items() if t >= now)


class EngineState:
    """Balances, open orders, books, stops, fee tiers and risk switches of all markets."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.last_ts = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, MarketState] = {}
        # balances[user][asset] = [available, locked]
        self.balances: dict[int, dict[str, list[int]]] = {}
        self.fees: dict[str, int] = {}
        self.external_deposits: dict[str, int] = {}  # minus everything ever deposited
        self.external_withdrawals: dict[str, int] = {}  # everything ever withdrawn
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[tuple[int, str], int] = {}
        self.fee_tiers: dict[int, tuple[int, int]] = {}
        self.user_tiers: dict[int, int] = {}
        self.frozen: set[int] = set()
        self.kill_switch = "OFF"
        # Credited deposit ids and finished withdrawal ids, each until its command's
        # issued_at + DEPOSIT_ID_WINDOW_MS (handlers_funding says why that is enough).
        self.deposit_ids = IdWindow()
        # id -> user, asset, amount, fee, issued_at (ms)
        self.withdrawals: dict[str, tuple[int, str, int, int, int]] = {}
        self.finished_withdrawals = IdWindow()
        self.gtd: list[tuple[int, int]] = []  # heap of (expire_at, order_id)

    # ------------------------------------------------------------------ queries

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        """(available, locked) atoms of ``asset`` for ``user``."""
        account = self.balances.get(user, {}).get(asset)
        return (account[0], account[1]) if account else (0, 0)

    def open_orders(self, user: int | None = None) -> list[Order]:
        return sorted(
            (o for o in self.orders.values() if user is None or o.user == user),
            key=lambda o: o.order_id,
        )

    def depth(
        self, market: str, limit: int = 20
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as (price ticks, visible lots), best first."""
        state = self.markets[market]
        return state.bids.depth(limit), state.asks.depth(limit)

    def total_balances(self) -> dict[str, dict[str, int]]:
        """:meth:`asset_totals` of every asset, by symbol."""
        return {asset: self.asset_totals(asset) for asset in sorted(self.assets)}

    def asset_totals(self, asset: str) -> dict[str, int]:
        """Users' available and locked atoms of ``asset``, its fee account, its external
        accounts, and their sum (which must be 0: the external deposit account holds
        minus all deposits). All 0 for an asset the engine does not know."""
        available = locked = 0
        for accounts in self.balances.values():
            account = accounts.get(asset)
            if account:
                available += account[0]
                locked += account[1]
        row = {
            "users_available": available,
            "users_locked": locked,
            "fees": self.fees.get(asset, 0),
            "external_deposits": self.external_deposits.get(asset, 0),
            "external_withdrawals": self.external_withdrawals.get(asset, 0),
        }
        row["sum"] = sum(row.values())
        return row


# Lookups the handlers share: a missing asset or market rejects the command.


def known_asset(state: EngineState, symbol: str) -> Asset:
    asset = state.assets.get(symbol)
    if asset is None:
        raise Rejection("UNKNOWN_ASSET", f"asset {symbol!r} does not exist")
    return asset


def known_market(state: EngineState, symbol: str) -> MarketState:
    market = state.markets.get(symbol)
    if market is None:
        raise Rejection("UNKNOWN_MARKET", f"market {symbol!r} does not exist")
    return market


def trading_status(state: EngineState, market: MarketState) -> str:
    """The market's status after the global kill switch is applied."""
    if state.kill_switch == "HALT" or market.status == "HALTED":
        return "HALTED"
    if state.kill_switch == "CANCEL_ONLY" or market.status == "CANCEL_ONLY":
        return "CANCEL_ONLY"
    return "TRADING"
