"""The statuses of the application services' error codes, and their field parsing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mercato.api.errors import http_status
from mercato.application import ServiceError
from mercato.application.trading import parse_field
from mercato.core.model import MarketRules
from mercato.core.results import Result


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("EMAIL_NOT_VERIFIED", 403),
        ("FAUCET_DISABLED", 403),
        ("ORDER_NOT_OPEN", 409),
        ("PROJECTION_LAGGING", 503),
        ("UNKNOWN_MARKET", 404),
        ("UNKNOWN_ORDER", 404),
        ("INVALID_PRICE", 400),
        ("INSUFFICIENT_BALANCE", 400),
    ],
)
def test_each_code_has_the_status_the_api_answered_before(code: str, status: int) -> None:
    assert http_status(ServiceError(code, "x")) == status


def test_an_engine_rejection_keeps_its_code_and_message() -> None:
    error = ServiceError.rejected(Result(7, "REJECTED", [], "MARKET_HALTED", "market X is halted"))
    assert (error.code, error.message) == ("MARKET_HALTED", "market X is halted")


def test_parse_field_names_the_field_and_bounds_it() -> None:
    rules = MarketRules(1, 1, 1, 10, 0, 0, 0, Decimal("0.01"), Decimal("0.001"))
    assert parse_field(None, rules.parse_price, "price") == 0
    assert parse_field("1.25", rules.parse_price, "price") == 125
    with pytest.raises(ServiceError) as off_tick:
        parse_field("1.255", rules.parse_price, "price")
    assert off_tick.value.code == "INVALID_PRICE"
    with pytest.raises(ServiceError) as too_large:
        parse_field("1000", rules.parse_price, "price", largest=99_999)
    assert (too_large.value.code, too_large.value.message) == (
        "INVALID_PRICE", "price 1000 is too large",
    )  # fmt: skip
