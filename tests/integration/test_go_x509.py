"""Go's crypto/x509 parses and path-validates agentca certificates.

A CA made by ``agentca init`` with the default settings (SQLite, a managed SoftHSM2 token,
the default OID arc) issues an agent certificate through ``agentca issue``; the stdlib-only
Go program in ``tests/interop/go`` parses root, issuing CA and agent certificate and runs
``x509.Certificate.Verify`` with ``KeyUsages=[ClientAuth]``. Negative controls: a certificate
under the legacy UUID arc is refused by Go's parser (why the arc moved), a chain under
another root does not verify, and a verification time after expiry fails. Last, the roots
come from the CA API's SPIFFE bundle endpoint, as a SPIFFE-aware Go verifier reads them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import REPO_ROOT, run_cli
from tests.integration.servers import agentca_server
from tests.integration.test_ocsp_interop import init_ca, issue
from wire import oids

pytestmark = pytest.mark.integration

GO_SOURCE = REPO_ROOT / "tests" / "interop" / "go"
CLIENT_AUTH = "clientAuth"


def go_env(home: Path) -> dict[str, str]:
    """An environment for ``go`` that writes only under ``home`` and never downloads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "AGENTCA_"))}
    env.update(
        GOCACHE=str(home / "cache"),
        GOPATH=str(home / "path"),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
        GO111MODULE="on",
        GOPROXY="off",
        CGO_ENABLED="0",
    )
    return env


@pytest.fixture(scope="session")
def x509check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go verifier, built once per session."""
    home = tmp_path_factory.mktemp("go")
    binary = home / "x509check"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=GO_SOURCE, env=go_env(home), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return binary


def go_verify(binary: Path, *args: str) -> dict[str, Any]:
    """Run the Go verifier and return its JSON verdict."""
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    verdict: dict[str, Any] = json.loads(done.stdout)
    return verdict


@dataclass(frozen=True)
class Issued:
    """One initialised CA and one agent certificate, as files."""

    data_dir: Path
    work: Path
    agent: Path

    @property
    def root(self) -> Path:
        return self.work / "root.pem"

    @property
    def issuing(self) -> Path:
        return self.work / "issuing.pem"


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    """``agentca init`` with every default (no database URL: SQLite; managed SoftHSM2)."""
    data_dir = tmp_path_factory.mktemp("go-ca") / "data"
    work = tmp_path_factory.mktemp("go-work")
    init_ca(data_dir, {}, work)
    agent, _serial = issue(data_dir, {}, work, "go-agent")
    return Issued(data_dir, work, agent)


def self_signed(path: Path, extension_oid: str | None, cn: str = "Legacy") -> Path:
    """A self-signed CA certificate, optionally with one non-critical extension ``oid``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )  # fmt: skip
    if extension_oid is not None:
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(extension_oid), b"\x30\x00")
        builder = builder.add_extension(ext, critical=False)
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def _chain(issued: Issued, binary: Path, *extra: str) -> dict[str, Any]:
    return go_verify(
        binary, "-roots", str(issued.root), "-intermediates", str(issued.issuing),
        "-leaf", str(issued.agent), *extra,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- parsing
def test_go_parses_root_issuing_and_agent(issued: Issued, x509check: Path) -> None:
    verdict = _chain(issued, x509check)
    certs = verdict["certificates"]
    assert [c.get("error") for c in certs] == [None, None, None], certs
    root, issuing, agent = certs
    assert root["subject"] == "CN=agentca Root CA,O=agentca development" and root["is_ca"]
    assert issuing["subject"] == "CN=agentca Issuing CA,O=agentca development"
    assert issuing["is_ca"] and not agent["is_ca"]
    assert agent["uris"] == ["spiffe://agentca.local/agent/go-agent"]
    assert agent["unhandled_critical"] == []


def test_go_sees_the_agentca_oids_under_the_default_arc(issued: Issued, x509check: Path) -> None:
    agent = _chain(issued, x509check)["certificates"][2]
    assert oids.DEFAULT_ARC.dotted == "1.3.6.1.4.1.32473.2026"
    for oid in oids.DEFAULT_ARC.agent_extension_oids:
        assert oid.dotted_string in agent["extension_oids"], agent["extension_oids"]
    assert agent["policy_oids"] == [oids.DEFAULT_ARC.policy_agent_v1.dotted_string]
    assert agent["ekus"] == [CLIENT_AUTH]
    assert agent["unknown_ekus"] == [oids.DEFAULT_ARC.kp_agent_request_signing.dotted_string]
    assert agent["key_usage"] & 1  # x509.KeyUsageDigitalSignature
    assert not agent["key_usage"] & (32 | 64)  # KeyUsageCertSign, KeyUsageCRLSign


# ---------------------------------------------------------------------------------- verify
def test_go_verifies_the_chain_for_client_auth(issued: Issued, x509check: Path) -> None:
    verdict = _chain(issued, x509check, "-eku", "client")
    assert verdict["verified"], verdict["verify_error"]
    assert verdict["chains"] == [
        [
            "CN=go-agent,O=agentca development",
            "CN=agentca Issuing CA,O=agentca development",
            "CN=agentca Root CA,O=agentca development",
        ]
    ]
    assert _chain(issued, x509check, "-eku", "any")["verified"]


def test_go_refuses_the_chain_after_expiry(issued: Issued, x509check: Path) -> None:
    cert = x509.load_pem_x509_certificate(issued.agent.read_bytes())
    late = (cert.not_valid_after_utc + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    verdict = _chain(issued, x509check, "-time", late)
    assert not verdict["verified"]
    assert "certificate has expired or is not yet valid" in verdict["verify_error"]


def test_go_refuses_the_chain_under_another_root(
    issued: Issued, x509check: Path, tmp_path: Path
) -> None:
    foreign = self_signed(tmp_path / "foreign.pem", None, "Foreign Root")
    verdict = go_verify(
        x509check, "-roots", str(foreign), "-intermediates", str(issued.issuing),
        "-leaf", str(issued.agent),
    )  # fmt: skip
    assert not verdict["verified"]
    assert "certificate signed by unknown authority" in verdict["verify_error"]


def test_go_refuses_an_agent_of_another_agentca_ca(
    issued: Issued, x509check: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two default CAs share names (CN=agentca Root CA, ...) but not keys: no cross-trust."""
    other_dir = tmp_path_factory.mktemp("go-other-ca") / "data"
    other_work = tmp_path_factory.mktemp("go-other-work")
    init_ca(other_dir, {}, other_work)
    stranger, _ = issue(other_dir, {}, other_work, "go-stranger")
    for intermediates in (issued.issuing, other_work / "issuing.pem"):
        verdict = go_verify(
            x509check, "-roots", str(issued.root), "-intermediates", str(intermediates),
            "-leaf", str(stranger),
        )  # fmt: skip
        assert not verdict["verified"]
        assert "certificate signed by unknown authority" in verdict["verify_error"]
    own = go_verify(
        x509check, "-roots", str(other_work / "root.pem"),
        "-intermediates", str(other_work / "issuing.pem"), "-leaf", str(stranger),
    )  # fmt: skip
    assert own["verified"], own["verify_error"]


def test_go_refuses_the_chain_without_the_issuing_ca(issued: Issued, x509check: Path) -> None:
    verdict = go_verify(x509check, "-roots", str(issued.root), "-leaf", str(issued.agent))
    assert not verdict["verified"]
    assert "certificate signed by unknown authority" in verdict["verify_error"]


# ------------------------------------------------------------------------ why the arc moved
def test_go_refuses_a_certificate_under_the_legacy_uuid_arc(
    x509check: Path, tmp_path: Path
) -> None:
    legacy = self_signed(tmp_path / "legacy.pem", f"{oids.LEGACY_ARC}.1.1")
    verdict = go_verify(x509check, "-roots", str(legacy), "-leaf", str(legacy))
    errors = [c.get("error") for c in verdict["certificates"]]
    assert errors == ["x509: malformed extension OID field"] * 2, verdict
    assert not verdict["verified"]
    control = self_signed(tmp_path / "control.pem", f"{oids.DEFAULT_ARC.dotted}.1.1")
    verdict = go_verify(x509check, "-roots", str(control), "-leaf", str(control), "-eku", "any")
    assert [c.get("error") for c in verdict["certificates"]] == [None, None]
    assert verdict["verified"], verdict["verify_error"]


# ---------------------------------------------------------------------------------- SPIFFE bundle
@pytest.fixture(scope="module")
def ca_api(issued: Issued) -> Iterator[str]:
    """``agentca serve`` over the CA of :func:`issued`."""
    with agentca_server(["serve", "--workers", "1"], issued.data_dir, "/health") as (base, _p):
        yield base


def test_go_verifies_with_roots_from_the_spiffe_bundle_endpoint(
    issued: Issued, x509check: Path, ca_api: str, tmp_path: Path
) -> None:
    import urllib.request

    with urllib.request.urlopen(ca_api + "/spiffe/bundle.json", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        (tmp_path / "bundle.json").write_bytes(resp.read())
    verdict = go_verify(
        x509check, "-bundle", str(tmp_path / "bundle.json"),
        "-intermediates", str(issued.issuing), "-leaf", str(issued.agent),
    )  # fmt: skip
    assert verdict["bundle_roots"] == 1
    assert verdict["certificates"][0]["subject"] == "CN=agentca Root CA,O=agentca development"
    assert verdict["verified"], verdict["verify_error"]
    # The bundle carries no intermediate: without the issuing CA the leaf does not verify.
    alone = go_verify(
        x509check, "-bundle", str(tmp_path / "bundle.json"), "-leaf", str(issued.agent)
    )
    assert not alone["verified"]


def test_the_cli_chain_is_what_go_verified(issued: Issued) -> None:
    """The PEM files the Go checks read are the CA's own, not copies made by the test."""
    chain = run_cli("chain", data_dir=issued.data_dir).stdout
    assert issued.issuing.read_text() in chain and issued.root.read_text() in chain
