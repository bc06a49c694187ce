"""A user's money: balances live from the engine, holdings with their P&L, the ledger.

Figures are engine integers (atoms, ticks) with the decimals to show them at; the
adapters turn them into decimal strings. P&L is in the market's quote asset, by the
weighted average cost of the position bought there (docs/trading.md).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

from mercato.application.errors import ServiceError
from mercato.application.projection import ProjectionReads
from mercato.core.positions import Position
from mercato.port import ExchangePort
from mercato.store import queries


@dataclasses.dataclass(frozen=True, slots=True)
class BalanceFigures:
    """Atoms of ``asset`` available and locked (``decimals``: its ledger decimals)."""

    asset: str
    decimals: int
    available: int
    locked: int


@dataclasses.dataclass(frozen=True, slots=True)
class HoldingFigures:
    """One market's holding: base atoms held and bought there, quote atoms of cost and
    P&L (None before there is a price or a position), the last price in ticks."""

    market: str
    base: str
    quote: str
    base_decimals: int
    quote_decimals: int
    tick_size: Decimal
    balance: int
    position: int
    average_cost: int | None  # quote atoms per whole base unit
    last_price: int | None
    realised_pnl: int
    unrealised_pnl: int | None


class Portfolio:
    """The portfolio service of one exchange (see the module doc)."""

    def __init__(self, port: ExchangePort, projection: ProjectionReads) -> None:
        self._view = port.view
        self._projection = projection

    def decimals(self, asset: str) -> int:
        """The ledger decimals of a known asset."""
        known = self._view.asset(asset)
        assert known is not None, f"no asset {asset}"
        return known.decimals

    def balance(self, user: int, asset: str) -> BalanceFigures:
        available, locked = self._view.balance(user, asset)
        return BalanceFigures(asset, self.decimals(asset), available, locked)

    def balances(self, user: int) -> list[BalanceFigures]:
        """Every asset the exchange lists, zeros included, by symbol."""
        return [self.balance(user, asset) for asset in sorted(self._view.assets())]

    async def holdings(self, user: int) -> list[HoldingFigures]:
        """Per market the user has traded (from the projection, once it caught up)."""
        held = await self._projection.current(queries.user_positions, user)
        return [self._holding(user, market, position) for market, position in held.items()]

    def _holding(self, user: int, market: str, position: Position) -> HoldingFigures:
        view = self._view
        spec, rules = view.spec(market), view.rules(market)
        assert spec is not None and rules is not None, f"no market {market}"
        base_decimals = self.decimals(spec.base)
        quote_decimals = self.decimals(spec.quote)
        last = view.last_price(market) or None  # ticks; 0 before the market's first trade
        # quote atoms per base atom, from a price in ticks
        scale = Fraction(rules.tick_size) * 10**quote_decimals / 10**base_decimals
        last_price = None if last is None else last * scale
        average = position.average_cost
        unrealised = position.unrealised(last_price)
        available, locked = view.balance(user, spec.base)
        unit = Fraction(10**base_decimals, 10**quote_decimals)  # atoms/atom -> units/unit
        return HoldingFigures(
            market=market, base=spec.base, quote=spec.quote, base_decimals=base_decimals,
            quote_decimals=quote_decimals, tick_size=rules.tick_size,
            balance=available + locked, position=position.quantity,
            # round() on a Fraction is half-even
            average_cost=None if average is None
            else round(average * unit * 10**quote_decimals),
            last_price=last, realised_pnl=round(position.realised),
            unrealised_pnl=None if unrealised is None else round(unrealised),
        )  # fmt: skip

    async def ledger(
        self, user: int, asset: str | None, before: int | None, limit: int
    ) -> queries.Page[queries.LedgerEntryRecord]:
        """The user's balance changes (of one asset), newest first."""
        if asset is not None and self._view.asset(asset) is None:
            raise ServiceError.unknown_asset(asset)
        return await self._projection.current(
            queries.ledger_history, user, asset=asset, before=before, limit=limit
        )
