"""A bigger Schemathesis run than the test suite's (tests/service/test_openapi_fuzz.py):
the `st run` command line, with its examples, coverage and fuzzing phases, against a
fresh `mercato serve --dev` (SQLite, rate limits off), signed in as a verified user
funded by the faucet. Two runs: every operation with the conformance checks and
negative_data_rejection, then the reads with positive_data_acceptance as well (a write's
schema cannot say which inputs its business rules take; see the test's ``checks_for``),
but for candles, whose ``start`` after ``end`` is a 400.
The session-ending operations (logout, logout-everywhere, password change) are left out:
they would end the session the run uses (the test suite fuzzes them on a second user).
Prints Schemathesis' own summaries; exits non-zero if either run found a failure.

    python bench/fuzz_api.py --max-examples 200
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PASSWORD = "fuzz-password-9"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection"
)
SESSION_ENDING = r"/api/v1/auth/logout|/api/v1/account/password$"
# Reads with a rule across parameters that a schema cannot state (candles' start after end).
CROSS_PARAMETER_RULES = r"/candles$"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mercato(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mercato.cli", *args], text=True,
                          check=True, **kwargs)  # type: ignore[call-overload]  # fmt: skip


def signed_in(url: str) -> str:
    """A bearer token of the verified user, once the server is ready, with funds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    login = httpx.post(f"{url}/api/v1/auth/login",
                       json={"email": "fuzz@mercato.test", "password": PASSWORD})  # fmt: skip
    login.raise_for_status()
    token = str(login.json()["access_token"])
    for asset, amount in (("USDT", "1000000"), ("BTC", "1000")):
        httpx.post(f"{url}/api/v1/dev/faucet", headers={"authorization": f"Bearer {token}"},
                   json={"asset": asset, "amount": amount}).raise_for_status()  # fmt: skip
    return token


def schemathesis(
    url: str, token: str, max_examples: int, checks: str, excluded: str, *only: str
) -> int:
    """One `st run`, in the current directory (it keeps a .schemathesis folder there)."""
    command = [
        str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {token}", "--checks", checks,
        "--max-examples", str(max_examples), "--phases", "examples,coverage,fuzzing",
        "--exclude-path-regex", excluded, "--seed", "12", "--no-color", *only,
    ]  # fmt: skip
    print("$", " ".join(command).replace(token, "<token>"), flush=True)
    return subprocess.run(command).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200, help="cases per operation")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MERCATO_", "DATABASE"))}
    with tempfile.TemporaryDirectory() as tmp:
        data, config = Path(tmp) / "data", Path(tmp) / "fuzz.toml"
        config.write_text("[rate_limits]\nenabled = false\n")
        mercato("admin", "create-user", "fuzz@mercato.test", "--password-stdin",
                "--data-dir", str(data), input=PASSWORD + "\n", env=env)  # fmt: skip
        port = free_port()
        with (Path(tmp) / "serve.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "mercato.cli", "serve", "--dev", "--port", str(port),
                 "--data-dir", str(data), "--config", str(config)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        os.chdir(tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            token = signed_in(url)
            everything = schemathesis(url, token, args.max_examples, CHECKS, SESSION_ENDING)
            reads = schemathesis(
                url, token, args.max_examples, f"{CHECKS},positive_data_acceptance",
                f"{SESSION_ENDING}|{CROSS_PARAMETER_RULES}", "--include-method", "GET",
            )  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    sys.exit(1 if everything or reads else 0)


if __name__ == "__main__":
    main()
