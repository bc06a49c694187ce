"""`mercato bench api` end to end at a tiny scale: it starts a real server, trades over
HTTP and fans out over WebSocket, and reports every figure the issue names."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mercato.cli import app

REQUIRED = ("http_orders_per_sec", "http_p50_ms", "http_p99_ms", "ws_subscribers",
            "ws_messages_per_sec", "ws_p99_ms")  # fmt: skip


def test_bench_api_reports_its_figures_as_the_last_json_line() -> None:
    arguments = "bench api --seconds 1 --connections 4 --users 2 --subscribers 10 --json"
    result = CliRunner().invoke(app, arguments.split())
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert all(key in figures for key in REQUIRED), figures
    assert figures["http_orders_placed"] > 0 and figures["http_errors"] == {}
    commands = figures["http_orders_placed"] + figures["http_orders_cancelled"]
    assert 0 <= figures["http_projection_lag"] <= commands + 100  # read from /health/ready
    assert result.output.count("WebSocket:") == 1
    assert figures["ws_subscribers"] == 10 and figures["ws_closed_early"] == 0
    assert figures["ws_messages_per_sec"] > 0  # the market moved and the subscribers saw it
    assert figures["ws_driving_errors"] == {}  # takers' fills answered, not failed


def test_bench_api_drives_both_dialects_side_by_side() -> None:
    """``--dialect both``: the same load through POST /api/v3/order (signed form bodies)
    and the native path, on one server, every order acknowledged in each dialect."""
    arguments = (
        "bench api --seconds 1 --connections 4 --users 2 --subscribers 0 --dialect both --json"
    )
    result = CliRunner().invoke(app, arguments.split())
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["http_orders_placed"] > 0 and figures["http_errors"] == {}
    assert figures["binance_http_orders_placed"] > 0, figures
    assert figures["binance_http_errors"] == {}, figures
    assert figures["binance_http_orders_cancelled"] > 0  # DELETE /api/v3/order by orderId
    ratio = figures["binance_http_orders_per_sec"] / figures["http_orders_per_sec"]
    assert figures["binance_to_native_ratio"] == round(ratio, 3)
    assert "Binance dialect:" in result.output
