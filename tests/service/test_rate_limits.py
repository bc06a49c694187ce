"""Rate limits over real HTTP: the per-IP credential budget, the per-account budget shared
by a user's sessions and keys, and buckets shared by two servers through Redis."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from service.conftest import Server
from service.test_api_keys import signed_get
from service.test_sessions import PASSWORD, bearer, create_user
from services import require_service, tcp_reachable


def limits_config(path: Path, budgets: str, redis: str = "") -> Path:
    path.write_text(f"[rate_limits]\n{budgets}\n{redis}")
    return path


def assert_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["code"] == "RATE_LIMITED"
    assert int(answer.headers["retry-after"]) >= 1


def test_credential_endpoints_have_a_tight_per_ip_budget(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "data"
    create_user(data, "ann@example.com")
    config = limits_config(tmp_path / "limits.toml", "auth = { per_second = 0.01, burst = 4 }")
    server = Server(data, env, "--config", str(config))
    servers.append(server)
    server.wait_ready()
    login = f"{server.url}/api/v1/auth/login"
    keys = f"{server.url}/api/v1/account/api-keys"

    signed_in = httpx.post(login, json={"email": "ann@example.com", "password": PASSWORD})
    ann = bearer(signed_in.json()["access_token"])
    wrong = [httpx.post(login, json={"email": "ann@example.com", "password": "nope-nope-1"})
             for _ in range(3)]  # fmt: skip
    assert [a.status_code for a in wrong] == [401, 401, 401]
    refused = httpx.post(login, json={"email": "ann@example.com", "password": PASSWORD})
    assert_limited(refused)
    # One token at 0.01/s takes 100 s, less the time the four logins took to refill.
    assert 90 <= int(refused.headers["retry-after"]) <= 100
    assert "sign-in endpoints" in refused.json()["message"]
    register = httpx.post(f"{server.url}/api/v1/auth/register",
                          json={"email": "new@example.com", "password": PASSWORD})  # fmt: skip
    assert_limited(register)  # the budget covers every credential endpoint...
    # ...and the account endpoints that check a 2FA code, but not plain reads.
    assert_limited(httpx.post(keys, headers=ann, json={"label": "bot", "permissions": ["read"]}))
    assert httpx.get(keys, headers=ann).status_code == 200

    # Other endpoints and the health probes are outside that budget.
    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    assert httpx.get(f"{server.url}/api/v1/account/me").status_code == 401
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


def test_account_budget_is_shared_by_sessions_and_keys(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "data"
    create_user(data, "ann@example.com")
    create_user(data, "bob@example.com")
    config = limits_config(tmp_path / "limits.toml", "account = { per_second = 0.01, burst = 6 }")
    server = Server(data, env, "--config", str(config))
    servers.append(server)
    server.wait_ready()
    auth, account = f"{server.url}/api/v1/auth", f"{server.url}/api/v1/account"

    def session(email: str) -> dict[str, str]:
        answer = httpx.post(f"{auth}/login", json={"email": email, "password": PASSWORD})
        return bearer(answer.json()["access_token"])

    ann, ann_again, bob = (
        session("ann@example.com"),
        session("ann@example.com"),
        session("bob@example.com"),
    )
    key = httpx.post(f"{account}/api-keys", headers=ann,
                     json={"label": "bot", "permissions": ["read"]}).json()  # fmt: skip
    # Ann has spent 1 token (the key); 5 left across her two sessions and her key.
    spent = [httpx.get(f"{account}/me", headers=ann), httpx.get(f"{account}/me", headers=ann_again),
             signed_get(f"{account}/me", key), httpx.get(f"{account}/me", headers=ann),
             signed_get(f"{account}/me", key)]  # fmt: skip
    assert [a.status_code for a in spent] == [200] * 5
    assert_limited(httpx.get(f"{account}/me", headers=ann_again))
    assert_limited(signed_get(f"{account}/me", key))
    assert "for this account" in signed_get(f"{account}/me", key).json()["message"]
    # Bob, from the same IP, has his own account budget.
    assert httpx.get(f"{account}/me", headers=bob).status_code == 200


def test_per_ip_budget_refuses_every_path_but_health(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    config = limits_config(tmp_path / "limits.toml", "ip = { per_second = 0.01, burst = 4 }")
    server = Server(tmp_path / "data", env, "--config", str(config))
    servers.append(server)
    server.wait_ready()
    answers = [httpx.get(f"{server.url}/api/v1/account/me") for _ in range(4)]
    assert [a.status_code for a in answers] == [401] * 4
    assert_limited(httpx.get(f"{server.url}/openapi.json"))
    assert_limited(httpx.post(f"{server.url}/api/v1/auth/login", json={}))
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_two_servers_share_buckets_through_redis(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    require_service("redis", *tcp_reachable("127.0.0.1", 6379))
    prefix = f"test-{secrets.token_hex(6)}:"  # a fresh key space: no bucket from other runs
    redis = f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nkey_prefix = "{prefix}"\n'
    config = limits_config(tmp_path / "limits.toml", "ip = { per_second = 0.01, burst = 5 }",
                           redis)  # fmt: skip
    first = Server(tmp_path / "one", env, "--config", str(config))
    second = Server(tmp_path / "two", env, "--config", str(config))
    servers.extend([first, second])
    first.wait_ready()
    second.wait_ready()
    for server in (first, second, first):
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
    assert httpx.get(f"{second.url}/api/v1/account/me").status_code == 401
    assert httpx.get(f"{first.url}/api/v1/account/me").status_code == 401
    assert_limited(httpx.get(f"{second.url}/openapi.json"))  # 5 taken across both servers
    assert_limited(httpx.get(f"{first.url}/openapi.json"))


BAD_BUDGETS = ["ip = { per_second = 0, burst = 5 }", "ip = { per_second = 1 }", "ipp = {}"]


@pytest.mark.parametrize("budget", BAD_BUDGETS)
def test_bad_rate_limit_config_stops_the_server(
    tmp_path: Path, env: dict[str, str], budget: str
) -> None:
    config = limits_config(tmp_path / "limits.toml", budget)
    server = Server(tmp_path / "data", env, "--config", str(config))
    assert server.process.wait(timeout=30) != 0
    assert "rate_limits" in server.output()
