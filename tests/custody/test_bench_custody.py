"""`mercato bench custody --json` on a real Anvil with tiny sizes: the run does all its
work (every deposit credited to the atom, every withdrawal broadcast and completed), and
the scan's JSON-RPC requests do not grow with the watched addresses. Never timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from custody.anvil import anvil_binary
from services import require_service


def run_bench(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", "bench", "custody", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_bench_custody_credits_every_deposit_and_sends_every_withdrawal() -> None:
    binary = anvil_binary()
    require_service("anvil", binary is not None, "no anvil binary")
    assert binary is not None
    sizes = ("--addresses", "20", "--deposits", "30", "--withdrawals", "5", "--block-txs", "10")
    run = run_bench(*sizes, "--confirmations", "3", "--json",
                    env={**os.environ, "MERCATO_ANVIL": binary})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])

    assert (figures["addresses"], figures["deposits"], figures["withdrawals"]) == (20, 30, 5)
    # 30 deposits at 10 a block: 3 blocks, then 3 of confirmations
    assert figures["deposit_blocks"] == 3
    assert figures["blocks_scanned"] == 3 + 3
    assert figures["deposits_credited"] == 30
    assert figures["ledger_matches_deposits"] is True
    for rate in ("deposits_per_sec", "withdrawals_broadcast_per_sec", "addresses_per_sec"):
        assert figures[rate] > 0, rate

    # The scan read each block once, one eth_getLogs for the range, one receipt per
    # deposit, in a handful of HTTP requests (batches); no per-address call exists.
    calls = figures["scan_rpc_calls"]
    assert calls["eth_getLogs"] == 1
    assert calls["eth_getTransactionReceipt"] == 30
    assert set(calls) <= {
        "eth_blockNumber", "eth_getBlockByNumber", "eth_getLogs", "eth_getTransactionReceipt",
    }  # fmt: skip
    assert figures["scan_rpc_requests"] <= 6
    # Ten times the watched addresses: the same requests, the same 30 deposits found.
    assert (figures["rescan_n_addresses"], figures["rescan_10n_addresses"]) == (20, 200)
    assert figures["rescan_n_found"] == figures["rescan_10n_found"] == 30
    assert figures["rescan_10n_calls"] == figures["rescan_n_calls"]
    assert figures["rescan_10n_requests"] == figures["rescan_n_requests"]

    assert figures["withdrawals_broadcast"] == 5
    assert figures["withdrawals_completed"] == 5
    assert figures["holds_settled"] == 5
    assert figures["nonces_gapless"] is True
    assert figures["sender_rpc_calls_broadcast"]["eth_sendRawTransaction"] == 5


def test_bench_custody_without_anvil_says_where_it_looked() -> None:
    run = run_bench(
        "--addresses", "2", "--deposits", "2",
        env={**os.environ, "MERCATO_ANVIL": "/nonexistent/anvil"},
    )  # fmt: skip
    assert run.returncode == 2
    assert "MERCATO_ANVIL=/nonexistent/anvil is not a file" in run.stderr
    assert run.stdout == ""
