"""The rule for tests that need an external service (PostgreSQL, Redis, NATS, ...).

A test that cannot reach its service is skipped with a one-line reason, unless the
environment sets ``MERCATO_REQUIRE_SERVICES=1`` (CI does), in which case it fails: CI must
never pass by skipping.

    from services import require_service, tcp_reachable

    reachable, reason = tcp_reachable("127.0.0.1", 6379)
    require_service("redis", reachable, reason)
"""

from __future__ import annotations

import os
import socket

import pytest

REQUIRE_SERVICES_ENV = "MERCATO_REQUIRE_SERVICES"


def services_required() -> bool:
    """True when unreachable services must fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_SERVICES_ENV) == "1"


def require_service(name: str, reachable: bool, reason: str) -> None:
    """Return if ``reachable``; otherwise skip the test, or fail it when
    ``MERCATO_REQUIRE_SERVICES=1``. ``reason`` says why ``name`` is unreachable."""
    if reachable:
        return
    message = " ".join(f"{name} unavailable: {reason}".split())  # always one line
    if services_required():
        pytest.fail(f"{message} ({REQUIRE_SERVICES_ENV}=1)", pytrace=False)
    pytest.skip(message)


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a TCP connection to ``host:port`` opens, and if not, why."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as error:
        return False, f"{host}:{port}: {error}"
