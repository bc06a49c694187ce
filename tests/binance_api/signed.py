"""A minimal Binance-signed HTTP client for the conformance tests: it signs exactly as
Binance documents (HMAC-SHA256 of the query string followed by the form body), and can
be told to get it wrong on purpose."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from binance_api.conftest import Account, Exchange


def now_ms() -> int:
    return int(time.time() * 1000)


class Signed:
    def __init__(self, exchange: Exchange, account: Account) -> None:
        self.http = httpx.Client(base_url=exchange.url, timeout=30)
        self.account = account

    def sign(self, payload: str, secret: str | None = None) -> str:
        key = (secret or self.account.secret).encode()
        return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, *,
             in_body: bool | None = None, key: str | None = None, secret: str | None = None,
             timestamp: int | None = None, signed: bool = True) -> httpx.Response:  # fmt: skip
        """``params`` (plus timestamp and signature) in the form body for POST and PUT,
        else in the query string (``in_body`` overrides)."""
        params = {k: str(v) for k, v in (params or {}).items()}
        if "timestamp" not in params and timestamp != -1:
            params["timestamp"] = str(timestamp if timestamp is not None else now_ms())
        text = urlencode(params)
        if signed:
            text += ("&" if text else "") + "signature=" + self.sign(text, secret)
        headers = {"X-MBX-APIKEY": key if key is not None else self.account.key}
        if in_body is None:
            in_body = method in ("POST", "PUT")
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(method, path, content=text, headers=headers)
        return self.http.request(method, f"{path}?{text}", headers=headers)

    def ok(self, method: str, path: str, params: dict[str, Any] | None = None,
           **kwargs: Any) -> Any:  # fmt: skip
        answer = self.call(method, path, params, **kwargs)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def refused(self, method: str, path: str, params: dict[str, Any] | None,
                status: int, code: int, msg: str, **kwargs: Any) -> httpx.Response:  # fmt: skip
        answer = self.call(method, path, params, **kwargs)
        assert (answer.status_code, answer.json()) == (status, {"code": code, "msg": msg})
        return answer
