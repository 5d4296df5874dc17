"""Which audit certificates ``ca.ledger.trust`` accepts: root or issuing CA as anchor, the
ledger-signing EKU, validity at the checkpoint's time, pinning; each refusal's reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.ledger.entries import Checkpoint, sign_checkpoint
from ca.ledger.signer import build_audit_certificate, rotation_due
from ca.ledger.trust import LedgerTrust, checkpoint_problem
from ca.oids import DEFAULT_ARC, LEGACY_ARC, OidArc

T0 = datetime(2027, 1, 1, tzinfo=UTC)
ROOT_HASH = bytes(32)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    parent_name, parent_key = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=365))
        .not_valid_after(T0 + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent_key.public_key()),
            critical=False,
        )
    )
    return b.sign(parent_key, hashes.SHA256())


class Hierarchy:
    """A root and an issuing CA made with cryptography (as agentca makes its own)."""

    def __init__(self, label: str) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca(f"{label} root", self.root_key, None)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = _ca(f"{label} issuing", self.issuing_key, (self.root, self.root_key))

    def audit(
        self,
        arc: OidArc = DEFAULT_ARC,
        not_before: datetime = T0 - timedelta(days=1),
        not_after: datetime = T0 + timedelta(days=825),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = build_audit_certificate(
            key.public_key(), "test", self.issuing, self.issuing_key, not_before, not_after, arc
        )
        return cert, key

    def without_eku(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Chained like an audit certificate, but for TLS clients (no ledger-signing EKU)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("not an audit key"))
            .issuer_name(self.issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(T0 - timedelta(days=1))
            .not_valid_after(T0 + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing_key.public_key()),
                critical=False,
            )
            .sign(self.issuing_key, hashes.SHA256())
        )
        return cert, key


def _checkpoint(
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], at: datetime = T0
) -> Checkpoint:
    cert, key = signer
    return sign_checkpoint(7, ROOT_HASH, at, key, cert)


@pytest.fixture(scope="module")
def ca() -> Hierarchy:
    return Hierarchy("agentca")


def test_root_and_issuing_ca_are_anchors(ca: Hierarchy) -> None:
    cp = _checkpoint(ca.audit())
    assert checkpoint_problem(cp, LedgerTrust((ca.root,)), [ca.issuing]) is None
    assert checkpoint_problem(cp, LedgerTrust((ca.issuing,))) is None
    assert checkpoint_problem(cp, LedgerTrust((ca.root,), (ca.issuing,))) is None


def test_the_root_alone_cannot_build_the_path(ca: Hierarchy) -> None:
    problem = checkpoint_problem(_checkpoint(ca.audit()), LedgerTrust((ca.root,)))
    assert problem is not None and "does not chain to the trusted certificate" in problem


def test_pinning_the_audit_certificate_still_works(ca: Hierarchy) -> None:
    signer = ca.audit()
    cp = _checkpoint(signer)
    assert checkpoint_problem(cp, LedgerTrust((signer[0],))) is None
    other = ca.audit()[0]
    assert checkpoint_problem(cp, LedgerTrust((other,))) == (
        "the checkpoint was signed by a certificate other than the trusted one"
    )


def test_foreign_root_is_refused(ca: Hierarchy) -> None:
    foreign = Hierarchy("foreign")
    cp = _checkpoint(foreign.audit())
    problem = checkpoint_problem(cp, LedgerTrust((ca.root,)), [foreign.issuing, foreign.root])
    assert problem is not None
    assert problem.startswith("the audit certificate (CN=agentca ledger audit,O=test, issued by")
    assert "foreign issuing) does not chain to the trusted certificate" in problem


def test_certificate_without_the_audit_eku_is_refused(ca: Hierarchy) -> None:
    cp = _checkpoint(ca.without_eku())
    problem = checkpoint_problem(cp, LedgerTrust((ca.root,)), [ca.issuing])
    assert problem == (
        "the audit certificate (CN=not an audit key) does not carry the ledger-signing EKU "
        "id-kp-agentcaLedgerSigning (1.3.6.1.4.1.32473.2026.3.2, "
        "2.25.40108673889173621464063845417476256764.3.2)"
    )


def test_eku_under_the_ca_arcs_current_and_previous(ca: Hierarchy) -> None:
    custom = OidArc("1.3.6.1.4.1.99999.7")
    cp = _checkpoint(ca.audit(arc=custom))
    trust = LedgerTrust((ca.root,), (ca.issuing,))
    refused = checkpoint_problem(cp, trust)
    assert refused is not None and "does not carry the ledger-signing EKU" in refused
    assert checkpoint_problem(cp, trust, carried_arcs=[DEFAULT_ARC, custom]) is None
    legacy = _checkpoint(ca.audit(arc=LEGACY_ARC))
    assert checkpoint_problem(legacy, trust) is None
    pinned = LedgerTrust((ca.root,), (ca.issuing,), (custom,))
    refused = checkpoint_problem(legacy, pinned)
    assert refused is not None and "(1.3.6.1.4.1.99999.7.3.2)" in refused


def test_validity_is_judged_at_the_checkpoint_time(ca: Hierarchy) -> None:
    short = ca.audit(not_before=T0 - timedelta(days=10), not_after=T0 + timedelta(days=1))
    trust = LedgerTrust((ca.root,), (ca.issuing,))
    # signed inside its validity: verifies whenever checked (the certificate has since expired)
    assert checkpoint_problem(_checkpoint(short, T0), trust) is None
    late = _checkpoint(short, T0 + timedelta(days=2))
    assert checkpoint_problem(late, trust) == (
        "the checkpoint was signed at 2027-01-03T00:00:00.000000Z, outside the audit "
        "certificate's validity (2026-12-22T00:00:00Z to 2027-01-02T00:00:00Z)"
    )
    # pinning does not lift the validity rule
    assert checkpoint_problem(late, LedgerTrust((short[0],))) is not None


def test_a_changed_checkpoint_fails_its_signature(ca: Hierarchy) -> None:
    cp = _checkpoint(ca.audit())
    forged = Checkpoint(
        cp.tree_size + 1, cp.root_hash, cp.timestamp, cp.signature, cp.certificate_der
    )
    assert checkpoint_problem(forged, LedgerTrust((ca.root,), (ca.issuing,))) == (
        "the checkpoint signature does not verify"
    )


def test_rotation_is_due_ahead_of_expiry(ca: Hierarchy) -> None:
    cert, _ = ca.audit(not_after=T0 + timedelta(days=40))
    assert not rotation_due(cert, T0)
    assert rotation_due(cert, T0 + timedelta(days=11))
