"""PKCS#10 certification requests carrying the provenance attribute (OID ``...4.1``), and the
renewal statement, both built by the shared :mod:`wire` package (``wire.csr_attributes``,
``wire.renewal``) with the SDK's errors.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from agent.errors import AgentError
from agent.keys import AgentKey
from agent.provenance import Provenance
from wire import csr_attributes, oids
from wire.renewal import RENEW_CONTEXT, renewal_statement

#: The dotted OID of the CSR provenance attribute under the default arc (kept importable; the
#: arc is the CA's: :class:`wire.oids.OidArc`).
CSR_PROVENANCE_OID = oids.DEFAULT_ARC.csr_provenance.dotted_string

__all__ = [
    "CSR_PROVENANCE_OID",
    "RENEW_CONTEXT",
    "build_csr",
    "renewal_statement",
    "sign_statement",
    "signature_algorithm",
]


def signature_algorithm(key: AgentKey) -> tuple[bytes, Callable[[bytes], bytes]]:
    """``(AlgorithmIdentifier DER, sign function)`` for an X.509 signature by ``key``."""
    try:
        return csr_attributes.signature_algorithm(key)
    except csr_attributes.UnsupportedKeyError as exc:
        raise AgentError(str(exc)) from None


def build_csr(
    key: AgentKey,
    common_name: str,
    provenance: Provenance,
    organization: str | None = None,
    arc: oids.OidArc = oids.DEFAULT_ARC,
) -> x509.CertificateSigningRequest:
    """A signed PKCS#10 request for ``common_name`` claiming ``provenance``, the attribute
    under ``arc`` (the CA's ``oid_arc``, from its metadata)."""
    rdns = []
    if organization is not None:
        rdns.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    signature_algorithm(key)  # the SDK's error for an unsupported key
    return csr_attributes.build_csr(key, x509.Name(rdns), provenance.to_der(), arc)


def sign_statement(key: AgentKey, data: bytes) -> bytes:
    """Sign ``data``: ECDSA with SHA-256 (DER), RSA PKCS#1 v1.5 SHA-256, Ed25519 plain."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)
