"""`mercato custody init`: prints the fingerprint only, refuses a second seed (exit 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mercato.cli import app
from mercato.config import load_config, load_secrets
from mercato.custody.keys import load_mnemonic, seed_fingerprint
from mercato.store import create_engine


def test_init_prints_the_fingerprint_once_and_refuses_a_second_seed(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    data_dir = tmp_path / "data"
    runner = CliRunner()
    first = runner.invoke(app, ["custody", "init", "--data-dir", str(data_dir)])
    assert first.exit_code == 0, first.output
    (fingerprint,) = first.stdout.splitlines()
    assert fingerprint.startswith("0x") and len(fingerprint) == 42

    async def stored() -> tuple[str | None, str]:
        config = load_config(data_dir=str(data_dir))
        db = create_engine(config.database_url)
        try:
            mnemonic = await load_mnemonic(db, load_secrets(config).master_key)
            assert mnemonic is not None
            return await seed_fingerprint(db), mnemonic.words
        finally:
            await db.dispose()

    recorded, words = asyncio.run(stored())
    assert recorded == fingerprint
    assert not any(word in first.output.split() for word in words.split())

    second = runner.invoke(app, ["custody", "init", "--data-dir", str(data_dir)])
    assert second.exit_code == 2
    assert len(second.output.strip().splitlines()) == 1
    assert "exists" in second.output and fingerprint in second.output
    assert asyncio.run(stored()) == (fingerprint, words)  # the first seed stands


def test_show_mnemonic_is_refused_off_a_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["custody", "init", "--show-mnemonic", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 2 and "terminal" in result.output
    assert not (tmp_path / "data").exists()  # nothing created
