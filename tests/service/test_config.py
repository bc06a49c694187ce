"""Configuration precedence, validation and secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mercato.config import ConfigError, load_config, load_secrets, market_spec
from mercato.core.model import MarketSpec


def test_defaults_ship_the_five_assets_and_four_markets(tmp_path: Path) -> None:
    config = load_config(env={})
    assert [a.symbol for a in config.assets] == ["BTC", "ETH", "SOL", "USDT", "USDC"]
    assert [m.symbol for m in config.markets] == ["BTC-USDT", "ETH-USDT", "SOL-USDT", "ETH-BTC"]
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8000)
    assert config.database_url.startswith("sqlite+aiosqlite:///")
    assert config.database_url.endswith("/mercato-data/mercato.db")


def test_file_sections_replace_defaults_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "mercato.toml"
    path.write_text(
        '[server]\nport = 9100\ndata_dir = "/srv/x"\n[[assets]]\nsymbol = "BTC"\ndecimals = 8\n'
    )
    env = {"MERCATO_PORT": "9200", "DATABASE_URL": "postgresql+asyncpg://db/m", "SMTP_PORT": "25"}
    config = load_config(path, env=env, port=9300, host=None)
    assert config.server.port == 9300  # flag beats environment beats file
    assert config.server.host == "127.0.0.1"  # the file's [server] has no host: field default
    assert config.server.data_dir == "/srv/x"
    assert [a.symbol for a in config.assets] == ["BTC"]  # the file's list replaces the default
    assert len(config.markets) == 4  # no [[markets]] in the file: the default list is kept
    assert config.database_url == "postgresql+asyncpg://db/m"
    assert config.smtp.port == 25


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nprot = 1\n", "prot"),
        ("[server]\nport = 'x'\n", "port"),
        ("[server]\nport = 70000\n", "1..65535"),
        ("[server\n", "not valid TOML"),
        ("[http]\ntrusted_proxies = ['proxy.local']\n", "'proxy.local' is not an address"),
        ("[http]\nmax_head_bytes = 100\n", "max_head_bytes must be at least 1024"),
        ("[http]\nhead_timeout = 0\n", "head_timeout and body_timeout"),
        ("[http]\nmax_connections_per_ip = 0\n", "max_connections_per_ip"),
    ],
)
def test_bad_files_name_what_to_fix(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, env={})


MARKET_TABLE = """[[markets]]
symbol = "A-B"
base = "A"
quote = "B"
tick_size = "0.01"
step_size = "1"
min_qty = "1"
max_qty = "2"
min_notional = "1"
"""


def test_a_markets_table_becomes_the_engines_market_spec(tmp_path: Path) -> None:
    path = tmp_path / "mercato.toml"
    chosen = 'maker_fee = "0.002"\nprotection_bps = 10\ndefault_stp = "NONE"\n'
    path.write_text(MARKET_TABLE + chosen)
    [spec] = map(market_spec, load_config(path, env={}).markets)
    assert spec == MarketSpec(
        "A-B", "A", "B", "0.01", "1", "1", "2", "1", maker_fee="0.002", protection_bps=10,
        default_stp="NONE",
    )  # fmt: skip
    assert (spec.taker_fee, spec.status) == ("0.001", "TRADING")  # MarketSpec's defaults


@pytest.mark.parametrize("line", ['status = "HALTED"', 'allowed_stp = ["NONE"]', "typo = 1"])
def test_engine_owned_market_fields_are_unknown_in_the_file(tmp_path: Path, line: str) -> None:
    path = tmp_path / "mercato.toml"
    path.write_text(MARKET_TABLE + line + "\n")
    name = line.split(" ")[0]
    with pytest.raises(ConfigError, match=f"unknown field `{name}` - at `\\$.markets\\[0\\]`"):
        load_config(path, env={})


def test_trusted_proxies_from_the_environment_as_uvicorn_names_it() -> None:
    env = {"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.1"}
    assert load_config(env=env).http.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
    assert load_config(env={"FORWARDED_ALLOW_IPS": ""}).http.trusted_proxies == []
    with pytest.raises(ConfigError, match="'bogus' is not an address or network"):
        load_config(env={"FORWARDED_ALLOW_IPS": "127.0.0.1,bogus"})


def test_bad_environment_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="MERCATO_PORT must be a whole number"):
        load_config(env={"MERCATO_PORT": "eighty"})
    with pytest.raises(ConfigError, match="SMTP_STARTTLS must be true or false"):
        load_config(env={"SMTP_STARTTLS": "maybe"})


def test_secrets_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path))
    first = load_secrets(config, env={})
    assert len(first.jwt_key) == 32 and len(first.master_key) == 32
    assert first.jwt_key != first.master_key
    for name in ("jwt_key.hex", "master_key.hex"):
        mode = stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode)
        assert mode == 0o600
    assert load_secrets(config, env={}) == first  # read back, never regenerated
    assert "redacted" in repr(first) and first.jwt_key.hex() not in repr(first)


def test_secrets_from_the_environment_and_their_validation(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path))
    env = {"MERCATO_JWT_SECRET": "ab" * 32, "MERCATO_MASTER_KEY": "cd" * 32}
    secrets = load_secrets(config, env=env)
    assert secrets.jwt_key == bytes.fromhex("ab" * 32)
    assert not (tmp_path / "secrets").exists()
    with pytest.raises(ConfigError, match="MERCATO_MASTER_KEY must be 32 bytes"):
        load_secrets(config, env={"MERCATO_JWT_SECRET": "ab" * 32, "MERCATO_MASTER_KEY": "cd"})


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path))
    load_secrets(config, env={})
    (tmp_path / "secrets" / "jwt_key.hex").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secrets(config, env={})


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgresql://u:pw@db:5433/m?ssl=require",
            "postgresql+asyncpg://u:pw@db:5433/m?ssl=require",
        ),
        ("postgres://u@db/m", "postgresql+asyncpg://u@db/m"),
        ("postgresql+asyncpg://u@db/m", "postgresql+asyncpg://u@db/m"),
        ("sqlite:////srv/m.db", "sqlite+aiosqlite:////srv/m.db"),
    ],
)
def test_a_plain_database_url_gets_the_async_driver(given: str, used: str) -> None:
    assert load_config(env={"DATABASE_URL": given}).database_url == used


@pytest.mark.parametrize(
    "given", ["mysql://u:secret@db/m", "postgresql+psycopg2://u:secret@db/m", "not a secret url"]
)
def test_a_database_url_for_another_driver_is_a_configuration_error(given: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as error:
        load_config(env={"DATABASE_URL": given})
    assert "secret" not in str(error.value)
