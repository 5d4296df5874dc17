"""The real ``agentca`` command, each invocation its own process with a managed SoftHSM2 token.

Checks the issue's acceptance points with real clients: ``openssl verify`` accepts the chain,
``openssl x509 -text`` shows the agent extensions under their OIDs, and every bad input is one
clear line, a non-zero exit, and no new record.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ca import oids
from ca.extensions import read_agent_extensions
from cli.output import cli_serial
from tests.integration.conftest import register_for_issue, run_cli

MODEL = "8f39b1a2cf93e8201a756b1f2304918e7e1f4094a9a01f92e8c21a4f028bde44"
PROMPT = "4e1fa0c31ab456de90123f112ab8e89cf12a023b1ab4c089ee21ff34e098df12"


def register_cli_agents(
    data_dir: Path, env: dict[str, str], agents: tuple[str, ...] = ("ExecutionAgent-ETH-01",)
) -> None:
    """Register the agents ``_issue_args`` issues for, so 'agentca issue' passes policy."""
    for agent in agents:
        register_for_issue(
            data_dir,
            agent,
            MODEL,
            PROMPT,
            officer="compliance-officer@enterprise.io",
            environment="production-eu-west-1",
            scopes=("submit_limit_order", "query_anonymized_order_book"),
            model_type="claude-3.5-sonnet-v2",
            key_types=("ec-p256", "ec-p384", "rsa-2048", "ed25519"),
            env=env,
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cli_ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An initialised CA in its own data dir, on the embedded SQLite or on PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"cli-{request.param}")
    env: dict[str, str] = {}
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_module_url")
        env["AGENTCA_DATABASE_URL"] = db
    result = run_cli("init", data_dir=data_dir, env=env)
    assert result.returncode == 0, result.stderr
    assert "root" in result.stdout and "issuing" in result.stdout
    register_cli_agents(data_dir, env, ("ExecutionAgent-ETH-01", "revokee"))
    work = tmp_path_factory.mktemp(f"cli-work-{request.param}")
    run_cli("chain", "--root-only", "--out", str(work / "root.pem"), data_dir=data_dir, env=env)
    chain = run_cli("chain", data_dir=data_dir, env=env).stdout
    issuing_pem = chain[: chain.index("-----END CERTIFICATE-----") + 26]
    (work / "issuing.pem").write_text(issuing_pem)
    return {"data_dir": data_dir, "env": env, "work": work}


def _csr(path: Path, key=None) -> Path:
    key = key or ec.generate_private_key(ec.SECP256R1())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
        .sign(key, algorithm)
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def _issue_args(csr: Path, **override: str) -> list[str]:
    values = {
        "--agent": "ExecutionAgent-ETH-01",
        "--model-type": "claude-3.5-sonnet-v2",
        "--model-digest": MODEL,
        "--prompt-digest": PROMPT,
        "--officer": "compliance-officer@enterprise.io",
        "--environment": "production-eu-west-1",
        "--validity": "2h",
    }
    values.update(override)
    args = [
        "issue",
        "--csr",
        str(csr),
        "--scope",
        "submit_limit_order",
        "--scope",
        "query_anonymized_order_book",
    ]
    for k, v in values.items():
        args += [k, v]
    return args


def _record_count(ca: dict) -> int:
    out = run_cli("list", "--json", "--limit", "100000", data_dir=ca["data_dir"], env=ca["env"])
    assert out.returncode == 0, out.stderr
    return len(out.stdout.splitlines())


def test_issued_certificate_verifies_with_openssl_and_decodes_exactly(cli_ca: dict) -> None:
    work: Path = cli_ca["work"]
    out = work / "agent.pem"
    result = run_cli(
        *_issue_args(_csr(work / "a.csr"), **{"--out": str(out)}),
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    )
    assert result.returncode == 0, result.stderr
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(work / "root.pem"),
            "-untrusted",
            str(work / "issuing.pem"),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0 and verify.stdout.strip().endswith("OK"), (
        verify.stdout + verify.stderr
    )
    text = subprocess.run(
        ["openssl", "x509", "-in", str(out), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for oid in (
        oids.DEFAULT_ARC.provenance,
        oids.DEFAULT_ARC.authorization,
        oids.DEFAULT_ARC.accountability,
    ):
        assert f"{oid.dotted_string}: \n" in text or f"{oid.dotted_string}:\n" in text
    assert "URI:spiffe://agentca.local/agent/ExecutionAgent-ETH-01" in text
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    ext = read_agent_extensions(cert).to_dict()
    assert ext["provenance"]["model_digest"] == MODEL
    assert ext["provenance"]["prompt_digest"] == PROMPT
    assert ext["provenance"]["model_type"] == "claude-3.5-sonnet-v2"
    assert ext["authorization"]["scopes"] == ["query_anonymized_order_book", "submit_limit_order"]
    assert ext["accountability"]["officer"] == "compliance-officer@enterprise.io"
    assert ext["accountability"]["environment"] == "production-eu-west-1"
    shown = run_cli(
        "show",
        format(cert.serial_number, "x"),
        "--json",
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["extensions"] == ext


@pytest.mark.parametrize(
    "key_factory",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(65537, 2048),
        lambda: ed25519.Ed25519PrivateKey.generate(),
    ],
)
def test_other_agent_key_types_verify(cli_ca: dict, key_factory) -> None:
    work: Path = cli_ca["work"]
    result = run_cli(
        *_issue_args(_csr(work / "k.csr", key_factory())),
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    )
    assert result.returncode == 0, result.stderr
    (work / "k.pem").write_text(result.stdout)
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(work / "root.pem"),
            "-untrusted",
            str(work / "issuing.pem"),
            str(work / "k.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_revoke_then_show_and_list(cli_ca: dict) -> None:
    work: Path = cli_ca["work"]
    issued = run_cli(
        *_issue_args(_csr(work / "r.csr"), **{"--agent": "revokee"}),
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    )
    serial = cli_serial(x509.load_pem_x509_certificate(issued.stdout.encode()).serial_number)
    rev = run_cli(
        "revoke",
        serial,
        "--reason",
        "keyCompromise",
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    )
    assert rev.returncode == 0 and "keyCompromise" in rev.stdout
    shown = json.loads(
        run_cli("show", serial, "--json", data_dir=cli_ca["data_dir"], env=cli_ca["env"]).stdout
    )
    assert shown["status"] == "revoked" and shown["revocation_reason"] == "keyCompromise"
    listed = run_cli(
        "list",
        "--agent",
        "revokee",
        "--status",
        "revoked",
        "--json",
        data_dir=cli_ca["data_dir"],
        env=cli_ca["env"],
    ).stdout.splitlines()
    assert [json.loads(line)["serial"] for line in listed] == [serial]
    again = run_cli("revoke", serial, data_dir=cli_ca["data_dir"], env=cli_ca["env"])
    assert (
        again.returncode != 0
        and again.stderr.count("\n") == 1
        and "already revoked" in again.stderr
    )


BAD_INPUTS = {
    "malformed CSR": ({}, b"this is not a CSR", "not a valid PKCS#10"),
    "CSR signature": ({}, "tampered", "does not verify"),
    "unknown key type": ({}, "p521", "not supported"),
    "scope form": ({}, None, "scope"),
    "digest form": ({"--model-digest": "abc123"}, None, "64 hex"),
    "officer form": ({"--officer": "not-an-email"}, None, "officer"),
    "validity": ({"--validity": "400d"}, None, "maximum"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_nonzero_and_writes_nothing(cli_ca: dict, case: str) -> None:
    work: Path = cli_ca["work"]
    override, csr_content, needle = BAD_INPUTS[case]
    csr_path = work / "bad.csr"
    if csr_content is None:
        _csr(csr_path)
    elif csr_content == "tampered":
        good = x509.load_pem_x509_csr(_csr(work / "g.csr").read_bytes())
        der = good.public_bytes(serialization.Encoding.DER)
        csr_path.write_bytes(der.replace(b"\x0c\x05agent", b"\x0c\x05agenT"))
    elif csr_content == "p521":
        _csr(csr_path, ec.generate_private_key(ec.SECP521R1()))
    else:
        csr_path.write_bytes(csr_content)
    args = _issue_args(csr_path, **override)
    if case == "scope form":
        args[args.index("submit_limit_order")] = "Submit Limit Order!"
    before = _record_count(cli_ca)
    result = run_cli(*args, data_dir=cli_ca["data_dir"], env=cli_ca["env"])
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentca: error:"), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert _record_count(cli_ca) == before


def test_wrong_pin_is_a_clear_error(cli_ca: dict, tmp_path: Path) -> None:
    pin = tmp_path / "wrong.pin"
    pin.write_text("definitely-not-the-pin\n")
    pin.chmod(0o644)  # first as most editors leave it: refused before the HSM is asked
    data_dir: Path = cli_ca["data_dir"]
    env = dict(
        cli_ca["env"],
        AGENTCA_MANAGE_SOFTHSM="false",
        AGENTCA_PKCS11_MODULE="/usr/lib/softhsm/libsofthsm2.so",
        AGENTCA_SOFTHSM2_CONF=str(data_dir / "hsm" / "softhsm2.conf"),
        AGENTCA_HSM_PIN_FILE=str(pin),
    )
    before = _record_count(cli_ca)
    open_pin = run_cli(*_issue_args(_csr(tmp_path / "p.csr")), data_dir=data_dir, env=env)
    assert open_pin.returncode != 0 and "chmod 600" in open_pin.stderr, open_pin.stderr
    assert "definitely-not-the-pin" not in open_pin.stderr + open_pin.stdout
    pin.chmod(0o600)
    result = run_cli(*_issue_args(_csr(tmp_path / "p.csr")), data_dir=data_dir, env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "PIN" in result.stderr and "incorrect" in result.stderr
    assert "definitely-not-the-pin" not in result.stderr
    assert _record_count(cli_ca) == before


def test_missing_token_is_a_clear_error(cli_ca: dict, tmp_path: Path) -> None:
    env = dict(cli_ca["env"], AGENTCA_TOKEN_LABEL="no-such-token")
    result = run_cli(*_issue_args(_csr(tmp_path / "t.csr")), data_dir=cli_ca["data_dir"], env=env)
    assert result.returncode != 0
    assert "no-such-token" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_uninitialised_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("list", data_dir=tmp_path / "empty")
    assert result.returncode != 0 and "agentca init" in result.stderr


def test_pin_files_are_private(cli_ca: dict) -> None:
    for name in ("user.pin", "so.pin"):
        mode = stat.S_IMODE(os.stat(cli_ca["data_dir"] / "secrets" / name).st_mode)
        assert mode == 0o600


def test_digest_commands(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"You are an execution agent.\n")
    out = run_cli("prompt", "digest", str(prompt), data_dir=tmp_path)
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(prompt.read_bytes()).hexdigest()
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "b.bin").write_bytes(b"\x01" * 1000)
    (weights / "a.bin").write_bytes(b"\x02" * 10)
    manifest = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.stat().st_size}  {p.name}\n"
        for p in sorted(weights.iterdir())
    ).encode()
    out = run_cli("model", "digest", str(weights), data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha256(manifest).hexdigest()


def _all_commands() -> list[list[str]]:
    """Every command path in the click tree, so new commands are covered automatically."""
    import click

    from cli.main import cli

    paths: list[list[str]] = []

    def walk(cmd: click.Command, prefix: list[str]) -> None:
        paths.append(prefix)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(cli, [])
    return paths


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(c) or "agentca")
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    result = run_cli(*command, "--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert "Usage: agentca" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_every_command_explains_itself() -> None:
    import click

    from cli.main import cli

    def walk(cmd: click.Command, name: str) -> None:
        assert (cmd.help or "").strip(), f"'{name}' has no help text"
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}")

    walk(cli, "agentca")
