"""Configuration: the default TOML, an operator's TOML, environment variables, CLI flags.

Precedence, lowest first: the packaged `default_config.toml`, the file given with
`--config` (each top-level section it has replaces the default section), environment
variables, command-line flags. Unknown keys are errors, so a typo never passes
silently. Secrets (JWT signing key, master encryption key) come from the environment or
are generated once into the data directory with mode 0600; they never appear in a
repr or a log line. See docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mercato.core.model import MarketSpec
from mercato.store import normalise_url, sqlite_url

SECRET_BYTES = 32
#: Where the sequencer (journal/, snapshots/, LOCK) lives inside the data directory.
ENGINE_SUBDIR = "engine"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and what to fix."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./mercato-data"
    dev: bool = False  # development mode: the test-funds faucet exists


class HttpConfig(_Section):
    """How the embedded HTTP server protects itself (docs/configuration.md, "HTTP limits")
    and whose X-Forwarded-For it believes."""

    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    max_head_bytes: int = 16 * 1024  # request line + header lines; more answers 431
    head_timeout: float = 10.0  # seconds from a request's first byte to its blank line
    body_timeout: float = 30.0  # seconds from the end of the head to the end of the body
    max_connections_per_ip: int = 100  # open connections from one (untrusted) peer address
    max_connections: int = 4096  # all connections; requests past it answer 503
    backlog: int = 2048  # the listen queue

    def __post_init__(self) -> None:
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                problem = f"trusted_proxies: {entry!r} is not an address or network"
                raise ValueError(problem) from None
        if self.max_head_bytes < 1024:
            raise ValueError("max_head_bytes must be at least 1024")
        if not (0 < self.head_timeout <= 3600 and 0 < self.body_timeout <= 3600):
            raise ValueError("head_timeout and body_timeout must be within 0..3600 seconds")
        if min(self.max_connections_per_ip, self.max_connections, self.backlog) < 1:
            raise ValueError("max_connections_per_ip, max_connections and backlog must be >= 1")


class DatabaseConfig(_Section):
    url: str = ""  # empty: SQLite in the data directory; postgresql:// gets the asyncpg driver


class RedisConfig(_Section):
    url: str = ""  # empty: rate limits in-process
    key_prefix: str = "mercato:"  # lets several exchanges share one Redis


class RateBudget(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)) or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")

    def describe(self) -> str:
        return f"{self.per_second:g}/s, burst {self.burst}"


class RateLimitsConfig(_Section):
    """Budgets per client IP, per IP on the credential endpoints, per account, and per
    account for order entry. See docs/configuration.md for the reasoning."""

    enabled: bool = True
    ip: RateBudget = RateBudget(per_second=50, burst=100)
    auth: RateBudget = RateBudget(per_second=0.5, burst=20)
    account: RateBudget = RateBudget(per_second=20, burst=60)
    orders: RateBudget = RateBudget(per_second=10, burst=50)

    def budgets(self) -> dict[str, RateBudget]:
        if not self.enabled:
            return {}
        return {"ip": self.ip, "auth": self.auth, "account": self.account, "orders": self.orders}


class SmtpConfig(_Section):
    host: str = ""  # empty: mails go to the log and the outbox table only
    port: int = 587
    username: str = ""
    password: str = ""
    sender: str = "Mercato <no-reply@localhost>"
    starttls: bool = True


class EngineConfig(_Section):
    max_batch: int = 1024
    snapshot_every: int = 100_000


class CustodyChainConfig(_Section):
    """One chain custody watches and sends on (docs/custody.md, "Configuration")."""

    name: str  # first part of deposit ids: "ethereum:<txid>:<index>"
    kind: str  # "evm" or "solana"
    rpc_url: str
    confirmations: int = 12  # blocks deep before a deposit is credited
    use_finalized: bool = False  # credit at the node's finalized tag instead of N blocks
    cold_address: str = ""  # where hot-wallet excess goes; no key for it on the server
    start_height: int = -1  # first block the watcher scans; -1: the head at first start
    scan_batch: int = 100  # most blocks per scan call
    poll_seconds: float = 2.0
    stuck_seconds: float = 120.0  # a sent transaction unmined this long is fee-bumped

    def __post_init__(self) -> None:
        if self.kind not in ("evm", "solana"):
            raise ValueError(f"custody chain {self.name!r}: kind must be evm or solana")
        if self.confirmations < 1 or self.scan_batch < 1 or self.poll_seconds <= 0:
            raise ValueError(
                f"custody chain {self.name!r}: confirmations, scan_batch >= 1, poll_seconds > 0"
            )


class CustodyAssetConfig(_Section):
    """How one ledger asset lives on its chain. Amounts are decimal strings in the asset's
    units; empty ``daily_limit`` or ``approval_threshold`` means none."""

    symbol: str
    chain: str
    chain_decimals: int
    contract: str = ""  # ERC-20 contract or SPL mint; empty: the chain's native coin
    min_deposit: str = "0"
    withdrawal_fee: str = "0"
    min_withdrawal: str = "0"
    daily_limit: str = ""  # per user, over the last 24 h
    approval_threshold: str = ""  # withdrawals above it wait for admin approvals
    approvals_required: int = 2  # distinct admins, never the requester
    sweep_threshold: str = "0"  # deposit-address balances above it are swept to hot
    hot_floor: str = "0"  # below it an alert is raised
    hot_ceiling: str = ""  # above it the excess goes to the cold address

    def __post_init__(self) -> None:
        if not 0 <= self.chain_decimals <= 36 or self.approvals_required < 1:
            raise ValueError(
                f"custody asset {self.symbol}: chain_decimals 0..36, approvals_required >= 1"
            )


class CustodyConfig(_Section):
    """Custody on real chains; with no chains configured the workers have nothing to do
    and deposit/withdrawal endpoints answer CUSTODY_UNAVAILABLE."""

    run_in_serve: bool = True  # the workers run inside `mercato serve`
    # Where `mercato custody run` submits (serve's internal port); empty: server.host/port.
    engine_url: str = ""
    address_cooloff_seconds: int = 86_400  # a new withdrawal address waits this long
    approval_ttl_seconds: int = 86_400  # an admin approval counts this long
    chains: list[CustodyChainConfig] = msgspec.field(default_factory=list)
    assets: list[CustodyAssetConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        names = [chain.name for chain in self.chains]
        if len(set(names)) != len(names):
            raise ValueError("custody chain names must be unique")
        for asset in self.assets:
            if asset.chain not in names:
                raise ValueError(f"custody asset {asset.symbol}: no chain {asset.chain!r}")
        symbols = [asset.symbol for asset in self.assets]
        if len(set(symbols)) != len(symbols):
            raise ValueError("a ledger asset lives on one chain: custody asset symbols unique")

    def chain(self, name: str) -> CustodyChainConfig:
        return next(chain for chain in self.chains if chain.name == name)

    def asset(self, symbol: str) -> CustodyAssetConfig | None:
        return next((asset for asset in self.assets if asset.symbol == symbol), None)


class AssetConfig(_Section):
    symbol: str
    decimals: int


# The [[markets]] tables cannot be decoded into core's MarketSpec itself: MarketSpec is
# array_like (a positional msgpack array in journal records and snapshots, which the
# state hash covers), and msgspec converts an array_like struct only from an array, never
# from a TOML table; and its `status` and `allowed_stp` are engine state that admin
# commands change, not operator configuration (a table naming them is refused as an
# unknown field, as any typo is). So the table type is derived from MarketSpec's fields
# (same names, types, defaults and order) minus those two: the two cannot drift apart.
ENGINE_OWNED_MARKET_FIELDS = frozenset({"status", "allowed_stp"})


def _market_table_type() -> type[msgspec.Struct]:
    fields = [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(MarketSpec)
        if f.name not in ENGINE_OWNED_MARKET_FIELDS
    ]
    return msgspec.defstruct("MarketTable", fields, bases=(_Section,), module=__name__)


if TYPE_CHECKING:  # mypy cannot follow defstruct
    MarketTable = _Section
else:
    MarketTable = _market_table_type()


def market_spec(table: MarketTable) -> MarketSpec:
    """The engine's MarketSpec for one [[markets]] table; a new market starts TRADING."""
    return MarketSpec(**msgspec.structs.asdict(table))


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    custody: CustodyConfig = msgspec.field(default_factory=CustodyConfig)
    assets: list[AssetConfig] = msgspec.field(default_factory=list)
    markets: list[MarketTable] = msgspec.field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def engine_dir(self) -> Path:
        """Journal and snapshots of the sequencer."""
        return self.data_dir / ENGINE_SUBDIR

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return sqlite_url(self.data_dir / "mercato.db")


# Environment variable -> (section, key, type).
ENVIRONMENT: dict[str, tuple[str, str, type]] = {
    "MERCATO_HOST": ("server", "host", str),
    "MERCATO_PORT": ("server", "port", int),
    "MERCATO_DATA_DIR": ("server", "data_dir", str),
    "MERCATO_DEV": ("server", "dev", bool),
    "FORWARDED_ALLOW_IPS": ("http", "trusted_proxies", list),  # uvicorn's name, kept
    "DATABASE_URL": ("database", "url", str),
    "REDIS_URL": ("redis", "url", str),
    "SMTP_HOST": ("smtp", "host", str),
    "SMTP_PORT": ("smtp", "port", int),
    "SMTP_USERNAME": ("smtp", "username", str),
    "SMTP_PASSWORD": ("smtp", "password", str),
    "SMTP_SENDER": ("smtp", "sender", str),
    "SMTP_STARTTLS": ("smtp", "starttls", bool),
}


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from error


def _from_env(name: str, value: str, kind: type) -> object:
    if kind is bool:
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    if kind is list:  # comma-separated
        return [item.strip() for item in value.split(",") if item.strip()]
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    return value


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: object,
) -> Config:
    """The effective configuration. ``overrides`` are ``server`` keys from the command
    line (``host``, ``port``, ``data_dir``, ``dev``); ``None`` values are ignored."""
    env = os.environ if env is None else env
    default_text = resources.files("mercato").joinpath("default_config.toml").read_text()
    raw = _read_toml(default_text, "default_config.toml")
    origin = "default configuration"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        raw.update(_read_toml(text, origin))  # a section given replaces the default one
    for name, (section, key, kind) in ENVIRONMENT.items():
        if name in env:
            raw.setdefault(section, {})[key] = _from_env(name, env[name], kind)
    for key, value in overrides.items():
        if value is not None:
            raw.setdefault("server", {})[key] = value
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{origin}: {error}") from error
    if not 0 < config.server.port < 65536:
        raise ConfigError(f"{origin}: server.port must be 1..65535")
    if config.database.url:
        try:
            config.database.url = normalise_url(config.database.url)
        except ValueError as error:
            raise ConfigError(f"database URL (DATABASE_URL or [database] url): {error}") from None
    return config


@dataclass(frozen=True)
class Secrets:
    """Process secrets. The repr never shows them."""

    jwt_key: bytes = field(repr=False)
    master_key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "Secrets(<redacted>)"


SECRET_SOURCES = (("jwt_key", "MERCATO_JWT_SECRET"), ("master_key", "MERCATO_MASTER_KEY"))


def _secret_from_env(name: str, value: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{name} must be {SECRET_BYTES} bytes as hex") from None
    if len(key) != SECRET_BYTES:
        raise ConfigError(f"{name} must be {SECRET_BYTES} bytes as hex ({SECRET_BYTES * 2} digits)")
    return key


def _secret_file(path: Path) -> bytes:
    """Read the secret at ``path``, creating it (mode 0600, never overwritten) if absent."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others: chmod 600 it") from None
        return _secret_from_env(str(path), path.read_text().strip())
    key = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key


def load_secrets(config: Config, env: Mapping[str, str] | None = None) -> Secrets:
    """Secrets from the environment, else from ``DATA_DIR/secrets/`` (generated once)."""
    env = os.environ if env is None else env
    values: dict[str, bytes] = {}
    for name, variable in SECRET_SOURCES:
        if variable in env:
            values[name] = _secret_from_env(variable, env[variable])
        else:
            values[name] = _secret_file(config.data_dir / "secrets" / f"{name}.hex")
    return Secrets(**values)
