"""The CLI's output contract (docs/cli.md, "Output contract") against real ``agentca``
processes on a throwaway CA: every leaf of the click tree takes --json and prints JSON on
stdout (human text on stderr); serials are openssl's; repeats and conflicting flags follow
one rule."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from tests.integration.conftest import issue_args, register_for_issue, run_cli, write_agent_csr

pytestmark = pytest.mark.integration

MODEL, PROMPT, MODEL2 = "a1" * 32, "c3" * 32, "b2" * 32
AGENT = "json-agent"

#: Long-running servers: checked for the flag, not run (their --json prints one object
#: describing what they serve, then they serve until stopped).
SERVERS = {"serve", "run", "ocsp serve"}
#: ledger/audit JSON is tested in tests/integration/test_ledger_cli_json.py
LEDGER_GROUPS = ("ledger", "audit")
#: PostgreSQL only: their JSON is tested in tests/integration/test_db_roles.py
POSTGRES_ONLY = {"db roles", "db heartbeat"}
#: Need a second, empty target: their JSON is tested in tests/integration/test_backup_restore.py
#: and tests/integration/test_db_migrate_to.py
OWN_TARGET = {"backup create", "backup verify", "backup restore", "db migrate-to"}


def _leaves() -> dict[str, click.Command]:
    """Every leaf command of ``agentca``, resolved through the lazy command table."""
    from cli.main import cli

    leaves: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, [*path, name])
        else:
            leaves[" ".join(path)] = cmd

    walk(cli, [])
    return leaves


def _takes_json(cmd: click.Command) -> bool:
    return any("--json" in p.opts and getattr(p, "is_flag", False) for p in cmd.params)


def _json_lines(out: str) -> list[dict[str, object]]:
    lines = out.splitlines()
    assert lines, "no JSON on stdout"
    docs = [json.loads(line) for line in lines]
    assert all(isinstance(d, dict) for d in docs), out
    return docs


def test_every_leaf_takes_json_and_prints_only_json_on_stdout(tmp_path: Path) -> None:
    leaves = _leaves()
    ledger = {p for p in leaves if p.split()[0] in LEDGER_GROUPS}
    missing = sorted(p for p in leaves if not _takes_json(leaves[p]))
    assert missing == [], f"leaves without --json: {missing}"
    assert set(leaves) >= SERVERS

    data_dir = tmp_path / "data"
    work = tmp_path / "work"
    work.mkdir()
    seen: dict[str, list[dict[str, object]]] = {}

    def run(path: str, *args: str | Callable[[], str]) -> list[dict[str, object]]:
        argv = [a() if callable(a) else a for a in args]
        result = run_cli(*path.split(), *argv, "--json", data_dir=data_dir)
        assert result.returncode == 0, f"{path}: {result.stderr}"
        docs = _json_lines(result.stdout)
        seen[path] = docs
        return docs

    def serial(n: int) -> Callable[[], str]:
        return lambda: str(seen["list"][n]["serial"])

    (work / "prompt.txt").write_text("You are a careful agent.\n")
    (work / "config.json").write_text('{"temperature": 0}')
    (work / "weights").mkdir()
    (work / "weights" / "w.bin").write_bytes(b"\0" * 64)
    for n in range(3):
        write_agent_csr(work / f"{n}.csr", AGENT, MODEL, PROMPT)

    (init,) = run("init")
    assert {i["role"] for i in init["issuers"]} == {"root", "issuing"}  # type: ignore[union-attr]
    run("config show")
    run("config digest", str(work / "config.json"))
    run("model digest", str(work / "weights"), "--manifest")
    run("prompt digest", str(work / "prompt.txt"))
    run("db current")
    run("db upgrade")
    run("oid-arc show")
    run("oid-arc set", "1.3.6.1.4.1.32473.2027")
    run("scope add", "read_book", "--description", "read the book")
    run("scope list")
    run("model add", MODEL, "--model-type", "m", "--environment", "prod")
    run("model add", MODEL2, "--model-type", "m", "--environment", "prod")
    run("model list")
    reg = ["--officer", "o@example.com", "--environment", "prod", "--model-type", "m"]
    reg += ["--scope", "read_book", "--model-digest", MODEL, "--prompt-digest", PROMPT]
    run("agent register", AGENT, *reg)
    run("agent update", AGENT, "--max-validity", "12h")
    run("agent disable", AGENT)
    run("agent enable", AGENT)
    run("agent show", AGENT)
    run("agent list")
    for n in range(3):
        (issued,) = run("issue", *issue_args(work / f"{n}.csr", AGENT, MODEL, PROMPT)[1:])
        assert str(issued["certificate_pem"]).startswith("-----BEGIN CERTIFICATE-----")
    run("list")
    assert all(d["agent"] == AGENT for d in seen["list"])
    run("show", serial(0))
    run("chain")
    assert run("ca rollover", "--dry-run")[0]["changed"] is False
    assert run("ca rollover", "--yes")[0]["issuer"] == "issuing-2"
    assert run("chain", "--all-issuing")[0]["count"] == 3
    assert run("ca ceremony")[0]["crls"][0]["kind"] == "full"  # type: ignore[index]
    assert run("ca revoke-issuer", "issuing", "--reason", "superseded", "--yes")[0]["changed"]
    assert len(run("revoke", "--agent", AGENT, "--dry-run")) == 3
    run("revoke", serial(0), "--reason", "certificateHold")
    run("release", serial(0))
    run("revoke", serial(1), "--reason", "superseded")
    run("crl publish")
    run("crl show")
    run("ocsp rotate-signer")
    (presigned,) = run("ocsp presign", "--once")
    assert presigned["stored"] >= 1  # type: ignore[operator]
    (health,) = run("doctor")
    assert health["ok"] is True and {c["check"] for c in health["checks"]} >= {"database", "hsm"}  # type: ignore[union-attr]
    run("reconcile")
    (made,) = run("token create", AGENT)
    run("token list")
    run("token revoke", lambda: str(made["id"]))
    run("apitoken create", "nightly", "--role", "auditor")
    run("apitoken list")
    run("apitoken revoke", "nightly")
    from tests.integration.action_support import GatewayKey

    (work / "gw.pem").write_bytes(GatewayKey().pem())
    assert run("gateway add", "gw-json", "--public-key", str(work / "gw.pem"))[0]["changed"]
    run("apitoken create", "--name", "gw-json", "--role", "gateway")
    assert run("gateway list")[0]["name"] == "gw-json"
    assert run("gateway disable", "gw-json")[0]["enabled"] is False
    run("model retire", MODEL2)
    (work / "actions.jsonl").write_text("")
    assert run("drift run", "--records", str(work / "actions.jsonl"))[0]["alerts"] == []
    assert run("drift review")[0]["alerts"] == []

    for docs in seen.values():
        for doc in docs:
            text = json.dumps(doc)
            assert "agent_name" not in doc and "serial_hex" not in text
            for key in ("serial",):
                if key in doc:
                    assert re.fullmatch(r"(?:[0-9A-F]{2})+", str(doc[key])), doc
            for key, value in doc.items():
                if key.endswith("_at") or key in ("not_before", "not_after", "next_update"):
                    assert value is None or str(value).endswith("Z"), (key, value)
    for path in ("revoke", "release", "agent disable", "scope add", "issue", "init"):
        assert seen[path][-1]["changed"] is True, path
    not_run = set(leaves) - set(seen) - SERVERS - ledger - POSTGRES_ONLY - OWN_TARGET
    assert not_run == set(), f"add these leaves to the walk: {sorted(not_run)}"


# ---- serials, repeats and conflicting flags, on one CA ---------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    data_dir = tmp_path_factory.mktemp("contract")
    init = run_cli("init", data_dir=data_dir)
    assert init.returncode == 0, init.stderr
    register_for_issue(data_dir, AGENT, MODEL, PROMPT)
    pems = []
    for n in range(2):
        csr = data_dir / f"{n}.csr"
        write_agent_csr(csr, AGENT, MODEL, PROMPT)
        issued = run_cli(*issue_args(csr, AGENT, MODEL, PROMPT), data_dir=data_dir)
        assert issued.returncode == 0, issued.stderr
        pems.append(issued.stdout)
    return {"data_dir": data_dir, "pems": pems}


def _cli(ca: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    data_dir = ca["data_dir"]
    assert isinstance(data_dir, Path)
    return run_cli(*args, data_dir=data_dir)


def _openssl_serial(pem: str) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-serial", "-noout"], input=pem, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().removeprefix("serial=")


def test_list_prints_serials_as_openssl_and_show_takes_every_form(ca: dict[str, object]) -> None:
    pems = ca["pems"]
    assert isinstance(pems, list)
    expected = {_openssl_serial(pem) for pem in pems}
    table = _cli(ca, "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["SERIAL", "STATE", "AGENT"]
    assert {row.split()[0] for row in rows} == expected
    listed = {json.loads(line)["serial"] for line in _cli(ca, "list", "--json").stdout.splitlines()}
    assert listed == expected
    openssl = sorted(expected)[0]
    stored = openssl.lower().lstrip("0")  # the database's form
    forms = [
        openssl.lower(),
        stored,
        "0x" + openssl.lower(),
        ":".join(openssl[i : i + 2] for i in range(0, len(openssl), 2)),
        "serial=" + openssl,
    ]
    for form in forms:
        shown = _cli(ca, "show", form, "--json")
        assert shown.returncode == 0, (form, shown.stderr)
        assert json.loads(shown.stdout)["serial"] == openssl
    human = _cli(ca, "show", stored)
    assert f"serial:             {openssl}" in human.stdout.splitlines()
    bad = _cli(ca, "show", "0xnot-a-serial")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_repeats_of_the_same_end_state_succeed_and_others_conflict(ca: dict[str, object]) -> None:
    serial = json.loads(_cli(ca, "list", "--json", "--limit", "1").stdout)["serial"]
    first = _cli(ca, "revoke", serial, "--reason", "superseded", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] is True
    again = _cli(ca, "revoke", serial.lower(), "--reason", "superseded", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False and "nothing changed" in again.stderr
    human = _cli(ca, "revoke", serial, "--reason", "superseded")
    assert human.returncode == 0 and human.stdout == "" and "already revoked" in human.stderr
    other = _cli(ca, "revoke", serial, "--reason", "cessationOfOperation", "--json")
    assert other.returncode == 7 and other.stdout == ""
    assert other.stderr.count("\n") == 1 and "[already-revoked]" in other.stderr
    # a revoked-for-good certificate cannot be released (another end state)
    refused = _cli(ca, "release", serial, "--json")
    assert refused.returncode == 7 and "[conflict]" in refused.stderr

    good = json.loads(_cli(ca, "list", "--json", "--status", "issued").stdout.splitlines()[0])
    released = _cli(ca, "release", good["serial"], "--json")
    assert released.returncode == 0 and json.loads(released.stdout)["changed"] is False

    for args in (
        ("agent", "disable", AGENT),
        ("scope", "add", "read_book"),
        ("model", "add", MODEL, "--model-type", "m", "--environment", "prod"),
    ):
        _cli(ca, *args)
        repeat = _cli(ca, *args, "--json")
        assert repeat.returncode == 0, (args, repeat.stderr)
        assert json.loads(repeat.stdout)["changed"] is False, args
    assert _cli(ca, "agent", "enable", AGENT).returncode == 0
    changed_type = _cli(ca, "model", "add", MODEL, "--model-type", "other", "--environment", "prod")
    assert changed_type.returncode == 7, changed_type.stderr

    made = json.loads(_cli(ca, "token", "create", AGENT, "--json").stdout)
    for expect in (True, False):
        gone = _cli(ca, "token", "revoke", made["id"], "--json")
        assert gone.returncode == 0 and json.loads(gone.stdout)["changed"] is expect
    assert _cli(ca, "apitoken", "create", "twice", "--role", "auditor").returncode == 0
    for expect in (True, False):
        gone = _cli(ca, "apitoken", "revoke", "twice", "--json")
        assert gone.returncode == 0 and json.loads(gone.stdout)["changed"] is expect


def test_model_retire_previews_and_repeats(ca: dict[str, object]) -> None:
    assert (
        _cli(ca, "model", "add", MODEL2, "--model-type", "m", "--environment", "prod").returncode
        == 0
    )
    preview = _cli(ca, "model", "retire", MODEL2, "--revoke", "--dry-run", "--json")
    assert preview.returncode == 0, preview.stderr
    doc = json.loads(preview.stdout)
    assert doc["dry_run"] is True and doc["changed"] is False and len(doc["retired"]) == 1
    active = _cli(ca, "model", "list", "--json", "--status", "active").stdout.splitlines()
    assert MODEL2 in {json.loads(line)["digest"] for line in active}  # the preview changed nothing
    done = _cli(ca, "model", "retire", MODEL2, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["changed"] is True
    again = _cli(ca, "model", "retire", MODEL2, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["show", "01", "--pem", "--json"],
        ["crl", "publish", "--full", "--delta"],
        ["crl", "publish", "--issuer", "issuing", "--all"],
        ["crl", "publish", "--loop", "--full"],
        ["crl", "publish", "--settle", "2"],
        ["crl", "show", "--text", "--limit", "3"],
        ["revoke", "01", "--agent", AGENT],
        ["revoke", "01", "--dry-run"],
        ["revoke", "--agent", AGENT, "--dry-run", "--yes"],
        ["release", "01", "--dry-run", "--yes"],
        ["model", "retire", MODEL, "--dry-run", "--yes"],
        ["agent", "update", AGENT, "--config-digest", "ab" * 32, "--no-config-digests"],
    ],
    ids=" ".join,
)
def test_conflicting_flags_are_refused_in_one_line(ca: dict[str, object], args: list[str]) -> None:
    result = _cli(ca, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("agentca: error: ") and "[bad-request]" in result.stderr


def test_crl_show_refuses_a_file_with_issuer_options(ca: dict[str, object]) -> None:
    assert _cli(ca, "crl", "publish").returncode == 0
    data_dir = ca["data_dir"]
    assert isinstance(data_dir, Path)
    crl = data_dir / "crl" / "issuing.crl"
    result = _cli(ca, "crl", "show", "--file", str(crl), "--delta")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    shown = _cli(ca, "crl", "show", "--file", str(crl), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["kind"] == "full"


def _on_a_terminal(
    ca: dict[str, object], answer: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``agentca`` with stdin on a pseudo-terminal, answering ``answer``."""
    import os

    from tests.integration.conftest import AGENTCA

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env["AGENTCA_DATA_DIR"] = str(ca["data_dir"])
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        return subprocess.run(
            [AGENTCA, *args], stdin=slave, capture_output=True, text=True, env=env, timeout=120
        )
    finally:
        os.close(slave)
        os.close(master)


def test_state_changes_ask_on_a_terminal_unless_yes(ca: dict[str, object]) -> None:
    model = "d4" * 32
    add = ("model", "add", model, "--model-type", "m", "--environment", "prod")
    assert _cli(ca, *add).returncode == 0
    no = _on_a_terminal(ca, "n", "model", "retire", model, "--revoke", "--json")
    assert no.returncode == 1 and no.stdout == "" and "retire 1 model" in no.stderr
    active = _cli(ca, "model", "list", "--json", "--status", "active").stdout.splitlines()
    assert model in {json.loads(line)["digest"] for line in active}  # nothing was retired
    yes = _on_a_terminal(ca, "", "model", "retire", model, "--revoke", "--yes", "--json")
    assert yes.returncode == 0 and json.loads(yes.stdout)["changed"] is True, yes.stderr
    bulk = _on_a_terminal(ca, "n", "revoke", "--agent", AGENT, "--json")
    assert bulk.returncode == 1 and bulk.stdout == "" and "live certificate(s)" in bulk.stderr
