"""Projector throughput: ``python bench/projector_bench.py [--commands N] [--rate R]``.

The generated flow (``mercato.flow.generate_flow``, seed 1, 8 users) goes through a
sequencer (journal in a temporary directory) with a :class:`mercato.store.projector.Projector`
listening, on SQLite (a WAL file next to the journal) and on PostgreSQL (a fresh database
on ``--postgres``, dropped afterwards; skipped if unreachable). Three runs per backend:

- **backlog**: the sequencer applies the whole flow while the event loop is busy, so
  everything queues in the projector (a simulated clock moves 200 ms per 1,000 commands,
  5,000 commands/s, so candles roll over as in real trading); then the projector drains
  it: commands/s and rows/s of the projector alone, at ``--max-commands`` per transaction.
- **catch-up**: a second projector on an empty database reads the same journal
  (``replay_applied``: the engine replays each command to reproduce its events).
- **paced**: an ``AsyncSequencer`` is offered ``--rate`` commands/s of the flow (each one
  its own future, as HTTP requests would be) with the projector live in the same process
  and event loop; prints the achieved rate, the projection lag in commands (sampled every
  10 ms) and read-your-writes delays: for every 50th command, the time from its result to
  ``Projector.wait_for`` returning.

The process runs with ``mercato.runtime.tune_gc()``, as the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from mercato.core.commands import Command
from mercato.flow import generate_flow
from mercato.journal import AsyncSequencer, Sequencer
from mercato.runtime import tune_gc
from mercato.store import create_engine, migrate, sqlite_url
from mercato.store.projector import Projector

SIM_START_MS = 1_767_225_600_000
CHUNK = 1_000  # commands per Sequencer.process call in the backlog run
CHUNK_MS = 200  # simulated time per chunk: 5,000 commands/s


class SimulatedClock:
    def __init__(self) -> None:
        self.now = SIM_START_MS

    def __call__(self) -> int:
        return self.now


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


async def backlog_and_catch_up(
    url: str, catch_up_url: str, workdir: Path, commands: list[Command], max_commands: int
) -> dict[str, Any]:
    data_dir = workdir / "engine"
    clock = SimulatedClock()
    db = create_engine(url)
    projector = Projector(db, max_commands=max_commands, max_backlog=len(commands) + 1)
    sequencer = Sequencer(data_dir, max_batch=1024, snapshot_every=100_000, clock=clock)
    try:
        sequencer.listeners.append(projector.on_batch)
        await projector.start(data_dir, sequencer.last_seq)
        for start in range(0, len(commands), CHUNK):  # the loop is busy: all of it queues
            clock.now += CHUNK_MS
            sequencer.process(commands[start : start + CHUNK])
        last = sequencer.last_seq
        began = time.perf_counter()
        if not await projector.wait_for(last, timeout=3600):
            raise RuntimeError(f"projector stopped at {projector.cursor}: {projector.error!r}")
        drained = time.perf_counter() - began
        await projector.stop()
        stats = projector.stats
    finally:
        sequencer.close()
        await db.dispose()

    db = create_engine(catch_up_url)
    try:
        again = Projector(db, max_commands=max_commands)
        began = time.perf_counter()
        await again.start(data_dir, last)  # returns once caught up
        caught_up = time.perf_counter() - began
        await again.stop()
    finally:
        await db.dispose()
    return {
        "commands": stats.commands,
        "rows": stats.rows,
        "transactions": stats.transactions,
        "backlog_seconds": round(drained, 3),
        "backlog_commands_per_sec": round(stats.commands / drained),
        "backlog_rows_per_sec": round(stats.rows / drained),
        "catch_up_commands_per_sec": round(again.stats.commands / caught_up),
    }


async def paced(
    url: str, workdir: Path, commands: list[Command], rate: int, max_commands: int
) -> dict[str, Any]:
    data_dir = workdir / "paced"
    db = create_engine(url)
    sequencer = await AsyncSequencer.open(data_dir, max_batch=1024, snapshot_every=0)
    projector = Projector(db, max_commands=max_commands)
    lags: list[int] = []
    delays: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def read_your_write(future: asyncio.Future[Any]) -> None:
        result = await future
        released = time.perf_counter()
        if await projector.wait_for(result.seq, timeout=60):
            delays.append(time.perf_counter() - released)

    async def sample() -> None:
        while True:
            lags.append(projector.lag(sequencer.last_seq))
            await asyncio.sleep(0.01)

    try:
        sequencer.sequencer.listeners.append(projector.on_batch)
        await projector.start(data_dir, sequencer.last_seq)
        sampler = asyncio.create_task(sample())
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        began = time.perf_counter()
        futures = []
        for i in range(0, len(commands), per_tick):
            due = began + (i // per_tick) * tick
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for n, command in enumerate(commands[i : i + per_tick], i):
                future = sequencer.submit_nowait(command)
                futures.append(future)
                if n % 50 == 0:
                    task = asyncio.create_task(read_your_write(future))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
        await asyncio.gather(*futures)
        offered = time.perf_counter() - began
        last = sequencer.last_seq
        await projector.wait_for(last, timeout=600)
        behind = time.perf_counter() - began - offered
        await asyncio.gather(*pending)
        sampler.cancel()
        await projector.stop()
    finally:
        await sequencer.close()
        await db.dispose()
    return {
        "offered_commands_per_sec": rate,
        "achieved_commands_per_sec": round(len(commands) / offered),
        "lag_commands_p50": percentile(lags, 0.5),
        "lag_commands_p99": percentile(lags, 0.99),
        "lag_commands_max": max(lags),
        "read_your_write_ms_p50": round(percentile(delays, 0.5) * 1000, 1),
        "read_your_write_ms_p99": round(percentile(delays, 0.99) * 1000, 1),
        "caught_up_after_last_ms": round(behind * 1000, 1),
    }


async def postgres_database(admin_dsn: str) -> tuple[str, str] | None:
    try:
        connection = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        print(f"PostgreSQL skipped: {error}", file=sys.stderr)
        return None
    name = f"mercato_bench_{secrets.token_hex(4)}"
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = make_url(admin_dsn).set(drivername="postgresql+asyncpg", database=name)
    return name, url.render_as_string(hide_password=False)


async def drop_postgres_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def run_backend(
    backend: str, urls: list[str], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    setup, flow = generate_flow(seed=1, count=args.commands, users=8)
    for url in urls:
        await migrate(url)
    figures: dict[str, Any] = {"backend": backend}
    figures |= await backlog_and_catch_up(
        urls[0], urls[1], workdir, [*setup, *flow], args.max_commands
    )
    paced_flow = generate_flow(seed=2, count=args.paced_commands, users=8)
    figures |= await paced(
        urls[2], workdir, [*paced_flow[0], *paced_flow[1]], args.rate, args.max_commands
    )
    return figures


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    tune_gc()
    results = []
    with tempfile.TemporaryDirectory(prefix="mercato-projector-bench-", dir=args.dir) as d:
        workdir = Path(d)
        urls = [sqlite_url(workdir / f"{n}.db") for n in ("live", "catch-up", "paced")]
        results.append(await run_backend("sqlite", urls, workdir / "sqlite", args))
        if args.postgres:
            names = []
            try:
                for _ in range(3):
                    created = await postgres_database(args.postgres)
                    if created is None:
                        break
                    names.append(created)
                if len(names) == 3:
                    pg_urls = [url for _, url in names]
                    results.append(await run_backend("postgresql", pg_urls, workdir / "pg", args))
            finally:
                for name, _ in names:
                    await drop_postgres_database(args.postgres, name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=100_000, help="backlog run flow size")
    parser.add_argument("--paced-commands", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=5_000, help="paced run, commands/s")
    parser.add_argument("--max-commands", type=int, default=5_000, help="per transaction")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin DSN that may create databases ('' to skip PostgreSQL)",
    )
    parser.add_argument("--dir", default=None, help="where the journal and SQLite files go")
    parser.add_argument("--json", action="store_true", help="one JSON line per backend")
    args = parser.parse_args()
    for figures in asyncio.run(main_async(args)):
        if args.json:
            print(json.dumps(figures))
            continue
        print(f"== {figures.pop('backend')}")
        for key, value in figures.items():
            print(f"  {key:28} {value:>12,}" if isinstance(value, int) else f"  {key:28} {value}")


if __name__ == "__main__":
    main()
