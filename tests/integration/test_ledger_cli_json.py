"""Every ledger and audit leaf speaks JSON (one object on one line of stdout), and the ledger
commands' conflicting or destructive flag combinations are refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from tests.integration.conftest import run_cli


def ok(*args: str, data_dir: Path) -> str:
    r = run_cli(*args, data_dir=data_dir)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def one_object(text: str) -> dict[str, object]:
    lines = text.splitlines()
    assert len(lines) == 1, text
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ledger-json")
    data = base / "data"
    ok("init", data_dir=data)
    return data


def test_every_ledger_and_audit_leaf_has_json() -> None:
    from cli.audit_commands import audit
    from cli.ledger_commands import ledger

    for group in (ledger, audit):
        assert isinstance(group, click.Group)
        for name, command in group.commands.items():
            flags = {o for p in command.params for o in getattr(p, "opts", [])}
            assert "--json" in flags, f"{group.name} {name}"


def test_checkpoint_export_verify_consistency_json(ca: Path, tmp_path: Path) -> None:
    first = one_object(ok("ledger", "checkpoint", "--json", data_dir=ca))
    assert first["changed"] is True and first["out"] is None
    assert isinstance(first["tree_size"], int) and first["tree_size"] > 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps(first))
    ok("scope", "add", "read_book", data_dir=ca)
    new = tmp_path / "new.json"
    second = one_object(
        ok(
            "ledger",
            "checkpoint",
            "--consistency-from",
            str(first["tree_size"]),
            "--out",
            str(new),
            "--json",
            data_dir=ca,
        )
    )
    assert second["out"] == str(new) and json.loads(new.read_text())["consistency"]
    export = tmp_path / "full.jsonl"
    summary = one_object(ok("ledger", "export", "--out", str(export), "--json", data_dir=ca))
    assert summary == {
        "changed": False,
        "checkpoint_signed": False,
        "entries": second["tree_size"],
        "filter": None,
        "format": "jsonl",
        "out": str(export),
        "tree_size": second["tree_size"],
    }
    root = tmp_path / "root.pem"
    ok("chain", "--root-only", "--out", str(root), data_dir=ca)
    verdict = one_object(
        ok("ledger", "verify", str(export), "--trust", str(root), "--json", data_dir=ca)
    )
    assert verdict["ok"] is True and verdict["entries"] == second["tree_size"]
    consistent = one_object(
        ok("ledger", "consistency", str(old), str(new), "--trust", str(root), "--json", data_dir=ca)
    )
    assert consistent["ok"] is True and consistent["checkpoints"] == 2
    assert consistent["errors"] == []


def test_refused_flag_combinations(ca: Path, tmp_path: Path) -> None:
    r = run_cli("ledger", "export", "--json", data_dir=ca)
    assert r.returncode == 2 and "--json needs --out" in r.stderr
    existing = tmp_path / "x.jsonl"
    existing.write_text("keep")
    r = run_cli("ledger", "export", "--out", str(existing), data_dir=ca)
    assert r.returncode == 7 and "not overwriting" in r.stderr
    assert existing.read_text() == "keep"
    r = run_cli("ledger", "checkpoint", "--out", str(existing), data_dir=ca)
    assert r.returncode == 7 and existing.read_text() == "keep"
    r = run_cli("ledger", "checkpoint", "--every", "5", "--out", str(existing), data_dir=ca)
    assert r.returncode == 2 and "--every runs the scheduler" in r.stderr
    r = run_cli("audit", "certificate", "--force", data_dir=ca)
    assert r.returncode == 2 and "--force only applies with --out" in r.stderr
    for args in (("ledger", "verify"), ("audit", "certificate")):
        assert "Traceback" not in run_cli(*args, "--json", data_dir=ca).stderr
