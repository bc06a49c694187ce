"""The store tests' database fixtures (SQLite and PostgreSQL), for the API tests."""

from __future__ import annotations

from store.conftest import database_url  # noqa: F401  (re-exported)
