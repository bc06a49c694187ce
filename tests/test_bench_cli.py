"""`mercato bench engine --json`: the contract other tooling reads (last line is JSON)."""

from __future__ import annotations

import json
import subprocess
import sys

REQUIRED = (
    "engine_commands_per_sec",
    "engine_p50_us",
    "engine_p99_us",
    "engine_p999_us",
    "durable_commands_per_sec",
    "trades",
    "rss_mb",
)


def test_bench_engine_prints_figures_as_json_last_line() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mercato.cli",
            "bench",
            "engine",
            "--commands",
            "3000",
            "--repeat",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    for key in REQUIRED:
        assert figures[key] > 0, key
    assert figures["commands"] == 3000
    assert figures["engine_p50_us"] <= figures["engine_p99_us"] <= figures["engine_p999_us"]
    # The bench itself refuses to print figures if the durable run diverged; the hash it
    # reports is the engine's after the flow.
    assert len(figures["state_hash"]) == 64


def run_cli_without_httpx(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a plain `pip install .` leaves it: httpx (the `bench` extra) absent."""
    without_httpx = "import sys; sys.modules['httpx'] = None; from mercato.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", without_httpx, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bench_api_without_its_extra_names_what_to_install() -> None:
    run = run_cli_without_httpx("bench", "api", "--seconds", "1")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == "mercato bench api needs httpx: pip install 'mercato[bench]'"


def test_the_cli_runs_without_the_bench_extra() -> None:
    for command in (["--help"], ["serve", "--help"], ["bench", "--help"]):
        run = run_cli_without_httpx(*command)
        assert run.returncode == 0, (command, run.stderr)
