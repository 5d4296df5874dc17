"""The registration, inventory and credential commands, and bulk revocation, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import (
    issue_args,
    register_for_issue,
    run_cli,
    write_agent_csr,
)
from tests.integration.http import call
from tests.integration.servers import agentca_server

MODEL = "a1" * 32
MODEL2 = "b2" * 32
PROMPT = "c3" * 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli-reg") / "data"
    assert run_cli("init", data_dir=d).returncode == 0
    return d


def ok(*args: str, data_dir: Path) -> str:
    r = run_cli(*args, data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _issue(data_dir: Path, model: str, agent: str = "exec") -> str:
    path = data_dir.parent / f"{agent}-{model[:4]}.csr"
    write_agent_csr(path, agent, model, PROMPT)
    ok(*issue_args(path, agent, model, PROMPT), data_dir=data_dir)
    return json.loads(ok("list", "--json", "--limit", "1", data_dir=data_dir))["serial"]


def test_register_list_show_disable(data_dir: Path) -> None:
    bad = run_cli(
        "agent",
        "register",
        "exec",
        "--officer",
        "o@example.com",
        "--environment",
        "prod",
        "--model-type",
        "m",
        "--scope",
        "read_book",
        "--model-digest",
        MODEL,
        "--prompt-digest",
        PROMPT,
        data_dir=data_dir,
    )
    assert bad.returncode != 0 and "agentca scope add" in bad.stderr
    ok("scope", "add", "read_book", "--description", "read the book", data_dir=data_dir)
    assert "read_book" in ok("scope", "list", data_dir=data_dir)
    ok("model", "add", MODEL, "--model-type", "m", "--environment", "prod", data_dir=data_dir)
    ok("model", "add", MODEL2, "--model-type", "m", "--environment", "prod", data_dir=data_dir)
    ok(
        "agent",
        "register",
        "exec",
        "--officer",
        "o@example.com",
        "--environment",
        "prod",
        "--model-type",
        "m",
        "--scope",
        "read_book",
        "--model-digest",
        MODEL,
        "--prompt-digest",
        PROMPT,
        "--max-validity",
        "6h",
        data_dir=data_dir,
    )
    shown = json.loads(ok("agent", "show", "exec", "--json", data_dir=data_dir))
    assert shown["scopes"] == ["read_book"] and shown["max_validity_seconds"] == 21600
    assert "exec" in ok("agent", "list", data_dir=data_dir)
    ok("agent", "disable", "exec", data_dir=data_dir)
    assert json.loads(ok("agent", "show", "exec", "--json", data_dir=data_dir))["status"] == (
        "disabled"
    )
    ok("agent", "enable", "exec", data_dir=data_dir)
    models = [
        json.loads(line) for line in ok("model", "list", "--json", data_dir=data_dir).splitlines()
    ]
    assert {m["digest"] for m in models} == {MODEL, MODEL2}


def test_tokens_print_once_and_work(data_dir: Path) -> None:
    enroll = run_cli("token", "create", "exec", "--ttl", "10m", data_dir=data_dir)
    assert enroll.returncode == 0 and enroll.stdout.startswith("aca_enroll_")
    assert "cannot be shown again" in enroll.stderr
    api = run_cli("apitoken", "create", "ops", "--role", "operator", data_dir=data_dir)
    secret = api.stdout.strip()
    assert secret.startswith("aca_api_")
    with agentca_server(["serve", "--workers", "1"], data_dir, "/health") as (base, _p):
        assert call(base, "GET", "/v1/agents", token=secret).status == 200
        assert call(base, "GET", "/v1/agents", token="aca_api_nope").status == 401
    dup = run_cli("apitoken", "create", "ops", "--role", "auditor", data_dir=data_dir)
    assert dup.returncode != 0 and "exists" in dup.stderr


def test_bulk_revoke_by_model_and_retire_with_revoke(data_dir: Path) -> None:
    register_for_issue(data_dir, "other", MODEL2, PROMPT)
    a = [_issue(data_dir, MODEL) for _ in range(2)]
    b = [_issue(data_dir, MODEL2, agent="other") for _ in range(2)]
    out = run_cli("revoke", "--model-digest", MODEL, "--reason", "superseded", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert {line.split()[1] for line in out.stdout.splitlines()} == set(a)
    for serial in b:
        assert json.loads(ok("show", serial, "--json", data_dir=data_dir))["status"] == "issued"
    retire = run_cli("model", "retire", MODEL2, "--revoke", data_dir=data_dir)
    assert retire.returncode == 0 and "revoked 2 live" in retire.stderr
    for serial in b:
        shown = json.loads(ok("show", serial, "--json", data_dir=data_dir))
        assert shown["status"] == "revoked" and shown["revocation_reason"] == "privilegeWithdrawn"
    neither = run_cli("revoke", data_dir=data_dir)
    assert neither.returncode != 0 and "SERIAL" in neither.stderr


def test_apitoken_create_list_revoke(data_dir: Path) -> None:
    """API tokens never expired and could not be revoked, listed or seen in use."""
    created = json.loads(
        ok(
            "apitoken",
            "create",
            "nightly",
            "--role",
            "auditor",
            "--ttl",
            "2d",
            "--json",
            data_dir=data_dir,
        )
    )
    assert created["token"].startswith("aca_api_") and created["status"] == "active"
    assert created["expires_at"] > created["created_at"]
    assert created["created_by"].startswith("cli:")
    listed = [
        json.loads(line)
        for line in ok("apitoken", "list", "--json", data_dir=data_dir).splitlines()
    ]
    mine = next(t for t in listed if t["name"] == "nightly")
    assert mine["status"] == "active" and "token" not in mine
    assert created["token"] not in ok("apitoken", "list", data_dir=data_dir)
    revoked = json.loads(ok("apitoken", "revoke", "nightly", "--json", data_dir=data_dir))
    assert revoked["status"] == "revoked" and revoked["revoked_by"].startswith("cli:")
    # the repeat rule (docs/cli.md): the same end state is success, with one note
    again = run_cli("apitoken", "revoke", "nightly", "--json", data_dir=data_dir)
    assert again.returncode == 0 and again.stderr.count("\n") == 1
    assert "already revoked" in again.stderr and json.loads(again.stdout)["changed"] is False
    too_long = run_cli(
        "apitoken", "create", "forever", "--role", "operator", "--ttl", "3650d", data_dir=data_dir
    )
    assert too_long.returncode != 0 and "invalid-validity" in too_long.stderr
    assert "Traceback" not in too_long.stderr + again.stderr


CONFIG = "5c" * 32


def _register(data_dir: Path, name: str, *extra: str, environment: str = "prod"):
    return run_cli(
        "agent",
        "register",
        name,
        "--officer",
        "o@example.com",
        "--environment",
        environment,
        "--model-type",
        "m",
        "--scope",
        "cfg_scope",
        "--model-digest",
        MODEL,
        "--prompt-digest",
        PROMPT,
        *extra,
        data_dir=data_dir,
    )


def test_register_with_config_digests_and_refuse_look_alikes(data_dir: Path) -> None:
    from agent import config_digest

    cfg = data_dir.parent / "config.json"
    cfg.write_text('{"tools": ["order_book"], "temperature": 0.2}')
    computed = ok("config", "digest", str(cfg), data_dir=data_dir).strip()
    assert computed == config_digest({"temperature": 0.2, "tools": ["order_book"]}).hex()
    ok("scope", "add", "cfg_scope", data_dir=data_dir)
    r = _register(data_dir, "CfgAgent", "--config-digest", CONFIG, "--config-digest", computed)
    assert r.returncode == 0, r.stderr
    shown = json.loads(ok("agent", "show", "CfgAgent", "--json", data_dir=data_dir))
    assert shown["config_digests"] == sorted([CONFIG, computed])
    # the same name in another case, and a look-alike, are one CLI line each (exit != 0)
    for twin in ("cfgagent", "CFGAGENT", "CfgAgent"):
        r = _register(data_dir, twin)
        assert r.returncode != 0, twin
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "CfgAgent" in r.stderr
    # an environment with a Cyrillic 'o' (U+043E) is refused; one differing only by case conflicts
    r = _register(data_dir, "cyr-agent", environment="pr\u043ed")
    assert r.returncode != 0 and "ASCII" in r.stderr and "Traceback" not in r.stderr
    r = _register(data_dir, "case-agent", environment="PROD")
    assert r.returncode != 0 and "looks like the existing environment" in r.stderr
    # a scope that only looks like an existing one
    r = run_cli("scope", "add", "cfg_sc0pe", data_dir=data_dir)
    assert r.returncode != 0 and "looks like the existing scope 'cfg_scope'" in r.stderr


def _counts(data_dir: Path) -> tuple[int, int]:
    """Certificate records and ledger entries (a burned serial is a record)."""
    records = ok("list", "--json", "--limit", "100000", data_dir=data_dir).splitlines()
    ledger = ok("ledger", "export", "--sign-checkpoint", data_dir=data_dir).splitlines()
    entries = [json.loads(line) for line in ledger if line.strip()]
    return len(records), sum(1 for e in entries if e.get("event") != "ledger.checkpoint")


def _last_issued(data_dir: Path) -> dict:
    out = ok(
        "ledger", "export", "--sign-checkpoint", "--event", "certificate.issued", data_dir=data_dir
    )
    entry: dict = json.loads(out.strip().splitlines()[-1])
    return entry


CLI_REFUSED = {
    "unregistered agent": ({"--agent": "RogueBot"}, "no agent is registered as 'RogueBot'"),
    "scope outside the catalogue": (
        {"--scope": "halt_trading"},
        "scopes not in the catalogue: halt_trading",
    ),
    "stranger as officer": ({"--officer": "stranger@evil.example"}, "officer 'stranger@evil"),
    "CSR without provenance": ({"plain": "yes"}, "no agent provenance attribute"),
}


@pytest.mark.parametrize("case", list(CLI_REFUSED))
def test_cli_issue_outside_policy_is_one_line_and_writes_nothing(data_dir: Path, case: str) -> None:
    """Issue 9.2: 'agentca issue' signed for RogueBot, halt_trading, a stranger, no provenance."""
    override, needle = CLI_REFUSED[case]
    csr = data_dir.parent / "refused.csr"
    write_agent_csr(csr, "exec", MODEL, PROMPT)
    args = issue_args(csr, "exec", MODEL, PROMPT)
    if "plain" in override:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import CertificateSigningRequestBuilder, Name

        key = ec.generate_private_key(ec.SECP256R1())
        plain = CertificateSigningRequestBuilder().subject_name(Name([])).sign(key, hashes.SHA256())
        csr.write_bytes(plain.public_bytes(serialization.Encoding.PEM))
        cut = args.index("--model-type")
        args = args[:cut] + args[cut + 6 :]  # no --model-type/--model-digest/--prompt-digest
    for flag, value in override.items():
        if flag in args:
            args[args.index(flag) + 1] = value
    before = _counts(data_dir)
    result = run_cli(*args, data_dir=data_dir)
    assert result.returncode == 4 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentca: error: issuance for"), result.stderr
    assert needle in lines[0] and lines[0].endswith("[policy-refused]")
    assert _counts(data_dir) == before


def test_cli_issue_takes_its_contents_from_the_registration(data_dir: Path) -> None:
    csr = data_dir.parent / "lean.csr"
    write_agent_csr(csr, "exec", MODEL, PROMPT)
    result = run_cli("issue", "--csr", str(csr), "--agent", "exec", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    entry = _last_issued(data_dir)
    body = entry["body"]
    assert body["outside_policy"] is False and body["officer"] == "o@example.com"
    assert body["extensions"]["authorization"]["scopes"] == ["read_book"]


def test_cli_outside_policy_is_explicit_and_ledgered(data_dir: Path) -> None:
    csr = data_dir.parent / "verbatim.csr"
    write_agent_csr(csr, "RogueBot", MODEL, PROMPT)
    args = issue_args(csr, "RogueBot", MODEL, PROMPT, scope="halt_trading")
    result = run_cli(*args, "--outside-policy", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "outside policy" in result.stderr
    entry = _last_issued(data_dir)
    body = entry["body"]
    assert entry["actor"].startswith("cli:") and body["agent"] == "RogueBot"
    assert body["outside_policy"] is True
    assert body["policy_reasons"] == [
        "no agent is registered as 'RogueBot'",
        "scopes not in the catalogue: halt_trading",
    ]


def test_cli_creates_issuer_verbatim_tokens(data_dir: Path) -> None:
    created = run_cli(
        "apitoken", "create", "verbatim-signer", "--role", "issuer-verbatim", data_dir=data_dir
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("aca_api_") and "(issuer-verbatim)" in created.stderr
    listed = [
        json.loads(line)
        for line in ok("apitoken", "list", "--json", data_dir=data_dir).splitlines()
    ]
    assert {"name": "verbatim-signer", "role": "issuer-verbatim"}.items() <= next(
        t for t in listed if t["name"] == "verbatim-signer"
    ).items()


def test_agent_update_recovers_from_a_re_reviewed_prompt(data_dir: Path) -> None:
    prompt2 = "d4" * 32
    register_for_issue(data_dir, "drift", MODEL, PROMPT)
    csr = data_dir.parent / "drift-new-prompt.csr"
    write_agent_csr(csr, "drift", MODEL, prompt2)
    refused = run_cli(*issue_args(csr, "drift", MODEL, prompt2), data_dir=data_dir)
    assert refused.returncode != 0 and "prompt" in refused.stderr
    nothing = run_cli("agent", "update", "drift", data_dir=data_dir)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    both = run_cli(
        "agent",
        "update",
        "drift",
        "--config-digest",
        "e5" * 32,
        "--no-config-digests",
        data_dir=data_dir,
    )
    assert both.returncode == 2 and "contradict" in both.stderr
    shown = json.loads(
        ok("agent", "update", "drift", "--prompt-digest", prompt2, "--json", data_dir=data_dir)
    )
    assert shown["prompt_digests"] == [prompt2] and shown["model_digests"] == [MODEL]
    assert shown["officer"] == "o@example.com"  # what was not given is unchanged
    ok(*issue_args(csr, "drift", MODEL, prompt2), data_dir=data_dir)
    old = data_dir.parent / "drift-old-prompt.csr"
    write_agent_csr(old, "drift", MODEL, PROMPT)
    stale = run_cli(*issue_args(old, "drift", MODEL, PROMPT), data_dir=data_dir)
    assert stale.returncode != 0  # the list was replaced, not extended
    missing = run_cli("agent", "update", "nobody", "--officer", "x@example.com", data_dir=data_dir)
    assert missing.returncode != 0 and "nobody" in missing.stderr
