"""Proof of possession for renewal: the agent signs a short statement with its current key.

statement = ``b"agentca-renew-v1\\n" + str(created).encode() + b"\\n" + SHA-256(new CSR DER)``

ECDSA keys sign with SHA-256 (DER signature), RSA with PKCS#1 v1.5 / SHA-256, Ed25519 plainly.
The ``created`` Unix time must be within the allowed skew, which bounds replay.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

RENEW_CONTEXT = b"agentca-renew-v1\n"


def renewal_statement(created: int, csr_der: bytes) -> bytes:
    """The exact bytes the current key signs to renew with ``csr_der``."""
    return RENEW_CONTEXT + str(int(created)).encode() + b"\n" + hashlib.sha256(csr_der).digest()


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
