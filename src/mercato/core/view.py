"""A read-only view of an :class:`Engine`: what adapters may know of the engine's state.

Adapters (the API, market data, the application services) read the engine only through
this class, never its attributes, so the engine's layout can change behind it and a
networked port can offer the same reads (``mercato.port.ExchangeView``) without the
engine in the caller's process.

It is the *in-process* view: it reads the live engine on every call (no copies, no
caches: market data calls it on hot paths), so what it answers is the state after the
last applied batch. Objects it returns (``Order``, ``Asset``, the market's spec and
rules) belong to the engine: read them, never change them. Call it on the thread that
applies batches (the event loop), like everything else that touches the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

from mercato.core.book import Order
from mercato.core.model import Asset, MarketRules, MarketSpec, MarketStatus
from mercato.core.state import EngineState, trading_status

Levels = list[tuple[int, int]]  # (price ticks, lots resting at that price)


class EngineView:
    """Reads of one engine; see the module doc. Cheap: each call is a few dict reads."""

    __slots__ = ("_engine",)

    def __init__(self, engine: EngineState) -> None:
        self._engine = engine

    # -- sequence -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Seq of the last command applied."""
        return self._engine.last_seq

    @property
    def last_ts(self) -> int:
        """Timestamp (ms) of the last batch applied: the engine's clock."""
        return self._engine.last_ts

    # -- assets and markets ---------------------------------------------------------------

    def assets(self) -> Mapping[str, Asset]:
        """Every asset by symbol (the engine's own mapping: do not change it)."""
        return self._engine.assets

    def asset(self, symbol: str) -> Asset | None:
        return self._engine.assets.get(symbol)

    def market_symbols(self) -> list[str]:
        """Every market's symbol, in the order the markets were created."""
        return list(self._engine.markets)

    def has_market(self, symbol: str) -> bool:
        return symbol in self._engine.markets

    def spec(self, symbol: str) -> MarketSpec | None:
        """The market as configured (base, quote, sizes, fees, STP modes), or None."""
        state = self._engine.markets.get(symbol)
        return None if state is None else state.spec

    def rules(self, symbol: str) -> MarketRules | None:
        """The market's rules in engine integers (tick, step, limits, fees), or None."""
        state = self._engine.markets.get(symbol)
        return None if state is None else state.rules

    def trading_status(self, symbol: str) -> MarketStatus:
        """What the market accepts now: its own status combined with the kill switch
        (the engine's one rule, ``core.state.trading_status``). The market must exist."""
        engine = self._engine
        return cast(MarketStatus, trading_status(engine, engine.markets[symbol]))

    def last_price(self, symbol: str) -> int:
        """Ticks of the market's last trade, 0 before its first. The market must exist."""
        return self._engine.markets[symbol].last_price

    # -- books ----------------------------------------------------------------------------

    def level_qty(self, symbol: str, is_bid: bool, price: int) -> int:
        """Lots resting at ``price`` on one side of the market's book (0 if none)."""
        state = self._engine.markets[symbol]
        level = (state.bids if is_bid else state.asks).levels.get(price)
        return 0 if level is None else level.qty

    def levels(self, symbol: str) -> tuple[Levels, Levels]:
        """Every level of the market's book as (bids, asks), in no particular order."""
        state = self._engine.markets[symbol]
        return (
            [(price, level.qty) for price, level in state.bids.levels.items()],
            [(price, level.qty) for price, level in state.asks.levels.items()],
        )

    # -- accounts and orders --------------------------------------------------------------

    def balance(self, user: int, asset: str) -> tuple[int, int]:
        """(available, locked) atoms of ``asset`` for ``user``."""
        return self._engine.balance(user, asset)

    def asset_totals(self, asset: str) -> dict[str, int]:
        """Atoms of ``asset`` by ledger account: ``users_available``, ``users_locked``,
        ``fees``, ``external_deposits`` (minus all ever deposited), ``external_withdrawals``
        (all ever withdrawn) and their ``sum`` (always 0); all 0 for an unknown asset.
        What custody reconciles its holdings against. O(users): not for hot paths."""
        return self._engine.asset_totals(asset)

    def held_withdrawal(self, withdrawal_id: str) -> tuple[int, str, int, int] | None:
        """(user, asset, amount, fee) of a withdrawal held and neither settled nor
        released yet (``amount`` includes ``fee``, in atoms), or None."""
        held = self._engine.withdrawals.get(withdrawal_id)
        return None if held is None else (held[0], held[1], held[2], held[3])

    def order(self, order_id: int) -> Order | None:
        """The open order ``order_id`` (resting, or an untriggered stop), or None."""
        return self._engine.orders.get(order_id)

    def order_id_of(self, user: int, client_order_id: str) -> int:
        """The id of ``user``'s open order with ``client_order_id``, or 0."""
        return self._engine.client_ids.get((user, client_order_id), 0)

    def open_orders(self, user: int | None = None) -> list[Order]:
        """Open orders of ``user`` (of everyone if None), by order id."""
        return self._engine.open_orders(user)

    def next_expiry(self) -> int | None:
        """When (ms) the next GTD order is due to expire, or None. It may name an order
        that has left the book since: a Tick at that time is then simply a no-op."""
        gtd = self._engine.gtd
        return gtd[0][0] if gtd else None


_View = TypeVar("_View")


def view_of(source: EngineState | _View) -> EngineView | _View:
    """``source`` as a view: an engine (tests and offline tools build adapters directly
    on one) is wrapped, a view is returned as it is."""
    return EngineView(source) if isinstance(source, EngineState) else source
