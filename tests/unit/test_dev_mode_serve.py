"""Dev mode at the CLI: ``agentca serve`` runs one worker (software keys made later in a
worker, such as the ledger's audit key, would exist in that worker only), and ``agentca init``
is refused (the keys it made would vanish with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli.serve
from ca.config import Settings
from cli.main import cli as agentca


def _serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[Any, list[Settings], list[dict[str, Any]]]:
    seen: list[Settings] = []
    options: list[dict[str, Any]] = []

    def initialised(settings: Settings) -> bool:
        seen.append(settings)
        return False

    monkeypatch.setattr(cli.serve, "ensure_initialised", initialised)
    monkeypatch.setattr(cli.serve, "create_app", lambda settings: object())
    monkeypatch.setattr(
        cli.serve, "serve_with_gunicorn", lambda app, opts, **_: options.append(opts)
    )
    for name in ("AGENTCA_CONFIG", "AGENTCA_WORKERS", "AGENTCA_KEY_STORE", "AGENTCA_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    env = {"AGENTCA_DATA_DIR": str(tmp_path), **env}
    result = CliRunner().invoke(agentca, ["serve", *args], env=env)
    return result, seen, options


@pytest.mark.parametrize("args", [(), ("--workers", "4")])
def test_dev_mode_serves_one_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...]
) -> None:
    env = {"AGENTCA_KEY_STORE": "software", "AGENTCA_DEV_MODE": "1"}
    result, seen, options = _serve(monkeypatch, tmp_path, env, *args)
    assert result.exit_code == 0, result.output
    assert options and options[0]["workers"] == 1
    assert seen[0].workers == 1
    assert "1 worker" in result.output


def test_token_mode_keeps_its_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, _, options = _serve(monkeypatch, tmp_path, {}, "--workers", "3")
    assert result.exit_code == 0, result.output
    assert options[0]["workers"] == 3


def test_init_is_refused_in_dev_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``agentca init`` in dev mode exited 0 and left a database whose CA keys had vanished
    with the process: every later command then refused it (hsm-key-missing)."""
    for name in ("AGENTCA_CONFIG", "AGENTCA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    env = {"AGENTCA_DATA_DIR": str(tmp_path), "AGENTCA_KEY_STORE": "software"}
    env["AGENTCA_DEV_MODE"] = "1"
    result = CliRunner().invoke(agentca, ["init"], env=env)
    assert result.exit_code == 10, result.output
    assert "[configuration]" in result.output and "agentca serve" in result.output
    assert not (tmp_path / "agentca.sqlite3").exists()
