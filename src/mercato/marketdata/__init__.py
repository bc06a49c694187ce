"""Market data built from the engine's events: candles, depth with sequence numbers,
recent trades, rolling tickers, and their WebSocket fan-out."""
