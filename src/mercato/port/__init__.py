"""The one port adapters use to reach the exchange: submit commands, follow the durable
event stream, read the engine's state.

The API, market data, the SQL projection and the application services depend on this
package (and on core's value types), never on the engine object or the sequencer: an
adapter that needs something else asks for it here. :mod:`mercato.port.in_process` is
the implementation over the journal's :class:`~mercato.journal.AsyncSequencer` in this
process (``mercato serve``); the distributed deployment adds a networked one behind the
same two protocols, which is why nothing here hands out the engine itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

from mercato.core.book import Order
from mercato.core.commands import Command
from mercato.core.model import Asset, MarketRules, MarketSpec, MarketStatus
from mercato.core.results import Result
from mercato.core.view import Levels
from mercato.journal.sequencer import (
    AppliedBatch,
    CommandEncodeError,
    Listener,
    SequencerClosedError,
)

__all__ = [
    "AppliedBatch",
    "AssetView",
    "CommandEncodeError",
    "ExchangePort",
    "ExchangeView",
    "FundingPort",
    "Listener",
    "SequencerClosedError",
]


class ExchangeView(Protocol):
    """Reads of the engine's state as of the last applied batch (the in-process one is
    :class:`mercato.core.view.EngineView`; its doc says what each read means). Returned
    objects are read-only."""

    @property
    def last_seq(self) -> int: ...
    @property
    def last_ts(self) -> int: ...
    def assets(self) -> Mapping[str, Asset]: ...
    def asset(self, symbol: str) -> Asset | None: ...
    def market_symbols(self) -> list[str]: ...
    def has_market(self, symbol: str) -> bool: ...
    def spec(self, symbol: str) -> MarketSpec | None: ...
    def rules(self, symbol: str) -> MarketRules | None: ...
    def trading_status(self, symbol: str) -> MarketStatus: ...
    def last_price(self, symbol: str) -> int: ...
    def level_qty(self, symbol: str, is_bid: bool, price: int) -> int: ...
    def levels(self, symbol: str) -> tuple[Levels, Levels]: ...
    def balance(self, user: int, asset: str) -> tuple[int, int]: ...
    def asset_totals(self, asset: str) -> dict[str, int]: ...
    def held_withdrawal(self, withdrawal_id: str) -> tuple[int, str, int, int] | None: ...
    def order(self, order_id: int) -> Order | None: ...
    def order_id_of(self, user: int, client_order_id: str) -> int: ...
    def open_orders(self, user: int | None = None) -> list[Order]: ...
    def next_expiry(self) -> int | None: ...


class ExchangePort(Protocol):
    """Commands in, results and durable batches out.

    ``submit`` answers once the command is durable and applied (its batch's listeners
    have run); it may raise :class:`CommandEncodeError` (the command cannot be journaled,
    nothing happened) or :class:`SequencerClosedError` (the exchange is stopping or
    stopped). Listeners get every batch applied after they subscribed, in seq order, each
    exactly once, before the batch's results are released; they must be quick and not
    raise (a failure is logged, the batch stands)."""

    @property
    def view(self) -> ExchangeView: ...

    @property
    def last_seq(self) -> int:
        """Seq of the last command durable and applied."""
        ...

    def submit(self, cmd: Command) -> Awaitable[Result]: ...
    async def submit_many(self, commands: Sequence[Command]) -> list[Result]: ...
    def subscribe(self, listener: Listener) -> None: ...


class AssetView(Protocol):
    """The engine's assets: all that custody's workers read of its state."""

    def asset(self, symbol: str) -> Asset | None: ...


class FundingPort(Protocol):
    """The part of the port custody's workers use: funding commands in, results out, the
    assets' ledger decimals. ExchangePort has it in-process; ``port.remote`` has it over
    the internal port for a separate `mercato custody run`."""

    @property
    def view(self) -> AssetView: ...

    def submit(self, cmd: Command) -> Awaitable[Result]: ...
    async def submit_many(self, commands: Sequence[Command]) -> list[Result]: ...
