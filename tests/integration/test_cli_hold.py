"""A certificateHold through the CLI (issue 13): revoke --reason certificateHold, list and
show tell the hold from a revocation, release lifts it; bulk revoke previews with
--dry-run; conflicting flags are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import issue_args, register_for_issue, run_cli, write_agent_csr

pytestmark = pytest.mark.integration

MODEL, PROMPT = "a1" * 32, "c3" * 32


def _ok(*args: str, data_dir: Path) -> str:
    r = run_cli(*args, data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_hold_is_shown_as_held_and_released(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _ok("init", data_dir=data_dir)
    register_for_issue(data_dir, "holder", MODEL, PROMPT)
    serials = []
    for i in range(2):
        csr = tmp_path / f"h{i}.csr"
        write_agent_csr(csr, "holder", MODEL, PROMPT)
        _ok(*issue_args(csr, "holder", MODEL, PROMPT), data_dir=data_dir)
        serials.append(
            json.loads(_ok("list", "--json", "--limit", "1", data_dir=data_dir))["serial"]
        )
    held, other = serials
    out = _ok("revoke", held, "--reason", "certificateHold", "--json", data_dir=data_dir)
    assert json.loads(out)["state"] == "held"
    table = _ok("list", data_dir=data_dir).splitlines()
    assert table[0].split()[:3] == ["SERIAL", "STATE", "AGENT"]
    states = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert states == {held: "held", other: "good"}
    only_held = [
        json.loads(x)
        for x in _ok("list", "--status", "held", "--json", data_dir=data_dir).splitlines()
    ]
    assert [r["serial"] for r in only_held] == [held]
    shown = json.loads(_ok("show", held, "--json", data_dir=data_dir))
    assert shown["state"] == "held" and shown["revocation_reason"] == "certificateHold"
    assert f"agentca release {held}" in _ok("show", held, data_dir=data_dir)
    both = run_cli("show", held, "--pem", "--json", data_dir=data_dir)
    assert both.returncode == 2 and "contradict" in both.stderr
    released = json.loads(_ok("release", held, "--json", data_dir=data_dir))
    assert released["state"] == "good" and released["revoked_at"] is None
    assert released["changed"] is True
    # releasing a good certificate reaches the same end state: success, with a note
    again = run_cli("release", held, data_dir=data_dir)
    assert again.returncode == 0 and "not on hold" in again.stderr and again.stdout == ""
    assert len(again.stderr.strip().splitlines()) == 1
    # a bulk preview changes nothing; without a terminal, --yes is not needed
    preview = run_cli("revoke", "--agent", "holder", "--dry-run", "--json", data_dir=data_dir)
    assert preview.returncode == 0, preview.stderr
    assert {json.loads(x)["serial"] for x in preview.stdout.splitlines()} == {held, other}
    assert "would revoke 2 certificate(s)" in preview.stderr
    after = [json.loads(x) for x in _ok("list", "--json", data_dir=data_dir).splitlines()]
    assert {r["state"] for r in after} == {"good"}
    done = run_cli("revoke", "--agent", "holder", "--reason", "superseded", data_dir=data_dir)
    assert done.returncode == 0 and "revoked 2 certificate(s)" in done.stderr
    dry_serial = run_cli("revoke", held, "--dry-run", data_dir=data_dir)
    assert dry_serial.returncode == 2
