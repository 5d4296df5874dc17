"""The audit certificates on record: read from the database only (no HSM, nothing created).

Every audit certificate the CA ever made stays in ``audit_signers`` (one row each, newest
last): rotation adds a row, it never replaces one, so each checkpoint keeps the certificate
that signed it (``ledger_checkpoints.signer_id``) and exports can carry them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca.errors import CAError, ErrorCode
from ca.ledger.entries import format_time
from ca.queries import issuer_chain_pem, read_arc_state
from ca.store.models import AuditSigner

NO_AUDIT_CERTIFICATE = (
    "no audit certificate yet: the first 'agentca ledger checkpoint' creates it "
    "(or 'agentca audit rotate-certificate')"
)


@dataclass(frozen=True)
class AuditCertificate:
    """One audit certificate on record."""

    signer_id: int
    key_label: str
    certificate: x509.Certificate
    created_at: datetime

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def fingerprint_sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def summary(self) -> dict[str, Any]:
        """The fields ``audit certificate --json`` prints (serial as an integer: the CLI
        spells it)."""
        c = self.certificate
        return {
            "serial": c.serial_number,
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "not_before": rfc3339(c.not_valid_before_utc),
            "not_after": rfc3339(c.not_valid_after_utc),
            "fingerprint_sha256": self.fingerprint_sha256,
            "key_label": self.key_label,
            "pem": self.pem,
        }


def rfc3339(t: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, whole seconds."""
    return format_time(t)[:19] + "Z"


def audit_certificates(session: Session) -> list[AuditCertificate]:
    """Every audit certificate on record, newest first."""
    rows = session.scalars(select(AuditSigner).order_by(AuditSigner.id.desc())).all()
    return [
        AuditCertificate(
            r.id, r.key_label, x509.load_der_x509_certificate(r.certificate_der), r.created_at
        )
        for r in rows
    ]


def current_audit_certificate(sessions: sessionmaker[Session]) -> AuditCertificate:
    """The audit certificate that signs new checkpoints; ``NOT_FOUND`` before the first."""
    with sessions() as s:
        found = audit_certificates(s)
    if not found:
        raise CAError(ErrorCode.NOT_FOUND, NO_AUDIT_CERTIFICATE)
    return found[0]


def audit_block(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """What an export carries for offline trust anchored at the root (decision 0027): every
    audit certificate, the CA chain (issuing CA, root) and every OID arc of the CA."""
    with sessions() as s:
        certs = audit_certificates(s)
        arcs = read_arc_state(s).every_arc
    chain = issuer_chain_pem(sessions)
    return {
        "certificates": [c.pem for c in certs],
        "chain": [c.public_bytes(serialization.Encoding.PEM).decode() for c in _split(chain)],
        "arcs": [a.dotted for a in arcs],
    }


def _split(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())
