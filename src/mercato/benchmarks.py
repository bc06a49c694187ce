"""`mercato bench ...`: benchmarks that print figures (never timed assertions)."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from mercato.core import engine as engine_module
from mercato.core.commands import Command
from mercato.core.engine import Engine
from mercato.core.events import Trade
from mercato.flow import generate_flow
from mercato.runtime import tune_gc

FLOW_TS = 2_000  # one fixed timestamp (ms): the durable run must end in the same state
BACKLOG_BATCHES = 16
#: The ``bench`` extra of pyproject.toml, imported only by the commands that use it.
BENCH_EXTRA_MODULES = frozenset({"httpx"})


def _flow_clock() -> int:
    return FLOW_TS


bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)


def _exit_without_bench_extra(command: str, missing: ModuleNotFoundError) -> NoReturn:
    """Name the extra to install when a bench command's own dependency is missing; any
    other missing module is a broken install and keeps its traceback."""
    if missing.name not in BENCH_EXTRA_MODULES:
        raise missing
    typer.echo(
        f"mercato bench {command} needs {missing.name}: pip install 'mercato[bench]'", err=True
    )
    raise typer.Exit(2)


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _fresh_engine(setup: list[Command]) -> Engine:
    # At FLOW_TS too, as the durable runs' clock stamps it: a deposit's timestamp is state
    # (its id is remembered until then + the window), so it must match theirs.
    engine = Engine()
    for seq, command in enumerate(setup, 1):
        engine.apply(seq, FLOW_TS, command)
    return engine


def engine_throughput(setup: list[Command], flow: list[Command]) -> tuple[float, Engine]:
    """Commands per second through Engine.apply, no per-command timing overhead."""
    engine = _fresh_engine(setup)
    apply = engine.apply
    first = len(setup) + 1
    tune_gc()
    started = time.perf_counter()
    for seq, command in enumerate(flow, first):
        apply(seq, FLOW_TS, command)
    elapsed = time.perf_counter() - started
    return len(flow) / elapsed, engine


def engine_latencies(setup: list[Command], flow: list[Command]) -> tuple[list[int], int]:
    """Per-command apply latency in ns (sorted) and the number of trades."""
    engine = _fresh_engine(setup)
    apply = engine.apply
    clock = time.perf_counter_ns
    latencies = [0] * len(flow)
    trades = 0
    first = len(setup) + 1
    tune_gc()
    for i, command in enumerate(flow):
        seq = first + i
        started = clock()
        result = apply(seq, FLOW_TS, command)
        latencies[i] = clock() - started
        for event in result.events:
            if type(event) is Trade:
                trades += 1
    latencies.sort()
    return latencies, trades


def durable_sync(setup: list[Command], flow: list[Command], max_batch: int) -> tuple[float, str]:
    """Commands/s through ``Sequencer.process`` offered a backlog, as under sustained load:
    16 batches of ``max_batch`` commands per call, each batch one write + one fdatasync
    before it is applied, the next batch's commit overlapping this one's apply; results
    are dropped after each call, as a server releases them. Also returns the resulting
    state hash."""
    from mercato.journal import Sequencer

    with (
        tempfile.TemporaryDirectory(prefix="mercato-bench-") as data_dir,
        Sequencer(data_dir, max_batch=max_batch, snapshot_every=0, clock=_flow_clock) as sequencer,
    ):
        sequencer.process(setup)
        tune_gc()
        backlog = BACKLOG_BATCHES * max_batch
        started = time.perf_counter()
        for start in range(0, len(flow), backlog):
            sequencer.process(flow[start : start + backlog])
        elapsed = time.perf_counter() - started
        return len(flow) / elapsed, sequencer.engine.state_hash()


async def _durable_async(
    data_dir: str, setup: list[Command], flow: list[Command], max_batch: int
) -> float:
    from mercato.journal import AsyncSequencer

    sequencer = await AsyncSequencer.open(data_dir, max_batch=max_batch, snapshot_every=0)
    try:
        await sequencer.submit_many(setup)
        tune_gc()
        started = time.perf_counter()
        # Every command in flight at once, as from many clients; each gets its own future.
        await asyncio.gather(*[sequencer.submit_nowait(command) for command in flow])
        return len(flow) / (time.perf_counter() - started)
    finally:
        await sequencer.close()


def durable_async(setup: list[Command], flow: list[Command], max_batch: int) -> float:
    """Commands/s through the asyncio front (one future per command, group commit)."""
    with tempfile.TemporaryDirectory(prefix="mercato-bench-") as data_dir:
        return asyncio.run(_durable_async(data_dir, setup, flow, max_batch))


@bench_app.command("engine")
def bench_engine(
    commands: int = typer.Option(200_000, "--commands", help="Trading commands in the flow."),
    seed: int = typer.Option(1, "--seed", help="Seed of the generated flow."),
    users: int = typer.Option(8, "--users", help="Funded users trading."),
    max_batch: int = typer.Option(1024, "--max-batch", help="Group-commit batch size."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Runs of each measurement."),
    as_json: bool = typer.Option(False, "--json", help="Last line: one JSON object."),
) -> None:
    """Generated realistic flow through the engine, then through the durable sequencer.

    The process runs with the engine's GC settings (``mercato.runtime.tune_gc``), as an
    exchange process does."""
    console = Console(stderr=as_json)
    setup, flow = generate_flow(seed, commands, users)
    compiled = engine_module.__file__ is not None and not engine_module.__file__.endswith(".py")
    console.print(
        f"flow: {len(flow):,} commands, seed {seed}, {users} users, 2 markets; "
        f"engine {'compiled (mypyc)' if compiled else 'pure Python'}"
    )
    # Throughputs are the median of ``repeat`` runs; latency percentiles pool every run.
    runs = [engine_throughput(setup, flow) for _ in range(repeat)]
    throughput = statistics.median(rate for rate, _ in runs)
    engine = runs[-1][1]
    engine.check_invariants()
    latencies: list[int] = []
    for _ in range(repeat):
        run_latencies, trades = engine_latencies(setup, flow)
        latencies.extend(run_latencies)
    latencies.sort()
    durable_runs = [durable_sync(setup, flow, max_batch) for _ in range(repeat)]
    if any(state != engine.state_hash() for _, state in durable_runs):
        raise RuntimeError("the durable run ended in a different state than the engine run")
    durable = statistics.median(rate for rate, _ in durable_runs)
    durable_async_rate = statistics.median(
        durable_async(setup, flow, max_batch) for _ in range(repeat)
    )
    figures = {
        "commands": len(flow),
        "seed": seed,
        "repeat": repeat,
        "compiled": compiled,
        "engine_commands_per_sec": round(throughput),
        "engine_p50_us": round(_percentile(latencies, 0.50) / 1000, 2),
        "engine_p99_us": round(_percentile(latencies, 0.99) / 1000, 2),
        "engine_p999_us": round(_percentile(latencies, 0.999) / 1000, 2),
        "engine_max_us": round(latencies[-1] / 1000, 2),
        "durable_commands_per_sec": round(durable),
        "durable_async_commands_per_sec": round(durable_async_rate),
        "durable_max_batch": max_batch,
        "trades": trades,
        "open_orders": len(engine.orders),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "state_hash": engine.state_hash(),
    }
    table = Table("figure", "value")
    for key, value in figures.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        table.add_row(key, str(shown))
    console.print(table)
    if as_json:
        print(json.dumps(figures))


@bench_app.command("api")
def bench_api(
    seconds: float = typer.Option(10.0, "--seconds", help="Length of the HTTP order load."),
    connections: int = typer.Option(64, "--connections", help="Keep-alive HTTP connections."),
    users: int = typer.Option(8, "--users", help="Trading users sharing the connections."),
    subscribers: int = typer.Option(500, "--subscribers", help="WebSocket subscribers (0: skip)."),
    dialect: str = typer.Option(
        "native",
        "--dialect",
        help="native (/api/v1/orders), binance (/api/v3/order, signed) or both (alternating).",
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of figures."),
) -> None:
    """Start a server on a temporary data dir, then place and cancel orders over HTTP from
    many connections: acknowledged (durable) orders/s and latency percentiles; then
    WebSocket subscribers on the busy market: messages/s and event-to-client latency."""
    try:
        from mercato.apibench import run_api_bench
    except ModuleNotFoundError as missing:
        _exit_without_bench_extra("api", missing)

    if dialect not in ("native", "binance", "both"):
        raise typer.BadParameter("native, binance or both", param_hint="--dialect")
    figures = run_api_bench(seconds, connections, users, subscribers, dialect)
    console = Console()
    console.print(
        f"HTTP: {figures['http_orders_per_sec']:,} orders/s placed "
        f"({figures['http_requests_per_sec']:,} order requests/s with cancels), "
        f"p50 {figures['http_p50_ms']} ms, p99 {figures['http_p99_ms']} ms, "
        f"{connections} connections, errors {figures['http_errors'] or 'none'}, "
        f"projection {figures['http_projection_lag']:,} commands behind at the end"
    )
    if dialect == "both":
        console.print(
            f"Binance dialect: {figures['binance_http_orders_per_sec']:,} orders/s placed, "
            f"p50 {figures['binance_http_p50_ms']} ms, p99 {figures['binance_http_p99_ms']} ms, "
            f"errors {figures['binance_http_errors'] or 'none'}: "
            f"{figures['binance_to_native_ratio']} x the native dialect's (best of 2 rounds each)"
        )
    if subscribers:
        console.print(
            f"WebSocket: {subscribers} subscribers received {figures['ws_messages_per_sec']:,} "
            f"messages/s, event-to-client p99 {figures['ws_p99_ms']} ms, "
            f"{figures['ws_closed_early']} closed early"
        )
    if as_json:
        print(json.dumps(figures))


@bench_app.command("custody")
def bench_custody(
    addresses: int = typer.Option(1000, "--addresses", min=1, help="Users with a deposit address."),
    deposits: int = typer.Option(2000, "--deposits", min=2, help="Deposits, half ETH, half USDT."),
    withdrawals: int = typer.Option(200, "--withdrawals", min=0, help="Withdrawals sent."),
    block_txs: int = typer.Option(200, "--block-txs", min=1, help="Deposits per block."),
    confirmations: int = typer.Option(12, "--confirmations", min=1, help="Blocks deep to credit."),
    seed: int = typer.Option(1, "--seed", help="Seed of the deposits' amounts and addresses."),
    as_json: bool = typer.Option(False, "--json", help="Last line: one JSON object."),
) -> None:
    """On a real Anvil (manual mining): deposits to many addresses detected and credited
    per second, with the JSON-RPC requests the scan made; then withdrawals signed and
    broadcast per second, and completed once deep enough (docs/benchmarks.md)."""
    from mercato.custodybench import AnvilMissing, BenchSizes, run_custody_bench

    sizes = BenchSizes(addresses, deposits, withdrawals, block_txs, confirmations, seed)
    try:
        figures = asyncio.run(run_custody_bench(sizes))
    except AnvilMissing as missing:
        typer.echo(f"mercato bench custody: {missing}", err=True)
        raise typer.Exit(2) from None
    console = Console(stderr=as_json)
    table = Table("figure", "value", title="custody on Anvil")
    for key, value in figures.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        table.add_row(key, str(shown))
    console.print(table)
    if as_json:
        print(json.dumps(figures))
