"""The service tests reuse the store tests' database fixture (SQLite and PostgreSQL)."""

from store.conftest import database_url  # noqa: F401  (re-exported fixture)
