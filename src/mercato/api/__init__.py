"""HTTP and WebSocket adapter: the FastAPI app and its routes (docs/architecture.md)."""
