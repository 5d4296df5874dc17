"""PKCS#10 certification requests carrying the provenance attribute (OID ``...4.1``).

cryptography cannot add an attribute whose value is a SEQUENCE, so the request is assembled
in DER here and signed with the agent's key (ECDSA P-256/SHA-256, P-384/SHA-384, RSA PKCS#1
v1.5/SHA-256 or Ed25519), byte-compatible with the CA's ``build_agent_csr``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from agent import _der
from agent.errors import AgentError
from agent.keys import AgentKey
from agent.provenance import Provenance

CSR_PROVENANCE_OID = "2.25.40108673889173621464063845417476256764.4.1"
RENEW_CONTEXT = b"agentca-renew-v2"


def signature_algorithm(key: AgentKey) -> tuple[bytes, Callable[[bytes], bytes]]:
    """``(AlgorithmIdentifier DER, sign function)`` for an X.509 signature by ``key``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name == "secp256r1":
            return _der.seq(_der.oid("1.2.840.10045.4.3.2")), lambda d: key.sign(
                d, ec.ECDSA(hashes.SHA256())
            )
        if key.curve.name == "secp384r1":
            return _der.seq(_der.oid("1.2.840.10045.4.3.3")), lambda d: key.sign(
                d, ec.ECDSA(hashes.SHA384())
            )
        raise AgentError(f"EC curve {key.curve.name} is not supported (P-256, P-384)")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AgentError(f"RSA key of {key.key_size} bits is too small")
        alg = _der.seq(_der.oid("1.2.840.113549.1.1.11"), b"\x05\x00")
        return alg, lambda d: key.sign(d, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _der.seq(_der.oid("1.3.101.112")), key.sign
    raise AgentError(f"unsupported key type {type(key).__name__}")


def build_csr(
    key: AgentKey,
    common_name: str,
    provenance: Provenance,
    organization: str | None = None,
) -> x509.CertificateSigningRequest:
    """A signed PKCS#10 request for ``common_name`` claiming ``provenance``."""
    rdns = []
    if organization is not None:
        rdns.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(rdns).public_bytes()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attribute = _der.seq(_der.oid(CSR_PROVENANCE_OID), _der.set_of(provenance.to_der()))
    attributes = _der.tlv(0xA0, attribute)  # [0] IMPLICIT SET OF Attribute
    info = _der.seq(_der.integer(0), subject, spki, attributes)
    alg, sign = signature_algorithm(key)
    request = _der.seq(info, alg, _der.bit_string(sign(info)))
    return x509.load_der_x509_csr(request)


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def renewal_statement(
    created: int,
    csr_der: bytes,
    certificate_der: bytes,
    scopes: Sequence[str] | None = None,
    validity_seconds: int | None = None,
) -> bytes:
    """What the current key signs to renew (``agentca-renew-v2``; docs/agents.md).

    A copy of the CA's ``ca/proof.py`` function (the SDK imports nothing of the CA): length-
    prefixed fields covering the context, ``created``, SHA-256 of the new CSR DER, SHA-256 of
    the current certificate DER, the requested scopes (in order) and ``validity_seconds``.
    """
    if scopes is None:
        scope_part = b"\x00"
    else:
        scope_part = (
            b"\x01"
            + len(scopes).to_bytes(4, "big")
            + b"".join(_field(s.encode("utf-8")) for s in scopes)
        )
    validity_part = (
        b"\x00" if validity_seconds is None else b"\x01" + str(int(validity_seconds)).encode()
    )
    return b"".join(
        _field(part)
        for part in (
            RENEW_CONTEXT,
            str(int(created)).encode(),
            hashlib.sha256(csr_der).digest(),
            hashlib.sha256(certificate_der).digest(),
            scope_part,
            validity_part,
        )
    )


def sign_statement(key: AgentKey, data: bytes) -> bytes:
    """Sign ``data``: ECDSA with SHA-256 (DER), RSA PKCS#1 v1.5 SHA-256, Ed25519 plain."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)
