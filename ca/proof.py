"""Proof of possession for renewal: the agent signs a statement with its current key.

The statement (``agentca-renew-v2``) covers every member of the renewal request, so nothing in
the body can be changed after signing. It is a sequence of fields, each written as a 4-byte
big-endian length followed by that many bytes::

    field(b"agentca-renew-v2")                 context (domain separation)
    field(ASCII decimal of created)            Unix time, e.g. b"1795690000"
    field(SHA-256(new CSR DER))                32 bytes
    field(SHA-256(current certificate DER))    32 bytes: the certificate's fingerprint
    field(scopes)        b"\\x00" when absent, else b"\\x01" + uint32 count + field(UTF-8 scope)...
    field(validity)      b"\\x00" when absent, else b"\\x01" + ASCII decimal of validity_seconds

Scopes are covered in the order the request lists them. The statement itself is built by
:func:`wire.renewal.renewal_statement`, the one function the agent SDK and the CA share.

ECDSA keys sign with SHA-256 (DER signature), RSA with PKCS#1 v1.5 / SHA-256, Ed25519 plainly.
The ``created`` Unix time must be at most ``MAX_FUTURE_SKEW`` ahead of the CA's clock and at
most ``RENEWAL_SKEW`` behind it; a statement is accepted once (the CA records its SHA-256).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from wire.renewal import RENEW_CONTEXT, renewal_statement

__all__ = ["RENEW_CONTEXT", "renewal_statement", "verify_statement"]


def verify_statement(public_key: CertificatePublicKeyTypes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies with ``public_key``."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
