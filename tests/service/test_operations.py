"""What a first-time operator meets around `mercato serve`: `audit` and `replay` on the
directory serve uses, the store's identity in the data directory, and the checks that
come before serve writes anything. Real `mercato` processes throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.conftest import Server


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
