"""Application services: what the exchange does for its users, between the adapters that
speak a protocol (HTTP, WebSocket, later the Binance dialect) and the port.

A service takes the port (:mod:`mercato.port`) and the store's reads, never the engine;
it works in engine integers and raises :class:`ServiceError` (a stable code, no HTTP
status: the API assigns those from its kind). Formatting for the wire is :mod:`mercato.wire`'s.

- :mod:`~mercato.application.trading`: who may trade, orders from decimal strings,
  idempotent placement by client order id, cancels and amends, the development faucet;
- :mod:`~mercato.application.portfolio`: balances, holdings with their P&L, the ledger;
- :mod:`~mercato.application.history`: the user's open orders, order history and fills;
- :mod:`~mercato.application.projection`: reads of the SQL projection once it holds
  everything acknowledged.

The custody services (deposits, withdrawals) and the admin services (market control,
maker-checker) will live here too.
"""

from mercato.application.errors import ServiceError

__all__ = ["ServiceError"]
