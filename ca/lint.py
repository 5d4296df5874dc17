"""Lint before signing, as Boulder does: the exact to-be-signed certificate is checked before
the issuing (HSM) key signs it.

:func:`sign_linted` first signs the builder with an in-process throwaway key of the issuer
key's family (cached per process; the TBS signature-algorithm field depends only on the family
and the hash, so it is identical), decodes that lint certificate with the strict decoder the
gateway uses (:func:`wire.extensions.read_agent_extensions`) and checks that the agent
extensions equal what was requested and that the profile holds (end entity, the request-signing
EKU, agent extensions non-critical). Only then does the real key sign; the real certificate's
``tbs_certificate_bytes`` must equal the linted TBS byte for byte. Any failure is
``CAError(INTERNAL)`` and nothing is issued. The cost is measured by ``make bench-lint``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ca.errors import CAError, ErrorCode
from ca.extensions import AgentExtensions
from ca.profile import (
    AgentCertificateSpec,
    CertificateUrls,
    agent_certificate_builder,
    signature_hash,
)
from wire import extensions as wire_ext
from wire.oids import DEFAULT_ARC, OidArc

__all__ = [
    "LintError",
    "lint_certificate",
    "lint_freshest_crl",
    "lint_key_for",
    "sign_ca_linted",
    "sign_linted",
]

#: RSA lint keys only need the same AlgorithmIdentifier, not the issuer's size: the smallest
#: size cryptography generates keeps the lint signature cheap.
_RSA_LINT_BITS: Final = 1024

_lock = threading.Lock()
_keys: dict[str, CertificateIssuerPrivateKeyTypes] = {}


class LintError(CAError):
    """The to-be-signed certificate failed the lint (a CA defect; nothing was issued)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.INTERNAL, f"certificate lint: {detail}")


def _family(issuer_key: object) -> str:
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        return "ec"
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise LintError(f"no lint key for issuer key type {type(issuer_key).__name__}")


def lint_key_for(issuer_key: object) -> CertificateIssuerPrivateKeyTypes:
    """The process's throwaway key of ``issuer_key``'s family (made once, then cached)."""
    family = _family(issuer_key)
    key = _keys.get(family)
    if key is None:
        with _lock:
            key = _keys.get(family)
            if key is None:
                if family == "ec":  # ecdsa-with-SHAxxx does not name the curve
                    key = ec.generate_private_key(ec.SECP256R1())
                elif family == "rsa":
                    key = rsa.generate_private_key(65537, _RSA_LINT_BITS)
                else:
                    key = ed25519.Ed25519PrivateKey.generate()
                _keys[family] = key
    return key


def _provenance_fields(p: wire_ext.Provenance) -> tuple[object, ...]:
    def d(x: wire_ext.Digest | None) -> tuple[bytes, str] | None:
        return None if x is None else (x.value, x.algorithm)

    return (
        p.model_type,
        d(p.model_digest),
        d(p.prompt_digest),
        d(p.config_digest),
        p.model_digest_scheme,
    )


def lint_certificate(
    cert: x509.Certificate, expected: AgentExtensions, arc: OidArc = DEFAULT_ARC
) -> None:
    """Check ``cert`` as the gateway will read it, under exactly the issuing CA's ``arc``;
    :class:`LintError` on the first defect."""
    try:
        got = wire_ext.read_agent_extensions(cert, (arc,))
    except wire_ext.ExtensionError as exc:
        raise LintError(str(exc)) from None
    if _provenance_fields(got.provenance) != _provenance_fields(expected.provenance):
        raise LintError("AgentProvenance differs from the requested value")
    if got.scope_list != expected.authorization.scopes:
        raise LintError("AgentAuthorization differs from the requested scopes")
    acc = expected.accountability
    if (got.officer, got.environment, got.organization) != (
        acc.officer,
        acc.environment,
        acc.organization,
    ):
        raise LintError("AgentAccountability differs from the requested value")
    if got.attestation != expected.attestation:
        raise LintError("AgentAttestation differs from the requested value")
    try:
        exts = cert.extensions
        basic = exts.get_extension_for_class(x509.BasicConstraints).value
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise LintError(f"profile extension missing or malformed: {exc}") from None
    if basic.ca:
        raise LintError("an agent certificate must not be a CA")
    if arc.kp_agent_request_signing not in list(eku):
        raise LintError(f"the request-signing extended key usage of arc {arc} is missing")
    try:
        policies = exts.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        raise LintError("the certificate policy is missing") from None
    if [p.policy_identifier for p in policies] != [arc.policy_agent_v1]:
        raise LintError(f"the certificate policy is not id-agentca-policy-agent-v1 of arc {arc}")
    for oid in arc.agent_extension_oids:
        if exts.get_extension_for_oid(oid).critical:
            raise LintError(f"agent extension {arc.names[oid.dotted_string]} is critical")


def lint_freshest_crl(cert: x509.Certificate, delta_crl_url: str | None) -> None:
    """Freshest CRL (RFC 5280 4.2.1.15) as the issuer's complete CRL names its delta: present,
    non-critical, exactly one distribution point whose only name is ``delta_crl_url``; absent
    when the issuer publishes no delta CRL (``delta_crl_url`` None). :class:`LintError` else."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.FreshestCRL)
    except x509.ExtensionNotFound:
        if delta_crl_url is not None:
            raise LintError("the Freshest CRL extension (the delta CRL URL) is missing") from None
        return
    except ValueError as exc:
        raise LintError(f"malformed extension: {exc}") from None
    if delta_crl_url is None:
        raise LintError("Freshest CRL present, but the issuer publishes no delta CRL")
    if ext.critical:
        raise LintError("the Freshest CRL extension must be non-critical")
    points = list(ext.value)
    names = [
        n.value
        for p in points
        for n in (p.full_name or [])
        if isinstance(n, x509.UniformResourceIdentifier)
    ]
    if len(points) != 1 or names != [delta_crl_url] or len(points[0].full_name or []) != 1:
        raise LintError(f"Freshest CRL names {names}, the delta CRL is at {delta_crl_url}")
    point = points[0]
    if point.reasons is not None or point.crl_issuer is not None:
        raise LintError("the Freshest CRL distribution point must not carry reasons or cRLIssuer")


def sign_ca_linted(
    builder: x509.CertificateBuilder,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None,
    check: Callable[[x509.Certificate], None],
) -> x509.Certificate:
    """A CA certificate: ``check`` on ``builder``'s certificate signed with the throwaway key,
    then (if it passed) signed with ``issuer_key``; the two must have the same TBS."""
    linted = builder.sign(lint_key_for(issuer_key), algorithm)
    check(linted)
    cert = builder.sign(issuer_key, algorithm)
    if cert.tbs_certificate_bytes != linted.tbs_certificate_bytes:
        raise LintError("the signed CA certificate differs from the linted one")
    return cert


def sign_linted(
    builder: x509.CertificateBuilder,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None,
    expected: AgentExtensions,
    arc: OidArc = DEFAULT_ARC,
    also: Callable[[x509.Certificate], None] | None = None,
) -> x509.Certificate:
    """Lint ``builder``'s certificate (plus the check ``also``, if given), then sign it with
    ``issuer_key`` (see the module doc)."""
    linted = builder.sign(lint_key_for(issuer_key), algorithm)
    lint_certificate(linted, expected, arc)
    if also is not None:
        also(linted)
    cert = builder.sign(issuer_key, algorithm)
    if cert.tbs_certificate_bytes != linted.tbs_certificate_bytes:
        raise LintError("the signed TBS certificate differs from the linted one")
    return cert


def sign_agent_certificate(
    spec: AgentCertificateSpec,
    issuer_certificate: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    urls: CertificateUrls,
) -> x509.Certificate:
    """The agent certificate of ``spec``, linted and then signed by ``issuer_key``: what
    issuance signs with (``ca.issuance.Issuance.sign``).

    The signed certificate must also verify under ``issuer_certificate``: a key store that
    hands out the wrong key (a stale PKCS#11 handle, a mislabelled key) yields an error, never a
    stored certificate no verifier accepts (about 0.1 ms for a P-256 issuer).
    """
    builder = agent_certificate_builder(spec, issuer_certificate, urls)
    cert = sign_linted(
        builder,
        issuer_key,
        signature_hash(issuer_key),
        spec.extensions,
        spec.oid_arc,
        also=lambda linted: lint_freshest_crl(linted, urls.delta_crl_url),
    )
    try:
        cert.verify_directly_issued_by(issuer_certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise LintError(
            "the signed certificate does not verify under the issuing CA certificate "
            "(the key store signed with another key)"
        ) from exc
    return cert
