"""The withdrawal routes over the real service (SQLite store, engine in a temporary data
directory, the FakeChain as the configured chain): status codes and stable codes at the
HTTP edge, API-key permission, admin-only routes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import pyotp

from custody.fakechain import FakeChain
from mercato.api.app import create_app
from mercato.auth import totp
from mercato.auth.api_keys import create_key
from mercato.auth.sessions import Client, login
from mercato.auth.users import create_user
from mercato.config import AssetConfig, Config, ServerConfig
from mercato.core.commands import CreditDeposit
from mercato.service import ExchangeService

PASSWORD = "correct-horse-9"


def _config(tmp: Path) -> Config:
    from custody.desk import custody_config

    return Config(
        server=ServerConfig(data_dir=str(tmp / "data")),
        custody=custody_config(),
        assets=[AssetConfig("USDT", 8)],
    )


def test_withdrawal_routes(tmp_path: Path) -> None:
    async def main() -> None:
        service = ExchangeService(_config(tmp_path), env={})
        service.custody_adapters["fake"] = FakeChain("fake")
        app = create_app(service)
        await service.start()
        try:
            await _exercise(service, app)
        finally:
            await service.stop()

    asyncio.run(main())


async def _token(service: ExchangeService, email: str, role: str = "user") -> tuple[int, str]:
    assert service.database is not None and service.secrets is not None
    user = await create_user(service.database, email, PASSWORD, role=role, verified=True)
    tokens = await login(
        service.database,
        service.secrets.jwt_key,
        email,
        PASSWORD,
        Client("127.0.0.1", "test"),
        master_key=service.secrets.master_key,
    )
    return user.id, tokens.access_token


async def _exercise(service: ExchangeService, app: object) -> None:
    assert service.port is not None and service.database is not None
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        user, token = await _token(service, "ann@example.test")
        auth = {"Authorization": f"Bearer {token}"}
        await service.port.submit(CreditDeposit(user, "USDT", 1000 * 10**8, "d1"))

        def post(path: str, body: dict[str, object], headers: dict[str, str] = auth):  # type: ignore[no-untyped-def]
            return client.post(path, json=body, headers=headers)

        body = {"asset": "USDT", "amount": "50", "address": "0xdest"}
        cooling = await post("/api/v1/withdrawals", body)
        assert (cooling.status_code, cooling.json()["code"]) == (409, "ADDRESS_COOLING_OFF")
        book = (await client.get("/api/v1/withdrawal-addresses", headers=auth)).json()
        assert [e["address"] for e in book] == ["0xdest"] and book[0]["usable_at"] > 0
        bad = await post("/api/v1/withdrawals", {**body, "amount": "1.0000001"})
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_AMOUNT")
        bad = await post("/api/v1/withdrawals", {**body, "address": "dest"})
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_ADDRESS")
        bad = await post("/api/v1/withdrawals", {**body, "asset": "BTC"})
        assert (bad.status_code, bad.json()["code"]) == (409, "CUSTODY_UNAVAILABLE")
        bad = await post("/api/v1/withdrawals", {**body, "extra": 1})
        assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_REQUEST")

        async with service.database.begin() as connection:
            from sqlalchemy import text

            await connection.execute(text("UPDATE custody_address_book SET usable_at = 0"))
        made = await post("/api/v1/withdrawals", body)
        assert made.status_code == 201, made.text
        view = made.json()
        assert (view["amount"], view["fee"], view["status"]) == ("50", "1", "APPROVED")
        wid = view["withdrawal_id"]
        listed = (await client.get("/api/v1/withdrawals", headers=auth)).json()
        assert [w["withdrawal_id"] for w in listed] == [wid]

        # an API key without the withdraw permission
        assert service.secrets is not None
        key, secret = await create_key(
            service.database,
            service.secrets.master_key,
            user,
            "bot",
            ["read", "trade"],
            [],
            totp_code=None,
        )
        query = f"timestamp={int(time.time() * 1000)}&recvWindow=5000"
        raw = json.dumps(body).encode()
        signature = hmac.new(secret.encode(), query.encode() + raw, hashlib.sha256).hexdigest()
        keyed = await client.post(
            f"/api/v1/withdrawals?{query}&signature={signature}",
            content=raw,
            headers={"X-MBX-APIKEY": key.key_id, "Content-Type": "application/json"},
        )
        assert (keyed.status_code, keyed.json()["code"]) == (403, "MISSING_PERMISSION"), keyed.text

        # admin routes: a plain user is refused
        refused = await post(f"/api/v1/admin/withdrawals/{wid}/approve", {})
        assert (refused.status_code, refused.json()["code"]) == (403, "ADMIN_REQUIRED")
        _, admin_token = await _token(service, "boss@example.test", role="admin")
        admin = {"Authorization": f"Bearer {admin_token}"}
        pending = await client.get("/api/v1/admin/withdrawals?status=APPROVED", headers=admin)
        assert [w["withdrawal_id"] for w in pending.json()] == [wid]
        unknown = await client.get("/api/v1/admin/withdrawals?status=NOPE", headers=admin)
        assert unknown.status_code == 400, unknown.text
        no_2fa = await post(f"/api/v1/admin/withdrawals/{wid}/reject", {"reason": "x"}, admin)
        assert (no_2fa.status_code, no_2fa.json()["code"]) == (403, "ADMIN_2FA_REQUIRED")

        canceled = await client.delete(f"/api/v1/withdrawals/{wid}", headers=auth)
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        assert service.port.view.balance(user, "USDT") == (1000 * 10**8, 0)
        again = await client.delete(f"/api/v1/withdrawals/{wid}", headers=auth)
        assert (again.status_code, again.json()["code"]) == (409, "WITHDRAWAL_NOT_CANCELABLE")
        missing = await client.get("/api/v1/withdrawals/wnope", headers=auth)
        assert (missing.status_code, missing.json()["code"]) == (404, "WITHDRAWAL_NOT_FOUND")
        await _address_book(client, auth)
        await _approvals(service, client, auth, post)


async def _address_book(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    entry = {"asset": "USDT", "address": "0xSECOND", "label": "cold storage"}
    added = await client.post("/api/v1/withdrawal-addresses", json=entry, headers=auth)
    assert added.status_code == 201, added.text
    assert (added.json()["address"], added.json()["label"]) == ("0xsecond", "cold storage")
    nul = await client.post(
        "/api/v1/withdrawal-addresses", json={**entry, "label": "a\x00"}, headers=auth
    )
    assert (nul.status_code, nul.json()["code"]) == (400, "INVALID_REQUEST")
    twice = await client.post("/api/v1/withdrawal-addresses", json=entry, headers=auth)
    assert (twice.status_code, twice.json()["code"]) == (409, "ADDRESS_EXISTS")
    gone = await client.delete(f"/api/v1/withdrawal-addresses/{added.json()['id']}", headers=auth)
    assert gone.status_code == 204
    book = (await client.get("/api/v1/withdrawal-addresses", headers=auth)).json()
    assert [e["address"] for e in book] == ["0xdest"]


async def _two_factor_admin(service: ExchangeService, email: str) -> tuple[str, str]:
    assert service.database is not None and service.secrets is not None
    user_id, token = await _token(service, email, role="admin")
    secret, _ = await totp.enroll(service.database, service.secrets.master_key, user_id)
    step = int(totp._unix_time()) // totp.STEP_SECONDS
    await totp.confirm(
        service.database, service.secrets.master_key, user_id, pyotp.TOTP(secret).generate_otp(step)
    )
    return pyotp.TOTP(secret).generate_otp(step + 1), token  # the next step's code is fresh


async def _approvals(
    service: ExchangeService, client: httpx.AsyncClient, auth: dict[str, str], post: object
) -> None:
    body = {"asset": "USDT", "amount": "600", "address": "0xdest"}
    made = await client.post("/api/v1/withdrawals", json=body, headers=auth)
    assert made.json()["status"] == "APPROVAL_REQUIRED", made.text
    wid = made.json()["withdrawal_id"]
    for number, expected in ((1, "APPROVAL_REQUIRED"), (2, "APPROVED")):
        code, token = await _two_factor_admin(service, f"admin{number}@example.test")
        admin = {"Authorization": f"Bearer {token}"}
        path = f"/api/v1/admin/withdrawals/{wid}/approve"
        approved = await client.post(path, json={"totp_code": code}, headers=admin)
        assert (approved.status_code, approved.json()["status"]) == (200, expected), approved.text
        again = await client.post(path, json={"totp_code": code}, headers=admin)
        assert again.status_code in (400, 409)  # the code is spent, the decision made
