"""GnuTLS parses agentca certificates, verifies the agent chain and checks status over OCSP.

A CA made by ``agentca init`` with the default settings (SQLite, a managed SoftHSM2 token,
the default OID arc) issues two agent certificates through ``agentca issue`` and revokes one
(``agentca revoke``). ``certtool -i`` parses root, issuing CA and agent certificates and
``certtool --verify`` accepts the chain for TLS client authentication; ``ocsptool --ask``
queries the real read-only responder (``agentca ocsp serve``, its own responder token),
verifies the response signed by the delegated responder and reports good and revoked.
Negative controls: the legacy UUID arc fails GnuTLS's DER parser, the chain does not verify
under another root or for serverAuth, and an OCSP response is not trusted under another CA.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from tests.integration.conftest import run_cli
from tests.integration.servers import agentca_server
from tests.integration.test_go_x509 import self_signed
from tests.integration.test_ocsp_interop import init_ca, issue
from wire import oids

pytestmark = pytest.mark.integration

CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one GnuTLS tool, bounded."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class GnutlsCa:
    """A default CA, a good and a revoked agent certificate, and its OCSP responder."""

    work: Path
    good: Path
    revoked: Path
    ocsp_url: str

    @property
    def root(self) -> Path:
        return self.work / "root.pem"

    @property
    def issuing(self) -> Path:
        return self.work / "issuing.pem"

    def chain(self, leaf: Path) -> Path:
        """``leaf`` followed by the issuing CA, as a TLS client would present them."""
        out = leaf.with_suffix(".chain.pem")
        out.write_text(leaf.read_text() + self.issuing.read_text())
        return out


@pytest.fixture(scope="module")
def gnutls_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnutlsCa]:
    data_dir = tmp_path_factory.mktemp("gnutls-ca") / "data"
    work = tmp_path_factory.mktemp("gnutls-work")
    init_ca(data_dir, {}, work)
    good, _ = issue(data_dir, {}, work, "gnutls-good")
    revoked, serial = issue(data_dir, {}, work, "gnutls-revoked")
    done = run_cli("revoke", serial, "--reason", "keyCompromise", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    with agentca_server(["ocsp", "serve", "--workers", "1"], data_dir, "/health") as (base, _p):
        yield GnutlsCa(work, good, revoked, base + "/ocsp")


# ---------------------------------------------------------------------------------- certtool -i
def test_certtool_parses_root_issuing_and_agent(gnutls_ca: GnutlsCa) -> None:
    for pem in (gnutls_ca.root, gnutls_ca.issuing, gnutls_ca.good):
        out = tool("certtool", "-i", "--infile", str(pem))
        assert out.returncode == 0, out.stderr
        assert "X.509 Certificate Information:" in out.stdout
    agent = tool("certtool", "-i", "--infile", str(gnutls_ca.good)).stdout
    assert "URI: spiffe://agentca.local/agent/gnutls-good" in agent
    assert (
        "TLS WWW Client." in agent
        and oids.DEFAULT_ARC.kp_agent_request_signing.dotted_string in agent
    )
    assert "Certificate Authority (CA): FALSE" in agent
    for oid in oids.DEFAULT_ARC.agent_extension_oids:
        assert f"Unknown extension {oid.dotted_string} (not critical):" in agent


def test_certtool_refuses_the_legacy_uuid_arc(tmp_path: Path) -> None:
    legacy = self_signed(tmp_path / "legacy.pem", f"{oids.LEGACY_ARC}.1.1")
    out = tool("certtool", "-i", "--infile", str(legacy))
    assert out.returncode != 0
    assert "ASN1 parser: Error in DER parsing" in out.stderr
    control = self_signed(tmp_path / "control.pem", f"{oids.DEFAULT_ARC.dotted}.1.1")
    assert tool("certtool", "-i", "--infile", str(control)).returncode == 0


# ------------------------------------------------------------------------ certtool --verify
def _verify(ca: Path, chain: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    return tool(
        "certtool", "--verify", "--verify-profile=high", "--load-ca-certificate", str(ca),
        "--infile", str(chain), "--verify-purpose", purpose,
    )  # fmt: skip


def test_certtool_verifies_the_agent_chain_for_client_auth(gnutls_ca: GnutlsCa) -> None:
    out = _verify(gnutls_ca.root, gnutls_ca.chain(gnutls_ca.good), CLIENT_AUTH)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Chain verification output: Verified. The certificate is trusted." in out.stdout


def test_certtool_refuses_the_chain_for_server_auth(gnutls_ca: GnutlsCa) -> None:
    out = _verify(gnutls_ca.root, gnutls_ca.chain(gnutls_ca.good), SERVER_AUTH)
    assert out.returncode != 0
    assert "does not match the intended purpose" in out.stdout


def test_certtool_refuses_the_chain_under_another_root(gnutls_ca: GnutlsCa, tmp_path: Path) -> None:
    foreign = self_signed(tmp_path / "foreign.pem", None, "Foreign Root")
    out = _verify(foreign, gnutls_ca.chain(gnutls_ca.good), CLIENT_AUTH)
    assert out.returncode != 0
    assert "Not verified. The certificate is NOT trusted." in out.stdout


# ---------------------------------------------------------------------------------- ocsptool
def _ask(
    ca: GnutlsCa, cert: Path, *extra: str, trust: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return tool(
        "ocsptool", f"--ask={ca.ocsp_url}", "--load-issuer", str(ca.issuing),
        "--load-cert", str(cert), "--load-trust", str(trust or ca.issuing), *extra,
    )  # fmt: skip


@pytest.mark.parametrize("nonce", ["--nonce", "--no-nonce"])
def test_ocsptool_verifies_good(gnutls_ca: GnutlsCa, nonce: str) -> None:
    out = _ask(gnutls_ca, gnutls_ca.good, nonce)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Response Status: Successful" in out.stdout
    assert "Certificate Status: good" in out.stdout
    assert "Verifying OCSP Response: Success." in out.stdout
    assert ("Nonce: " in out.stdout) is (nonce == "--nonce")


@pytest.mark.parametrize("nonce", ["--nonce", "--no-nonce"])
def test_ocsptool_verifies_revoked(gnutls_ca: GnutlsCa, nonce: str, tmp_path: Path) -> None:
    saved = tmp_path / "response.der"
    out = _ask(gnutls_ca, gnutls_ca.revoked, nonce, "--outfile", str(saved))
    # ocsptool's exit status is the response's verification, not the certificate's status.
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verifying OCSP Response: Success." in out.stdout
    assert "Certificate Status: revoked" in out.stdout
    assert "Revocation time: " in out.stdout
    # ocsptool prints no reason: read the very response it verified.
    response = ocsp.load_der_ocsp_response(saved.read_bytes())
    cert = x509.load_pem_x509_certificate(gnutls_ca.revoked.read_bytes())
    assert response.serial_number == cert.serial_number
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_ocsptool_does_not_trust_a_response_under_another_ca(
    gnutls_ca: GnutlsCa, tmp_path: Path
) -> None:
    foreign = self_signed(tmp_path / "foreign.pem", None, "Foreign CA")
    out = _ask(gnutls_ca, gnutls_ca.good, "--nonce", trust=foreign)
    assert out.returncode != 0
    assert "Certificate Status: good" in out.stdout  # the answer came, but is not trusted
    assert "Verifying OCSP Response: Failure, Signer cert is not trusted." in out.stdout
