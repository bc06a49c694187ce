"""What a first-time operator meets around `mercato serve`: `audit` and `replay` on the
directory serve uses, the store's identity in the data directory, and the checks that
come before serve writes anything. Real `mercato` processes throughout."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from mercato.store import sqlite_url
from mercato.store.database import downgrade
from service.conftest import Backend, Server, free_port, fresh_postgres_database


def mercato(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def refused(answer: subprocess.CompletedProcess[str], reason: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr that says ``reason``."""
    assert answer.returncode == 2, answer
    assert answer.stdout == ""
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], answer.stderr


# ---------------------------------------------------------------- audit and replay


def test_audit_and_replay_take_the_data_directory_serve_uses_and_refuse_one_without_a_journal(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    data = tmp_path / "mercato-data"
    server = Server(data, env)
    servers.append(server)
    booted_seq = server.wait_ready()["last_seq"]
    assert server.stop() == 0, server.output()

    # The data directory serve uses, its engine/ directory, and the journal directory.
    for given in (data, data / "engine", data / "engine" / "journal"):
        audit = mercato("audit", str(given), "--json", env=env, cwd=tmp_path)
        assert audit.returncode == 0, audit
        report = json.loads(audit.stdout)
        assert (report["ok"], report["last_seq"]) == (True, booted_seq)
        assert sorted(report["balances"]) == ["BTC", "ETH", "SOL", "USDC", "USDT"]
        replay = mercato("replay", str(given), "--json", env=env, cwd=tmp_path)
        assert replay.returncode == 0, replay
        assert json.loads(replay.stdout) == {
            "last_seq": booted_seq, "state_hash": report["state_hash"]
        }  # fmt: skip
    # No directory given: the configured one, as serve finds it (./mercato-data here).
    audit = mercato("audit", env=env, cwd=tmp_path)
    assert audit.returncode == 0 and f"recovered seq {booted_seq}" in audit.stdout, audit
    elsewhere = {**env, "MERCATO_DATA_DIR": str(data)}
    assert mercato("replay", env=elsewhere, cwd=data / "secrets").returncode == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("audit", "replay"):
        refused(mercato(command, str(empty), env=env, cwd=tmp_path), "holds no journal")
        refused(mercato(command, "nowhere", env=env, cwd=tmp_path), "does not exist")
        refused(mercato(command, env=env, cwd=empty), "does not exist")  # no ./mercato-data
        refused(mercato(command, str(data / "secrets"), env=env, cwd=tmp_path), "holds no journal")


# ---------------------------------------------------------------- the store's identity


def serve(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A `mercato serve` expected to refuse to start (on a port of its own)."""
    return mercato("serve", "--port", str(free_port()), "--data-dir", str(data), *args,
                   env=env, cwd=data.parent)  # fmt: skip


def refused_to_start(answer: subprocess.CompletedProcess[str], *reasons: str) -> None:
    assert answer.returncode == 1, answer
    error = answer.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot start: "), answer.stderr
    for reason in reasons:
        assert reason in error, error
    assert "Traceback" not in answer.stderr and "alembic" not in answer.stderr


def started_and_stopped(data: Path, env: dict[str, str], servers: list[Server]) -> int:
    server = Server(data, env)
    servers.append(server)
    last_seq = int(server.wait_ready()["last_seq"])  # type: ignore[call-overload]
    assert server.stop() == 0, server.output()
    return last_seq


def test_a_data_directory_refuses_a_store_that_is_not_its_own(
    backend: Backend, servers: list[Server], tmp_path: Path
) -> None:
    """Used with one store, the data directory refuses the other kind (PostgreSQL opened
    without DATABASE_URL: before, a new empty SQLite store, ready with no users) and
    another database of the same kind, before it creates or migrates anything."""
    data = backend.data
    started_and_stopped(data, backend.env, servers)

    with fresh_postgres_database() as other_postgres:
        if backend.name == "postgres":
            without_url = {k: v for k, v in backend.env.items() if k != "DATABASE_URL"}
            refused_to_start(serve(data, without_url), "belongs to the postgresql store",
                             "DATABASE_URL is not set", f"DATABASE_URL={backend.url}")  # fmt: skip
            assert not (data / "mercato.db").exists()  # no empty SQLite store made
            other = other_postgres
        else:
            refused_to_start(serve(data, {**backend.env, "DATABASE_URL": other_postgres}),
                             "belongs to the sqlite store", "DATABASE_URL unset")  # fmt: skip
            other = sqlite_url(tmp_path / "other.db")
        refused_to_start(serve(data, {**backend.env, "DATABASE_URL": other}), "has no store id")
        assert Backend("other", data, backend.env, other_postgres).tables() == set()
    assert not (tmp_path / "other.db").exists()
    started_and_stopped(data, backend.env, servers)  # its own store: fine
    recorded = json.loads((data / "store.json").read_text())
    assert recorded["backend"] == ("sqlite" if backend.name == "sqlite" else "postgresql")
    assert backend.rows("SELECT store_id FROM store_identity") == [(recorded["store_id"],)]


def test_admin_commands_refuse_a_store_that_is_not_the_data_directorys_own(
    backend: Backend, servers: list[Server], tmp_path: Path
) -> None:
    """`mercato admin` pairs data directory and store as `serve` does, before it creates
    or migrates anything: a forgotten DATABASE_URL must not put a new operator into a new,
    empty SQLite store that no server reads."""
    data = backend.data
    started_and_stopped(data, backend.env, servers)
    create = ("admin", "create-user", "root@example.com", "--role", "superadmin",
              "--password-stdin", "--data-dir", str(data))  # fmt: skip

    def admin(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mercato.cli", *create], input="correct horse 9 battery\n",
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    with fresh_postgres_database() as other_postgres:
        wrong = (
            {k: v for k, v in backend.env.items() if k != "DATABASE_URL"}
            if backend.name == "postgres"
            else {**backend.env, "DATABASE_URL": other_postgres}
        )
        answer = admin(wrong)
        assert answer.returncode == 1, answer
        assert "belongs to the" in answer.stderr and "Traceback" not in answer.stderr
        assert Backend("other", data, backend.env, other_postgres).tables() == set()
    assert backend.name == "sqlite" or not (data / "mercato.db").exists()
    assert backend.rows("SELECT count(*) FROM users") == [(0,)]

    answer = admin(backend.env)  # its own store: the operator is created there
    assert answer.returncode == 0, answer
    assert backend.rows("SELECT email, role FROM users") == [("root@example.com", "superadmin")]


def test_a_data_directory_from_before_the_identity_adopts_its_store_if_it_fits_the_journal(
    backend: Backend, servers: list[Server], tmp_path: Path
) -> None:
    data = backend.data
    booted_seq = started_and_stopped(data, backend.env, servers)
    # As Mercato left it before revision 0005: no store.json, no store_identity.
    (data / "store.json").unlink()
    assert asyncio.run(downgrade(backend.url, "0004")) == "0004"

    # A store that never projected this non-empty journal is not adopted.
    with fresh_postgres_database() as empty:
        refused_to_start(serve(data, {**backend.env, "DATABASE_URL": empty}),
                         f"holds {booted_seq} commands", "never projected any")  # fmt: skip
    # Nor one whose projection disagrees with the journal: another exchange's journal,
    # the same 9 setup commands at other times.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    on_sqlite = {k: v for k, v in backend.env.items() if k != "DATABASE_URL"}
    started_and_stopped(elsewhere / "data", on_sqlite, servers)
    shutil.move(data / "engine", tmp_path / "own-engine")
    shutil.copytree(elsewhere / "data" / "engine", data / "engine")
    refused_to_start(serve(data, backend.env), "projected a different history")
    shutil.rmtree(data / "engine")
    shutil.move(tmp_path / "own-engine", data / "engine")

    # Its own store fits: adopted, and recorded from now on.
    assert started_and_stopped(data, backend.env, servers) == booted_seq
    recorded = json.loads((data / "store.json").read_text())
    assert backend.rows("SELECT store_id FROM store_identity") == [(recorded["store_id"],)]


def test_a_projection_ahead_of_the_journal_is_refused(
    backend: Backend, servers: list[Server], tmp_path: Path
) -> None:
    """The journal restored from an older backup than the store (or another exchange's):
    the projection would skip every command up to its cursor."""
    data = backend.data
    started_and_stopped(data, backend.env, servers)
    shutil.copytree(data / "engine", tmp_path / "backup-engine")
    config = tmp_path / "more.toml"
    symbols = ("BTC", "ETH", "SOL", "USDT", "USDC", "DOGE")
    config.write_text("".join(f'[[assets]]\nsymbol = "{s}"\ndecimals = 8\n' for s in symbols))
    server = Server(data, backend.env, "--config", str(config))
    servers.append(server)
    assert server.wait_ready()["last_seq"] == 10  # DOGE
    assert server.stop() == 0, server.output()
    assert backend.rows("SELECT last_seq FROM projection_cursor") == [(10,)]

    shutil.rmtree(data / "engine")
    shutil.copytree(tmp_path / "backup-engine", data / "engine")
    refused_to_start(serve(data, backend.env),
                     "'sql'", "is at seq 10 but the journal", "ends at seq 9")  # fmt: skip


# ---------------------------------------------------------------- checks before writes


def test_a_port_in_use_is_refused_before_anything_is_written(backend: Backend) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        answer = mercato("serve", "--port", str(port), "--data-dir", str(backend.data),
                         env=backend.env, cwd=backend.data.parent)  # fmt: skip
    assert answer.returncode == 1, answer
    assert answer.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not backend.data.exists()  # no data directory, no secrets, no SQLite store
    if backend.name == "postgres":
        assert backend.tables() == set()  # nothing migrated


def test_a_second_serve_on_a_data_directory_in_use_is_refused_before_it_migrates(
    backend: Backend, servers: list[Server]
) -> None:
    first = Server(backend.data, backend.env)
    servers.append(first)
    first.wait_ready()
    refused_to_start(serve(backend.data, backend.env), "is in use", "engine/LOCK")
    assert httpx.get(f"{first.url}/health/ready").status_code == 200  # unaffected
    assert first.stop() == 0, first.output()


def test_a_plain_postgresql_url_gets_the_asyncpg_driver_and_another_driver_is_refused(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    with fresh_postgres_database() as url:
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        server = Server(tmp_path / "data", {**env, "DATABASE_URL": plain})
        servers.append(server)
        server.wait_ready()
        assert server.stop() == 0, server.output()
        recorded = json.loads((tmp_path / "data" / "store.json").read_text())
        assert recorded["database"] == url
        started_and_stopped(tmp_path / "data", {**env, "DATABASE_URL": "postgres://" +
                            plain.removeprefix("postgresql://")}, servers)  # fmt: skip

    answer = serve(tmp_path / "fresh", {**env, "DATABASE_URL": "mysql://u:secret@h/db"})
    assert answer.returncode == 2, answer
    assert "unsupported database URL 'mysql://u:***@h/db'" in answer.stderr
    assert "secret" not in answer.stderr and not (tmp_path / "fresh").exists()
