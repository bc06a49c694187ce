"""Fixtures for the custody tests: a real Anvil node per test (tests/custody/anvil.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from custody.anvil import Anvil, running_anvil
from store.conftest import database_url, migrated  # noqa: F401  (fixtures of the desk tests)


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh Anvil that mines a block for every transaction (automine)."""
    with running_anvil() as node:
        yield node


@pytest.fixture
def anvil_manual() -> Iterator[Anvil]:
    """A fresh Anvil that mines only when told (``anvil.mine``): tests put several
    transactions in one block, and hold a transaction in the mempool to replace it."""
    with running_anvil("--no-mining") as node:
        yield node
