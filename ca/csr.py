"""Parsing and checking PKCS#10 certificate signing requests (pure)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.errors import CAError, ErrorCode
from ca.profile import key_type_of

MAX_CSR_BYTES = 16 * 1024


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load a CSR from PEM or DER and check that its self-signature verifies.

    Raises ``BAD_CSR`` for anything that is not a well-formed PKCS#10 request and
    ``CSR_SIGNATURE`` when the request does not prove possession of its key.
    """
    if not data:
        raise CAError(ErrorCode.BAD_CSR, "the CSR is empty")
    if len(data) > MAX_CSR_BYTES:
        raise CAError(ErrorCode.TOO_LARGE, f"the CSR exceeds {MAX_CSR_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CAError(
            ErrorCode.BAD_CSR, "the CSR is not a valid PKCS#10 request in PEM or DER"
        ) from exc
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise CAError(
            ErrorCode.UNSUPPORTED_KEY, "the CSR's public key type is not supported"
        ) from exc
    key_type_of(public_key)  # raises UNSUPPORTED_KEY for DSA, P-521, RSA-1024...
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and friends
        raise CAError(ErrorCode.BAD_CSR, "the CSR's signature algorithm is not supported") from exc
    if not valid:
        raise CAError(ErrorCode.CSR_SIGNATURE, "the CSR's signature does not verify with its key")
    return csr


def csr_public_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    """The CSR's subject public key (already checked by :func:`load_csr`)."""
    return csr.public_key()
