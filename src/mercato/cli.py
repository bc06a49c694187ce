"""The ``mercato`` command line.

Sub-commands are registered on :data:`app`; command groups are added with
``app.add_typer(group, name=...)`` (e.g. ``mercato bench ...``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mercato.admin_cli import admin_app
from mercato.benchmarks import bench_app
from mercato.config import ENGINE_SUBDIR, Config, ConfigError, load_config
from mercato.custody.chains.base import ChainUnavailable
from mercato.custody.reconcile import AssetReconciliation, engine_totals, reconcile
from mercato.journal import JournalError, journal_dir, list_segments, recover_engine
from mercato.store import create_engine

app = typer.Typer(
    name="mercato",
    help="Mercato exchange backend: journal tools, audits and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(bench_app, name="bench")
app.add_typer(admin_app, name="admin")
custody_app = typer.Typer(help="Custody on real chains (docs/custody.md).", no_args_is_help=True)
app.add_typer(custody_app, name="custody")

DataDir = typer.Argument(
    None,
    show_default=False,
    help="The data directory `mercato serve` uses (default: the configured one, as for "
    "serve), or its engine/ directory, or the journal directory itself.",
)
ConfigFile = typer.Option(None, "--config", help="TOML configuration file (for the default DIR).")

BALANCE_COLUMNS = {
    "users_available": "users available",
    "users_locked": "users locked",
    "fees": "fees",
    "external_deposits": "external deposits",
    "external_withdrawals": "external withdrawals",
    "sum": "sum",
}


def _fail(console: Console, message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # one line
    return typer.Exit(code)


def _engine_dir(given: Path | None, config: Path | None) -> Path:
    """The sequencer directory (journal/ + snapshots/) of what the operator named: a data
    directory of `mercato serve` (``DIR/engine/journal``), a sequencer directory
    (``DIR/journal``) or a journal directory (``DIR`` itself). Without ``given``, the
    configured data directory. Raises JournalError if none of them holds a journal, so that
    an empty or mistyped directory never audits as an empty, healthy exchange."""
    if given is None:
        try:
            given = load_config(config).data_dir
        except ConfigError as error:
            raise JournalError(str(error)) from None
    if not given.is_dir():
        problem = "is not a directory" if given.exists() else "does not exist"
        raise JournalError(f"{given} {problem}")
    candidates = [given / ENGINE_SUBDIR, given]
    if given.resolve().name == journal_dir("").name:
        candidates.append(given.resolve().parent)
    for engine_dir in candidates:
        if list_segments(journal_dir(engine_dir)):
            return engine_dir
    raise JournalError(
        f"{given} holds no journal: give the data directory of `mercato serve` (it holds "
        f"{ENGINE_SUBDIR}/journal/*.seg), or set --config / MERCATO_DATA_DIR to find it"
    )


@app.command()
def replay(
    data_dir: Path | None = DataDir,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = ConfigFile,
) -> None:
    """Rebuild from the journal alone (no snapshot); print the last seq and state hash.

    Read-only: a torn journal tail is ignored, not truncated. A directory without a
    journal is refused (exit 2).
    """
    err = Console(stderr=True)
    try:
        engine, _, _ = recover_engine(_engine_dir(data_dir, config), use_snapshots=False)
    except JournalError as exc:
        raise _fail(err, str(exc)) from None
    state_hash = engine.state_hash()
    if as_json:
        typer.echo(json.dumps({"last_seq": engine.last_seq, "state_hash": state_hash}))
    else:
        typer.echo(f"last_seq   {engine.last_seq}")
        typer.echo(f"state_hash {state_hash}")


@app.command()
def audit(
    data_dir: Path | None = DataDir,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = ConfigFile,
) -> None:
    """Recover (snapshot + journal tail), check invariants, print per-asset totals.

    Exits 1 if an invariant fails or an asset's accounts do not sum to 0, 2 if the
    directory holds no journal.

    Read-only: a torn journal tail is ignored, not truncated.
    """
    console = Console(width=None if Console().is_terminal else 160)
    err = Console(stderr=True)
    try:
        engine_dir = _engine_dir(data_dir, config)
        engine, snapshot_seq, replayed = recover_engine(engine_dir, use_snapshots=True)
    except JournalError as exc:
        raise _fail(err, str(exc)) from None
    problems: list[str] = []
    try:
        engine.check_invariants()
    except AssertionError as exc:
        problems.append(f"invariant failed: {exc}")
    totals = engine.total_balances()
    for asset, row in totals.items():
        if row["sum"] != 0:
            problems.append(f"{asset}: accounts sum to {row['sum']}, not 0")
    if as_json:
        report = {
            "last_seq": engine.last_seq,
            "snapshot_seq": snapshot_seq,
            "replayed": replayed,
            "state_hash": engine.state_hash(),
            "balances": totals,
            "problems": problems,
            "ok": not problems,
        }
        typer.echo(json.dumps(report))
    else:
        console.print(
            f"recovered seq {engine.last_seq}: snapshot seq {snapshot_seq} + "
            f"{replayed} journal records"
        )
        console.print(f"state hash {engine.state_hash()}")
        table = Table(title="Total balances per asset (atoms)")
        table.add_column("asset")
        for title in BALANCE_COLUMNS.values():
            table.add_column(title, justify="right", overflow="fold")
        for asset, row in totals.items():
            cells = [f"{row[c]:,}" for c in BALANCE_COLUMNS]
            if row["sum"] != 0:
                cells[-1] = f"[bold red]{cells[-1]}[/]"
            table.add_row(asset, *cells)
        console.print(table)
        for problem in problems:
            console.print(f"[bold red]FAIL[/] {problem}")
        if not problems:
            console.print("[bold green]OK[/]: invariants hold, every asset sums to 0")
    if problems:
        raise typer.Exit(1)


def chain_adapters(settings: Config) -> dict[str, Any]:
    """The ChainAdapter of every configured custody chain, by name."""
    from mercato.custody.runtime import chain_adapters as build

    return dict(build(settings.custody))


@custody_app.command("reconcile")
def custody_reconcile(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory of `mercato serve`.")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = ConfigFile,
) -> None:
    """Chain holdings against what the ledger owes, per custody asset, to the atom.

    The ledger side is the engine recovered read-only from the journal (snapshot + tail);
    the rest comes from the custody tables and the chains' nodes (docs/custody.md,
    "Reconciliation"). Exits 1 when an asset is not balanced, 2 when it cannot run.
    Meaningful on production servers only: --dev faucet credits are owed to users
    without anything on chain.
    """
    err = Console(stderr=True)
    try:
        settings = load_config(config, data_dir=str(data_dir) if data_dir else None)
        engine, _, _ = recover_engine(_engine_dir(settings.data_dir, None), use_snapshots=True)
    except (ConfigError, JournalError) as exc:
        raise _fail(err, str(exc)) from None
    missing = [a.symbol for a in settings.custody.assets if a.symbol not in engine.assets]
    if missing:
        raise _fail(err, f"the engine has no asset {', '.join(missing)}: start the server once")
    decimals = {symbol: asset.decimals for symbol, asset in engine.assets.items()}
    ledger = engine_totals(engine.total_balances())

    async def run() -> list[AssetReconciliation]:

        db = create_engine(settings.database_url)
        try:
            adapters = chain_adapters(settings)
            return await reconcile(db, adapters, settings.custody, decimals, ledger)
        finally:
            await db.dispose()

    try:
        reports = asyncio.run(run())
    except (ChainUnavailable, ImportError, KeyError) as exc:
        raise _fail(err, f"cannot reconcile: {exc}") from None
    _print_reconciliation(reports, as_json, dev=settings.server.dev)
    if not all(report.balanced for report in reports):
        raise typer.Exit(1)


def _print_reconciliation(reports: list[AssetReconciliation], as_json: bool, dev: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"balanced": all(r.balanced for r in reports), "dev": dev,
                               "assets": [r.as_dict() for r in reports]}))  # fmt: skip
        return
    console = Console(width=None if Console().is_terminal else 160)
    if dev:
        console.print("[yellow]--dev server: faucet credits have nothing on chain[/]")
    for report in reports:
        table = Table(title=f"{report.asset} on {report.chain}")
        table.add_column("component")
        table.add_column(report.asset, justify="right")
        table.add_column(f"fine units (1e-{report.fine_decimals})", justify="right")
        for name, value in report.components.items():
            table.add_row(name.replace("_", " "), report.amount(value), str(value))
        for name in ("holdings", "expected", "surplus"):
            value = getattr(report, name)
            table.add_row(f"[bold]{name}[/]", report.amount(value), str(value))
        console.print(table)
        verdict = "[bold green]balanced[/]" if report.balanced else "[bold red]NOT balanced[/]"
        console.print(f"{report.asset}: {verdict}")


def main() -> None:
    app()


@custody_app.command("run")
def custody_run(
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ./mercato-data).")
    ] = None,
) -> None:
    """Run the custody workers (deposit watchers, sweepers, the sender) in this process,
    for a deployment where `mercato serve` runs with `[custody] run_in_serve = false`.
    They share serve's store and master key and submit funding commands to serve's
    internal port (`[custody] engine_url`). Safe to kill at any moment; stops on
    SIGTERM/SIGINT after the current pass (docs/custody.md, "Process model")."""
    import logging

    from mercato.config import load_secrets

    err = Console(stderr=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_config(config, data_dir=str(data_dir) if data_dir else None)
        secrets = load_secrets(settings)
    except ConfigError as error:
        raise _fail(err, str(error)) from None
    custody = settings.custody
    if not custody.chains:
        raise _fail(err, "no [[custody.chains]] configured: nothing to run")
    if custody.run_in_serve:
        raise _fail(err, "[custody] run_in_serve is true: the workers run inside serve; "
                         "set it to false for serve and this process")  # fmt: skip
    url = custody.engine_url or f"http://{settings.server.host}:{settings.server.port}"
    try:
        asyncio.run(_run_custody(settings, secrets.master_key, url))
    except _CustodyRunError as error:
        raise _fail(err, str(error)) from None


class _CustodyRunError(RuntimeError):
    pass


async def _run_custody(settings: Config, master_key: bytes, url: str) -> None:
    import logging
    import signal

    import httpx

    from mercato.custody.remote import StoreCatchUp
    from mercato.custody.runtime import CustodyError, CustodyRuntime
    from mercato.port.remote import RemoteEnginePort

    port = RemoteEnginePort(url, master_key)
    db = create_engine(settings.database_url)
    try:
        await _wait_for_engine(port, url, httpx.HTTPError)
        try:
            runtime = await CustodyRuntime.open(settings.custody, db, master_key)
        except CustodyError as error:
            raise _CustodyRunError(str(error)) from None
        if not runtime.available:
            raise _CustodyRunError("no custody seed in the store: run `mercato custody init`")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runtime.start_workers(port, StoreCatchUp(db, port))
        logging.getLogger("mercato.cli").info(
            "custody workers running against the engine at %s", url
        )
        await stop.wait()
        await runtime.stop()
    finally:
        await port.close()
        await db.dispose()


async def _wait_for_engine(port: Any, url: str, transient: type[Exception]) -> None:
    """The engine's first answer, waiting up to 30 s for serve to come up."""
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            await port.refresh()
            return
        except transient as error:
            if time.monotonic() > deadline:
                raise _CustodyRunError(f"the engine at {url} does not answer: {error}") from None
            await asyncio.sleep(0.5)


@custody_app.command("init")
def custody_init(
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ./mercato-data).")
    ] = None,
    show_mnemonic: Annotated[
        bool,
        typer.Option(help="Also print the 24 words, for an offline backup (on a terminal only)."),
    ] = False,
) -> None:
    """Create the custody seed (a 24-word BIP39 mnemonic), sealed with the master key in
    the store; prints its fingerprint (the EVM hot-wallet address). An existing seed is
    never replaced (exit 2)."""
    import asyncio
    import sys

    from mercato.config import load_secrets
    from mercato.core.errors import CodedError
    from mercato.custody.keys import generate_mnemonic, init_seed
    from mercato.service import BootError, verify_store
    from mercato.store import create_engine, identity, migrate

    err = Console(stderr=True)
    if show_mnemonic and not sys.stdout.isatty():
        raise _fail(err, "--show-mnemonic prints the words only to a terminal")
    try:
        settings = load_config(config, data_dir=str(data_dir) if data_dir else None)
    except ConfigError as error:
        raise _fail(err, str(error)) from None
    mnemonic = generate_mnemonic()

    async def create() -> str:
        await verify_store(settings)  # the data directory's own store, as for serve
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = load_secrets(settings)
        await migrate(settings.database_url)
        await identity.claim(settings.database_url, settings.data_dir)
        db = create_engine(settings.database_url)
        try:
            return await init_seed(db, secrets.master_key, mnemonic)
        finally:
            await db.dispose()

    try:
        fingerprint = asyncio.run(create())
    except CodedError as error:
        raise _fail(err, error.message) from None
    except BootError as error:
        raise _fail(err, str(error), 1) from None
    typer.echo(fingerprint)
    if show_mnemonic:
        typer.echo(mnemonic.words)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="All state lives here (default ./mercato-data).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Development mode: enables the test-funds faucet.")
    ] = False,
) -> None:
    """Run the whole exchange: engine, journal, SQL store and HTTP server in this process,
    the SQL projection in a child process it starts and stops.

    Before anything is written it checks the configuration (exit 2), the port, the data
    directory's lock and the store (exit 1: docs/operations.md).

    SIGTERM or SIGINT stops intake, commits and applies what is queued, writes a final
    snapshot and exits 0.
    """
    import asyncio
    import logging
    import signal

    import uvicorn

    from mercato.api.app import create_app
    from mercato.api.client_address import ClientAddress, TrustedProxies
    from mercato.api.server_protocol import WS_MAX_MESSAGE_BYTES, protocols_for
    from mercato.runtime import listen
    from mercato.service import BootError, ExchangeService

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    err = Console(stderr=True)
    try:
        settings = load_config(
            config,
            host=host,
            port=port,
            data_dir=str(data_dir) if data_dir else None,
            dev=True if dev else None,
        )
    except ConfigError as error:
        raise _fail(err, str(error)) from None
    service = ExchangeService(settings)
    address = f"{settings.server.host}:{settings.server.port}"
    try:
        listeners = listen(settings.server.host, settings.server.port, settings.http.backlog)
    except OSError as error:
        raise _fail(err, f"cannot listen on {address}: {error.strerror or error}", 1) from None
    try:
        asyncio.run(service.preflight())
    except BootError as error:
        raise _fail(err, f"cannot start: {error}", 1) from None
    logging.getLogger("mercato.cli").info("listening on http://%s", address)

    def stop_server() -> None:
        server.should_exit = True

    limits = settings.http
    http_protocol, ws_protocol = protocols_for(limits)
    server = uvicorn.Server(
        uvicorn.Config(
            # The client's address from trusted proxies: ours, not uvicorn's (proxy_headers
            # off), so a malformed X-Forwarded-For gets a 400 instead of a 500 later on.
            ClientAddress(
                create_app(service, on_boot_failure=stop_server),
                TrustedProxies(limits.trusted_proxies),
            ),
            host=settings.server.host,
            port=settings.server.port,
            http=http_protocol,
            ws=ws_protocol,
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            # Protocol pings every 20 s, closed without a pong within a minute (Binance's
            # streams; native clients answer them as well, their libraries do it for them).
            ws_ping_interval=20.0,
            ws_ping_timeout=60.0,
            proxy_headers=False,
            limit_concurrency=limits.max_connections,
            lifespan="on",
            access_log=False,
            log_config=None,
        )
    )
    # uvicorn restores the handlers it found and re-raises the stop signal after its
    # graceful shutdown; with these no-op handlers in place, a graceful stop exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run(sockets=listeners)  # bound above, before the checks that write
    if service.failure is not None:
        raise typer.Exit(1)


if __name__ == "__main__":
    main()
