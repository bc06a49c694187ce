"""Wire formats: engine integers and folded order states into what clients read.

``decimals`` turns a market's integers (ticks, lots, atoms) into decimal strings, exactly;
``native`` is Mercato's own API dialect, the JSON of orders, fills and balances for both
REST (``/api/v1``) and the private WebSocket channels. Another dialect (a
Binance-compatible API) is one module next to ``native``, built from the same
:class:`~mercato.core.order_state.OrderState` and the same formatters. Nothing here knows
HTTP: the api package frames these bodies, market data publishes them.
"""
