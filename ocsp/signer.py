"""The delegated OCSP responder certificate (RFC 6960 section 4.2.2.2), as a pure builder."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.profile import signature_hash, signing_only_key_usage


def responder_name(issuer: x509.Certificate, serial: int) -> x509.Name:
    """``O`` of the issuer, ``CN=<issuer CN> OCSP Responder <serial tail>``."""
    cns = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = issuer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    cn = f"{str(cns[0].value) if cns else 'agentca'} OCSP Responder {serial & 0xFFFFFFFF:08x}"
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(orgs[0].value))] if orgs else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])


def build_responder_certificate(
    public_key: CertificatePublicKeyTypes,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    issuer_certificate: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    """A short-lived delegated responder certificate issued by the CA it answers for.

    KeyUsage digitalSignature (critical), EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck (so
    clients do not ask for the responder's own status), SKI/AKI; not a CA. The validity is
    clipped to the issuer's.
    """
    ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(responder_name(issuer_certificate, serial))
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            signing_only_key_usage(),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
            critical=False,
        )
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def needs_rotation(
    not_before: datetime, not_after: datetime, now: datetime, renew_fraction: float
) -> bool:
    """True once less than ``renew_fraction`` of the signer's lifetime remains."""
    lifetime = (not_after - not_before).total_seconds()
    return (not_after - now).total_seconds() < lifetime * renew_fraction
