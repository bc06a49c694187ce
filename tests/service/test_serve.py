"""`mercato serve` as an operator runs it: a real process, real HTTP, real signals."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx

from mercato.journal import recover_engine
from mercato.store import current_revision, head_revision
from service.conftest import BOOT_SECONDS, Backend, Server


def test_serve_boots_answers_stops_cleanly_and_restarts_with_its_state(
    backend: Backend, servers: list[Server]
) -> None:
    data, env = backend.data, backend.env
    server = Server(data, env)
    servers.append(server)
    ready = server.wait_ready()
    booted_seq = ready["last_seq"]
    assert booted_seq == 9  # 5 assets + 4 markets created from the default configuration
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "live"}
    missing = httpx.get(f"{server.url}/no/such/path")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    wrong_method = httpx.post(f"{server.url}/health/live")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/health/ready" in spec["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200

    assert server.stop() == 0, server.output()
    log = server.output()
    assert "snapshot written" in log

    engine, snapshot_seq, replayed = recover_engine(data / "engine")
    assert sorted(engine.assets) == ["BTC", "ETH", "SOL", "USDC", "USDT"]
    assert sorted(engine.markets) == ["BTC-USDT", "ETH-BTC", "ETH-USDT", "SOL-USDT"]
    assert (snapshot_seq, replayed) == (booted_seq, 0)  # the final snapshot covers everything
    for name in ("jwt_key.hex", "master_key.hex"):
        secret_file = data / "secrets" / name
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert secret_file.read_text().strip() not in log  # never logged
    assert {"users", "api_keys", "refresh_tokens", "alembic_version"} <= backend.tables()
    assert (data / "mercato.db").exists() == (backend.name == "sqlite")

    again = Server(data, env)
    servers.append(again)
    assert again.wait_ready()["last_seq"] == booted_seq  # nothing created twice
    assert again.stop() == 0, again.output()


def test_serve_refuses_a_configuration_the_engine_rejects(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    # This and the next test are about configuration (the engine's verdict on it, and a
    # file that does not parse): the store plays no part, so SQLite alone.
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[assets]]\nsymbol = "AAA"\ndecimals = 2\n[[assets]]\nsymbol = "BBB"\ndecimals = 2\n'
        '[[markets]]\nsymbol = "AAA-BBB"\nbase = "AAA"\nquote = "BBB"\ntick_size = "0.01"\n'
        'step_size = "0.01"\nmin_qty = "0.01"\nmax_qty = "10"\nmin_notional = "0"\n'
    )
    server = Server(tmp_path / "data", env, "--config", str(config))
    servers.append(server)
    assert server.process.wait(timeout=BOOT_SECONDS) == 1
    assert "market AAA-BBB" in server.output()


def test_serve_reports_a_broken_config_file_without_a_traceback(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("[server]\nprot = 1\n")
    server = Server(tmp_path / "data", env, "--config", str(config))
    servers.append(server)
    assert server.process.wait(timeout=BOOT_SECONDS) == 2
    out = server.output()
    assert "prot" in out and "Traceback" not in out


def test_serve_migrates_and_runs_on_the_database_it_is_given(
    database_url: str, tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    """DATABASE_URL selects the store: SQLite elsewhere than the data directory, or
    PostgreSQL; the service migrates it to head before it reports ready."""
    server = Server(tmp_path / "data", {**env, "DATABASE_URL": database_url})
    servers.append(server)
    server.wait_ready()
    assert asyncio.run(current_revision(database_url)) == head_revision()
    assert server.stop() == 0, server.output()
    assert not (tmp_path / "data" / "mercato.db").exists()  # the default store was not used
