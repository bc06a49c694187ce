"""`mercato admin ...`: operator commands that work on the SQL store directly."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from mercato.auth.passwords import PasswordPolicyError
from mercato.auth.standing import delete_user, freeze, set_role, unfreeze
from mercato.auth.users import ROLES, UserError, create_user, list_users, lookup_address
from mercato.config import ConfigError, load_config
from mercato.service import BootError, verify_store
from mercato.store import create_engine, identity, migrate

admin_app = typer.Typer(
    help="Operator commands on the store (users, roles, standing).", no_args_is_help=True
)
T = TypeVar("T")

ConfigOption = Annotated[Path | None, typer.Option(help="TOML configuration file.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Data directory (default ./mercato-data).")
]


def _run(
    config: Path | None, data_dir: Path | None, work: Callable[[AsyncEngine], Awaitable[T]]
) -> T:
    """Run ``work`` against the configured store (checked to be the data directory's own,
    then migrated); errors exit 1."""
    err = Console(stderr=True)
    try:
        settings = load_config(config, data_dir=str(data_dir) if data_dir else None)
    except ConfigError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)  # one line
        raise typer.Exit(2) from None

    async def session() -> T:
        # The same pairing of data directory and store as `serve`, checked before anything
        # is created: a forgotten DATABASE_URL must not put users into a new SQLite store.
        await verify_store(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await migrate(settings.database_url)
        await identity.claim(settings.database_url, settings.data_dir)
        db = create_engine(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(session())
    except (UserError, PasswordPolicyError, BootError) as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)  # one line
        raise typer.Exit(1) from None


@admin_app.command("create-user")
def create_user_command(
    email: str,
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")] = "user",
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (for scripts).")
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a user whose email counts as verified (the operator vouches for it)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _run(
        config, data_dir, lambda db: create_user(db, email, password, role=role, verified=True)
    )
    Console().print(f"created user {user.id} {user.email} with role {user.role}")


@admin_app.command("list-users")
def list_users_command(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """List users with their roles and status."""
    table = Table("id", "email", "role", "status", "verified")
    for user in _run(config, data_dir, list_users):
        table.add_row(
            str(user.id), user.email, user.role, user.status, "yes" if user.verified else "no"
        )
    Console().print(table)


@admin_app.command("set-role")
def set_role_command(
    email: str,
    role: str,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Give a user another role (running servers apply it within 2 s)."""
    _run(config, data_dir, lambda db: set_role(db, email, role))
    Console().print(f"{lookup_address(email)} is now {role}")


@admin_app.command("freeze")
def freeze_command(email: str, config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Refuse the user's logins, sessions and API keys until unfrozen (within 2 s on
    running servers). Resting orders stay in the book."""
    _run(config, data_dir, lambda db: freeze(db, email))
    Console().print(f"{lookup_address(email)} is frozen")


@admin_app.command("unfreeze")
def unfreeze_command(
    email: str, config: ConfigOption = None, data_dir: DataDirOption = None
) -> None:
    """Let a frozen user log in and use their sessions and keys again."""
    _run(config, data_dir, lambda db: unfreeze(db, email))
    Console().print(f"{lookup_address(email)} is active")


@admin_app.command("delete-user")
def delete_user_command(
    email: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Disable an account for good: sessions revoked, API keys deleted, no more logins.
    Its balances stay in the engine and its address stays taken (docs/accounts.md)."""
    if not yes:
        typer.confirm(f"Delete {email}? This cannot be undone", abort=True)
    _run(config, data_dir, lambda db: delete_user(db, email))
    Console().print(f"{lookup_address(email)} is deleted")
