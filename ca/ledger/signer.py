"""The audit key: generated in the HSM, certified by the issuing CA, signs checkpoints."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ca.authority import CertificateAuthority
from ca.errors import CAError, ErrorCode
from ca.ledger.entries import Checkpoint, sign_checkpoint
from ca.ledger.store import LedgerStore, append
from ca.oids import OidArc
from ca.profile import BACKDATE, signature_hash, signing_only_key_usage
from ca.serials import new_serial
from ca.store.models import AuditSigner
from hsm import SigningKey

AUDIT_VALIDITY = timedelta(days=825)


def build_audit_certificate(
    public_key: CertificatePublicKeyTypes,
    organization: str,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    not_before: datetime,
    not_after: datetime,
    arc: OidArc,
) -> x509.Certificate:
    """The audit signer certificate: digitalSignature, EKU ledgerSigning of ``arc`` (the
    issuing CA's recorded arc), not a CA."""
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.COMMON_NAME, "agentca ledger audit"),
                ]
            )
        )
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            signing_only_key_usage(),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([arc.kp_ledger_signing]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


class CheckpointSigner:
    """Signs checkpoints of the ledger with the audit signer (created on first use)."""

    def __init__(self, authority: CertificateAuthority, store: LedgerStore) -> None:
        self.authority = authority
        self.store = store

    def signer(self) -> tuple[int, x509.Certificate, SigningKey]:
        """(id, certificate, HSM key) of the audit signer, created on first need."""
        from hsm import KeyType

        ca = self.authority
        with ca.sessions() as s:
            row = s.scalar(select(AuditSigner).order_by(AuditSigner.id.desc()).limit(1))
            if row is not None:
                return (
                    row.id,
                    x509.load_der_x509_certificate(row.certificate_der),
                    ca.keys.get(row.key_label),
                )
        issuing = ca.hierarchy.signing_issuer()
        label = f"agentca-audit-{secrets.token_hex(4)}"
        key = ca.keys.generate(label, KeyType.EC_P256)
        now = ca.clock()
        cert = build_audit_certificate(
            key.public_key(),
            ca.settings.organization,
            issuing.certificate,
            issuing.key,
            now - BACKDATE,
            now + AUDIT_VALIDITY,
            ca.hierarchy.arc_state().current,
        )
        with ca.sessions.begin() as s:
            row = AuditSigner(
                key_label=label,
                certificate_der=cert.public_bytes(serialization.Encoding.DER),
                created_at=now,
            )
            s.add(row)
            s.flush()
            append(
                s,
                "system",
                "audit.signer.created",
                {"key_label": label, "certificate_sha256": cert.fingerprint(hashes.SHA256()).hex()},
                now,
            )
            signer_id = row.id
        return signer_id, cert, key

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the ledger as it is now."""
        signer_id, cert, key = self.signer()
        size = self.store.size()
        root = self.store.root(size)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(ErrorCode.INTERNAL, "the audit key is not an EC key")
        cp = sign_checkpoint(size, root, self.authority.clock(), key, cert)
        self.store.store_checkpoint(cp, signer_id)
        return cp
