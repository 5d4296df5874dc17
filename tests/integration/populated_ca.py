"""A CA with some history, built with the real ``agentca`` command, and the checks that a copy
of it (restored from a backup, or migrated to PostgreSQL) answers the same.

History: two agents, three certificates (good, revoked for keyCompromise, on hold), an
enrollment token, an API token and a signed ledger checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.integration.conftest import issue_args, register_for_issue, run_cli, write_agent_csr
from tests.integration.servers import agentca_server

MODEL, PROMPT = "5e" * 32, "7a" * 32
AGENTS = ("backup-agent-1", "backup-agent-2")


@dataclass
class PopulatedCA:
    """Where the CA lives and what it issued."""

    data_dir: Path
    env: dict[str, str]
    work: Path
    pems: dict[str, Path] = field(default_factory=dict)  # good | revoked | hold -> PEM file
    serials: dict[str, str] = field(default_factory=dict)

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, data_dir=self.data_dir, env=self.env | (env or {}))


def issue(
    data_dir: Path, env: dict[str, str], work: Path, name: str, agent: str
) -> tuple[Path, str]:
    """Issue one certificate to ``agent`` with the CLI; returns its PEM file and serial."""
    csr = work / f"{name}.csr"
    write_agent_csr(csr, agent, MODEL, PROMPT)
    result = run_cli(*issue_args(csr, agent, MODEL, PROMPT), "--json", data_dir=data_dir, env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    pem = work / f"{name}.pem"
    pem.write_text(doc["certificate_pem"])
    return pem, str(doc["serial"])


def populate(data_dir: Path, env: dict[str, str], work: Path) -> PopulatedCA:
    """``agentca init`` and the history above; writes root.pem and issuing.pem into ``work``."""
    ca = PopulatedCA(data_dir, env, work)
    result = ca.cli("init")
    assert result.returncode == 0, result.stderr
    assert ca.cli("chain", "--root-only", "--out", str(work / "root.pem")).returncode == 0
    chain = ca.cli("chain").stdout
    (work / "issuing.pem").write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])
    (work / "chain.pem").write_text(chain)
    for agent in AGENTS:
        register_for_issue(data_dir, agent, MODEL, PROMPT, env=env)
    for name, agent in (("good", AGENTS[0]), ("revoked", AGENTS[1]), ("hold", AGENTS[0])):
        ca.pems[name], ca.serials[name] = issue(data_dir, env, work, name, agent)
    for serial, reason in (
        (ca.serials["revoked"], "keyCompromise"),
        (ca.serials["hold"], "certificateHold"),
    ):
        result = ca.cli("revoke", serial, "--reason", reason)
        assert result.returncode == 0, result.stderr
    for args in (
        ("token", "create", AGENTS[1]),
        ("apitoken", "create", "nightly", "--role", "auditor"),
    ):
        result = ca.cli(*args)
        assert result.returncode == 0, result.stderr
    result = ca.cli("ledger", "checkpoint", "--out", str(work / "checkpoint.json"))
    assert result.returncode == 0, result.stderr
    return ca


def listing(ca: PopulatedCA, env: dict[str, str] | None = None) -> dict[str, str]:
    """What the read commands print, by command (their JSON lines, as text)."""
    out = {}
    for args in (
        ("list", "--json", "--limit", "1000"),
        ("agent", "list", "--json"),
        ("token", "list", "--json"),
        ("apitoken", "list", "--json"),
    ):
        result = ca.cli(*args, env=env)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        out[" ".join(args)] = result.stdout
    return out


def certificate_rows(url: str) -> dict[str, tuple[str, str | None]]:
    """Per serial, read straight from the database: status and SHA-256 of the DER."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT serial_hex, status, certificate_der FROM certificates")
            )
            return {
                s: (st, None if der is None else hashlib.sha256(bytes(der)).hexdigest())
                for s, st, der in rows
            }
    finally:
        engine.dispose()


def tables_of(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def openssl_ocsp(base: str, work: Path, pem: Path) -> str:
    """``openssl ocsp`` for one certificate; asserts the response verifies, returns stdout."""
    out = subprocess.run(
        ["openssl", "ocsp", "-url", base + "/ocsp", "-CAfile", str(work / "root.pem"),
         "-issuer", str(work / "issuing.pem"), "-cert", str(pem), "-resp_text"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Response verify OK" in out.stderr, out.stderr
    return out.stdout


def check_ocsp(ca: PopulatedCA, env: dict[str, str]) -> None:
    """Serve OCSP from the CA (as ``env`` configures it): good, revoked, and on hold."""
    with agentca_server(["ocsp", "serve", "--workers", "1"], ca.data_dir, "/health", env) as (
        base,
        _,
    ):
        good = openssl_ocsp(base, ca.work, ca.pems["good"])
        revoked = openssl_ocsp(base, ca.work, ca.pems["revoked"])
        hold = openssl_ocsp(base, ca.work, ca.pems["hold"])
    assert f"{ca.pems['good']}: good" in good, good
    assert f"{ca.pems['revoked']}: revoked" in revoked and "Reason: keyCompromise" in revoked
    assert f"{ca.pems['hold']}: revoked" in hold and "Reason: certificateHold" in hold


def check_ledger(ca: PopulatedCA, out: Path, env: dict[str, str] | None = None) -> None:
    """A fresh checkpoint signed with the audit key in the HSM; the export verifies."""
    result = ca.cli("ledger", "export", "--sign-checkpoint", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    result = ca.cli("ledger", "verify", str(out), "--trust", str(ca.work / "root.pem"), env=env)
    assert result.returncode == 0 and result.stdout.startswith("OK:"), result.stdout + result.stderr


def check_issues(ca: PopulatedCA, name: str, env: dict[str, str] | None = None) -> str:
    """The CA still signs: a new certificate verifies under the chain. Returns its serial."""
    pem, serial = issue(ca.data_dir, ca.env | (env or {}), ca.work, name, AGENTS[1])
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.work / "root.pem"),
         "-untrusted", str(ca.work / "issuing.pem"), str(pem)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return serial
