"""The JWK key type (RFC 7517 ``kty``) of a cryptography public key: shared by the CA that
mints Workload Identity Tokens and the gateway that verifies them (both use joserfc for the
JOSE itself; this module needs only cryptography)."""

from __future__ import annotations

from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa


def jwk_key_type(public_key: Any) -> Literal["EC", "RSA", "OKP"]:
    """``RSA``, ``EC``, else ``OKP`` (Ed25519)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC"
    return "OKP"
