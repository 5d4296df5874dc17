"""Pure certificate builders: the root, the issuing CA and the agent certificate profile.

Every function here is a function of its inputs (keys, names, times, serial, URLs); nothing
reads the clock, the environment or a database. Signing goes through whatever private-key
object is passed in: in production an HSM key from ``hsm/``, in unit tests a software key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ca.errors import CAError, ErrorCode
from ca.extensions import AgentExtensions, agent_x509_extensions
from ca.oids import DEFAULT_ARC, OidArc

BACKDATE = timedelta(seconds=60)  # tolerate small clock skew at relying parties


@dataclass(frozen=True)
class CertificateUrls:
    """Where relying parties find status and the issuer (AIA, CRL distribution point and,
    when the issuer publishes delta CRLs, Freshest CRL)."""

    ocsp_url: str
    ca_issuers_url: str
    crl_url: str
    delta_crl_url: str | None = None


@dataclass(frozen=True)
class AgentCertificateSpec:
    """Everything that goes into one agent certificate, already validated by policy."""

    serial: int
    agent_name: str
    organization: str
    trust_domain: str
    public_key: CertificatePublicKeyTypes
    extensions: AgentExtensions
    not_before: datetime
    not_after: datetime
    #: the arc of the agent OIDs: issuance passes the issuing CA's recorded arc (ca.arcs)
    oid_arc: OidArc = DEFAULT_ARC


def key_type_of(public_key: CertificatePublicKeyTypes) -> str:
    """Name a public key the way ``hsm.KeyType`` does (``ec-p256``, ``rsa-2048``...)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
        if public_key.curve.name in curves:
            return curves[public_key.curve.name]
        raise CAError(
            ErrorCode.UNSUPPORTED_KEY, f"EC curve {public_key.curve.name} is not supported"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size in (2048, 3072, 4096):
            return f"rsa-{public_key.key_size}"
        raise CAError(ErrorCode.UNSUPPORTED_KEY, f"RSA-{public_key.key_size} is not supported")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise CAError(ErrorCode.UNSUPPORTED_KEY, f"{type(public_key).__name__} keys are not supported")


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def signature_hash(issuer_key: CertificateIssuerPrivateKeyTypes) -> SignatureHash | None:
    """The digest an issuer signs with: matched to its strength; none for Ed25519."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def spiffe_id(trust_domain: str, agent_name: str) -> str:
    """The agent's SPIFFE ID, carried as its only URI SAN."""
    return f"spiffe://{trust_domain}/agent/{agent_name}"


def _name(common_name: str, organization: str | None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def build_root_certificate(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    organization: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A self-signed root: CA, path length 1, keyCertSign + cRLSign."""
    name = _name(common_name, organization)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, signature_hash(key))


def build_issuing_certificate(
    public_key: CertificatePublicKeyTypes,
    common_name: str,
    organization: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    issuer_certificate: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_crl_url: str | None = None,
    issuer_delta_crl_url: str | None = None,
) -> x509.Certificate:
    """An issuing (intermediate) CA under the root: path length 0, may only sign leaves.

    ``issuer_delta_crl_url`` (the root's delta CRL) adds a Freshest CRL extension."""
    builder = issuing_certificate_builder(
        public_key,
        common_name,
        organization,
        serial,
        not_before,
        not_after,
        issuer_certificate,
        issuer_crl_url,
        issuer_delta_crl_url,
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def issuing_certificate_builder(
    public_key: CertificatePublicKeyTypes,
    common_name: str,
    organization: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    issuer_certificate: x509.Certificate,
    issuer_crl_url: str | None = None,
    issuer_delta_crl_url: str | None = None,
) -> x509.CertificateBuilder:
    """The unsigned issuing CA certificate of :func:`build_issuing_certificate` (to lint it
    with a throwaway key before the root key signs it)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(issuer_certificate), critical=False)
    )
    if issuer_crl_url:
        builder = builder.add_extension(_crl_dp(issuer_crl_url), critical=False)
    if issuer_delta_crl_url:
        builder = builder.add_extension(freshest_crl(issuer_delta_crl_url), critical=False)
    return builder


def build_agent_certificate(
    spec: AgentCertificateSpec,
    issuer_certificate: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    urls: CertificateUrls,
) -> x509.Certificate:
    """The agent certificate profile (docs/architecture.md), signed by ``issuer_key``."""
    builder = agent_certificate_builder(spec, issuer_certificate, urls)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def agent_certificate_builder(
    spec: AgentCertificateSpec,
    issuer_certificate: x509.Certificate,
    urls: CertificateUrls,
) -> x509.CertificateBuilder:
    """The unsigned agent certificate: sign it with ``ca.lint.sign_linted`` (or directly)."""
    if spec.not_after <= spec.not_before:
        raise CAError(ErrorCode.INVALID_VALIDITY, "notAfter must be later than notBefore")
    not_after = spec.not_after
    if not_after > issuer_certificate.not_valid_after_utc:
        raise CAError(
            ErrorCode.INVALID_VALIDITY,
            "the requested validity ends after the issuing CA certificate expires",
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.agent_name, spec.organization))
        .issuer_name(issuer_certificate.subject)
        .public_key(spec.public_key)
        .serial_number(spec.serial)
        .not_valid_before(spec.not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            signing_only_key_usage(),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, spec.oid_arc.kp_agent_request_signing]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id(spec.trust_domain, spec.agent_name))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(spec.public_key), critical=False)
        .add_extension(_aki(issuer_certificate), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(urls.ocsp_url),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(urls.ca_issuers_url),
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(_crl_dp(urls.crl_url), critical=False)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(spec.oid_arc.policy_agent_v1, None)]),
            critical=False,
        )
    )
    if urls.delta_crl_url:
        builder = builder.add_extension(freshest_crl(urls.delta_crl_url), critical=False)
    for value, critical in agent_x509_extensions(spec.extensions, spec.oid_arc):
        builder = builder.add_extension(value, critical=critical)
    return builder


def signing_only_key_usage() -> x509.KeyUsage:
    """KeyUsage digitalSignature alone: agent, OCSP responder and audit signer certificates."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_certificate.public_key()  # type: ignore[arg-type]
        )


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([_distribution_point(url)])


def freshest_crl(url: str) -> x509.FreshestCRL:
    """Freshest CRL (RFC 5280 4.2.1.15, non-critical): one distribution point, the delta URL."""
    return x509.FreshestCRL([_distribution_point(url)])


def _distribution_point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
