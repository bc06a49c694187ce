"""The auth tests run on both store backends, with the store tests' fixture."""

from store.conftest import database_url  # noqa: F401  (re-exported fixture)
