"""The audit key: generated in the HSM, certified by the issuing CA, signs checkpoints; rotated
on demand (``agentca audit rotate-certificate``) and ahead of expiry (decision 0027)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
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
from ca.ledger.audit import AuditCertificate, audit_certificates, rfc3339
from ca.ledger.entries import Checkpoint, sign_checkpoint
from ca.ledger.store import LedgerStore, append
from ca.oids import OidArc
from ca.profile import BACKDATE, signature_hash, signing_only_key_usage
from ca.serials import new_serial, serial_to_hex
from ca.store.models import AuditSigner
from hsm import SigningKey

AUDIT_VALIDITY = timedelta(days=825)
#: A checkpoint signed this close to the audit certificate's expiry rotates it first, so no
#: checkpoint is ever signed by an expired (hence unverifiable) certificate.
ROTATE_BEFORE = timedelta(days=30)


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


@dataclass(frozen=True)
class RotationPlan:
    """What a rotation would do (``--dry-run``) or did: the certificate replaced (``None`` when
    there was none yet) and the validity of the new one."""

    previous: AuditCertificate | None
    not_before: datetime
    not_after: datetime


def rotation_plan(
    previous: AuditCertificate | None, issuing: x509.Certificate, now: datetime
) -> RotationPlan:
    """The new audit certificate's validity if one were made at ``now`` (pure)."""
    return RotationPlan(
        previous, now - BACKDATE, min(now + AUDIT_VALIDITY, issuing.not_valid_after_utc)
    )


def rotation_due(cert: x509.Certificate, now: datetime) -> bool:
    """True when a checkpoint at ``now`` should first rotate the audit certificate."""
    return cert.not_valid_after_utc <= now + ROTATE_BEFORE


class CheckpointSigner:
    """Signs checkpoints of a ledger (``store``: the issuance ledger, or the action ledger,
    decision 0056) with the audit signer (created on first use, rotated on demand and ahead of
    its expiry); both ledgers share the one audit key, their checkpoints name their ledger."""

    def __init__(self, authority: CertificateAuthority, store: LedgerStore) -> None:
        self.authority = authority
        self.store = store

    def signer(self) -> tuple[int, x509.Certificate, SigningKey]:
        """(id, certificate, HSM key) of the audit signer, created on first need and rotated
        when it would expire within :data:`ROTATE_BEFORE`."""
        ca = self.authority
        with ca.sessions() as s:
            row = s.scalar(select(AuditSigner).order_by(AuditSigner.id.desc()).limit(1))
            current = (
                None
                if row is None
                else (row.id, x509.load_der_x509_certificate(row.certificate_der), row.key_label)
            )
        if current is not None and not rotation_due(current[1], ca.clock()):
            return current[0], current[1], ca.keys.get(current[2])
        return self.rotate("system")

    def rotate(self, actor: str) -> tuple[int, x509.Certificate, SigningKey]:
        """Make a new audit key (non-extractable, in the HSM) and certificate, issued by the
        issuing CA; the previous ones stay on record. Ledger: ``audit.signer.created`` for the
        first, ``audit.certificate_rotated`` after."""
        from hsm import KeyType

        ca = self.authority
        with ca.sessions() as s:
            on_record = audit_certificates(s)
        previous = on_record[0] if on_record else None
        issuing = ca.hierarchy.signing_issuer()
        now = ca.clock()
        plan = rotation_plan(previous, issuing.certificate, now)
        label = f"agentca-audit-{secrets.token_hex(4)}"
        key = ca.keys.generate(label, KeyType.EC_P256)
        cert = build_audit_certificate(
            key.public_key(),
            ca.settings.organization,
            issuing.certificate,
            issuing.key,
            plan.not_before,
            plan.not_after,
            ca.hierarchy.arc_state().current,
        )
        body: dict[str, object] = {
            "key_label": label,
            "certificate_sha256": cert.fingerprint(hashes.SHA256()).hex(),
        }
        if previous is not None:
            body.update(
                serial=serial_to_hex(cert.serial_number),
                not_before=rfc3339(cert.not_valid_before_utc),
                not_after=rfc3339(cert.not_valid_after_utc),
                previous_serial=serial_to_hex(previous.certificate.serial_number),
                previous_certificate_sha256=previous.fingerprint_sha256,
            )
        with ca.sessions.begin() as s:
            row = AuditSigner(
                key_label=label,
                certificate_der=cert.public_bytes(serialization.Encoding.DER),
                created_at=now,
            )
            s.add(row)
            s.flush()
            event = "audit.signer.created" if previous is None else "audit.certificate_rotated"
            append(s, actor, event, body, now)
            signer_id = row.id
        return signer_id, cert, key

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the ledger as it is now (its name signed with it)."""
        signer_id, cert, key = self.signer()
        size = self.store.size()
        root = self.store.root(size)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(ErrorCode.INTERNAL, "the audit key is not an EC key")
        cp = sign_checkpoint(size, root, self.authority.clock(), key, cert, self.store.name)
        self.store.store_checkpoint(cp, signer_id)
        return cp
