"""The certificate page's "OCSP now": ask the certificate's own OCSP responder, as a relying
party would, and check the answer's signature (responder certificate issued by the issuing
CA, response signed by it). Bounded by a short timeout; a responder that cannot be reached
or answers badly is reported, never raised."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

TIMEOUT = 2.0  # seconds: the page waits no longer for the responder
MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class OcspAnswer:
    """What the responder said now (``status``: good, revoked, unknown) or why not."""

    url: str | None
    status: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    problem: str | None = None


def _ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP:
            value = desc.access_location.value
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                return value
    return None


def _signed_by(key: object, signature: bytes, data: bytes, algo: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algo)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def ask(cert: x509.Certificate, issuer: x509.Certificate) -> OcspAnswer:
    """The responder's answer for ``cert`` now, its signature checked up to ``issuer``."""
    url = _ocsp_url(cert)
    if url is None:
        return OcspAnswer(None, problem="the certificate names no OCSP responder")
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    request = urllib.request.Request(
        url, data=der, headers={"Content-Type": "application/ocsp-request"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
            body = resp.read(MAX_ANSWER + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return OcspAnswer(url, problem=f"the responder did not answer: {type(exc).__name__}")
    if len(body) > MAX_ANSWER:
        return OcspAnswer(url, problem="the responder's answer is too large")
    try:
        answer = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return OcspAnswer(url, problem="the responder's answer is not an OCSP response")
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspAnswer(url, problem=f"the responder answered {answer.response_status.name}")
    problem = _signature_problem(answer, issuer)
    if problem is not None:
        return OcspAnswer(url, problem=problem)
    if answer.serial_number != cert.serial_number:
        return OcspAnswer(url, problem="the responder answered for another certificate")
    return OcspAnswer(
        url,
        status=answer.certificate_status.name.lower(),
        this_update=answer.this_update_utc,
        next_update=answer.next_update_utc,
    )


def _signature_problem(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> str | None:
    algo = answer.signature_hash_algorithm
    if algo is None:
        return "the response's signature algorithm is not supported here"
    signer = issuer
    for candidate in answer.certificates:  # a delegated responder: issued by the CA for OCSP
        try:
            candidate.verify_directly_issued_by(issuer)
            eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            signer = candidate
            break
    if not _signed_by(signer.public_key(), answer.signature, answer.tbs_response_bytes, algo):
        return "the response's signature does not verify up to the issuing CA"
    return None
