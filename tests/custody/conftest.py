"""The store tests' database fixtures (SQLite and PostgreSQL), for the custody tests."""

from __future__ import annotations

from store.conftest import database_url, migrated  # noqa: F401  (re-exported)
