"""What a signed request signs, and the timestamp window (Binance's rules)."""

from __future__ import annotations

import pytest

from mercato.auth.api_keys import _signature_and_payload, _window
from mercato.auth.sessions import AuthError


@pytest.mark.parametrize(
    ("query", "body", "signature", "payload"),
    [
        (b"symbol=BTC&timestamp=1&signature=AbC1", b"", "AbC1", b"symbol=BTC&timestamp=1"),
        (b"signature=ff", b"", "ff", b""),
        (b"symbol=BTC", b"qty=1&timestamp=1&signature=0a", "0a", b"symbol=BTCqty=1&timestamp=1"),
        (b"", b'{"raw": true}&signature=01', "01", b'{"raw": true}'),
    ],
)
def test_the_signature_covers_query_then_body_as_received(
    query: bytes, body: bytes, signature: str, payload: bytes
) -> None:
    assert _signature_and_payload(query, body) == (signature, payload)


def test_a_request_without_a_signature_is_refused() -> None:
    with pytest.raises(AuthError) as error:
        _signature_and_payload(b"timestamp=1&signatures=x", b"")
    assert error.value.code == "INVALID_SIGNATURE"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "INVALID_TIMESTAMP"),
        ({"timestamp": "soon"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "100000", "recvWindow": "60001"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "100000", "recvWindow": "0"}, "INVALID_TIMESTAMP"),
        ({"timestamp": "94999"}, "TIMESTAMP_OUTSIDE_WINDOW"),
        ({"timestamp": "101000"}, "TIMESTAMP_OUTSIDE_WINDOW"),
        ({"timestamp": "80000", "recvWindow": "10000"}, "TIMESTAMP_OUTSIDE_WINDOW"),
    ],
)
def test_timestamp_window(params: dict[str, str], code: str) -> None:
    with pytest.raises(AuthError) as error:
        _window(params, now=100_000)
    assert error.value.code == code


@pytest.mark.parametrize(
    "params",
    [
        {"timestamp": "95000"},
        {"timestamp": "100999"},
        {"timestamp": "40000", "recvWindow": "60000"},
    ],
)
def test_timestamps_inside_the_window_pass(params: dict[str, str]) -> None:
    _window(params, now=100_000)
