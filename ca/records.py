"""Value objects handed out by the CA service (never ORM rows)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ca.revocation import RevocationReason

if TYPE_CHECKING:  # loaded where a certificate is decoded: `agentca list` needs none
    from cryptography import x509

#: ``issuers.role`` of the root and of the issuing CA.
ROOT_ROLE = "root"
ISSUING_ROLE = "issuing"


class CertStatus(enum.StrEnum):
    """Lifecycle of a certificate record (docs/architecture.md, the issuance cycle).

    The values are what the ``certificates.status`` column stores (a typed column checked by
    the database since migration 0009), and what the OCSP and CRL queries compare against.
    """

    PENDING = "pending"  # serial reserved, not yet signed
    ISSUED = "issued"
    REVOKED = "revoked"
    FAILED = "failed"  # signing failed or was abandoned; never answered "good"


@dataclass(frozen=True)
class CertificateRecord:
    """One agent certificate as recorded in the database."""

    issuer_name: str
    serial_hex: str
    status: CertStatus
    agent_name: str
    subject: str
    model_type: str
    model_digest: str
    prompt_digest: str
    config_digest: str | None
    scopes: tuple[str, ...]
    officer: str
    environment: str
    not_before: datetime
    not_after: datetime
    created_at: datetime
    issued_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    requested_by: str
    fingerprint_sha256: str | None
    certificate_der: bytes | None

    @property
    def certificate(self) -> x509.Certificate | None:
        return _load_der(self.certificate_der) if self.certificate_der else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no certificate bytes)."""
        return {
            "issuer": self.issuer_name,
            "serial": self.serial_hex,
            "status": self.status.value,
            "agent_name": self.agent_name,
            "subject": self.subject,
            "model_type": self.model_type,
            "model_digest": self.model_digest,
            "prompt_digest": self.prompt_digest,
            "config_digest": self.config_digest,
            "scopes": list(self.scopes),
            "officer": self.officer,
            "environment": self.environment,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issued_at": self.issued_at.isoformat() if self.issued_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revocation_reason": self.revocation_reason.text if self.revocation_reason else None,
            "requested_by": self.requested_by,
            "fingerprint_sha256": self.fingerprint_sha256,
        }


@dataclass(frozen=True)
class IssuerRecord:
    """A CA certificate known to this deployment."""

    name: str
    role: str
    key_label: str
    key_type: str
    certificate_der: bytes
    parent_name: str | None
    id: int = 0
    active: bool = True  # False: an issuing CA retired by a rollover (decision 0033)

    @property
    def certificate(self) -> x509.Certificate:
        return _load_der(self.certificate_der)


def _load_der(der: bytes) -> x509.Certificate:
    from cryptography import x509

    return x509.load_der_x509_certificate(der)
