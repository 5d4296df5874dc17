"""PKCS#10 requests carrying the provenance attribute (``id-agentca-csr-provenance``).

cryptography cannot emit an attribute whose value is a SEQUENCE, so the request is assembled in
DER here (:mod:`wire.der`) and signed with the agent's key (ECDSA P-256/SHA-256,
P-384/SHA-384, RSA PKCS#1 v1.5/SHA-256 or Ed25519). :func:`read_provenance_attribute` finds the
attribute in a request strictly, with the same codec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import pairwise

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from wire import der, oids
from wire.extensions import ExtensionError

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
ATTRIBUTE_NAME = "CSR attribute id-agentca-csr-provenance"


class UnsupportedKeyError(ValueError):
    """A key the agent SDK cannot sign a request with."""


def signature_algorithm(key: object) -> tuple[bytes, Callable[[bytes], bytes]]:
    """``(AlgorithmIdentifier DER, sign function)`` for an X.509 signature by ``key``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = key.curve.name
        if curve == "secp256r1":
            return der.seq(der.encode_oid(oids.ECDSA_WITH_SHA256)), lambda d: key.sign(
                d, ec.ECDSA(hashes.SHA256())
            )
        if curve == "secp384r1":
            return der.seq(der.encode_oid(oids.ECDSA_WITH_SHA384)), lambda d: key.sign(
                d, ec.ECDSA(hashes.SHA384())
            )
        raise UnsupportedKeyError(f"EC curve {curve} is not supported (P-256, P-384)")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise UnsupportedKeyError(f"RSA key of {key.key_size} bits is too small")
        alg = der.seq(der.encode_oid(oids.SHA256_WITH_RSA), b"\x05\x00")
        return alg, lambda d: key.sign(d, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return der.seq(der.encode_oid(oids.ED25519)), key.sign
    raise UnsupportedKeyError(
        f"unsupported key type {type(key).__name__} (EC P-256/P-384, RSA >= 2048, Ed25519)"
    )


def provenance_attribute(provenance_der: bytes, arc: oids.OidArc = oids.DEFAULT_ARC) -> bytes:
    """The ``Attribute`` (``arc``'s ``.4.1``) whose single value is the ``AgentProvenance`` DER."""
    return der.seq(der.encode_oid(arc.csr_provenance.dotted_string), der.set_of(provenance_der))


def build_csr(
    key: SigningKey,
    subject: x509.Name,
    provenance_der: bytes,
    arc: oids.OidArc = oids.DEFAULT_ARC,
) -> x509.CertificateSigningRequest:
    """A signed PKCS#10 request for ``subject`` carrying ``provenance_der`` as its attribute
    under ``arc`` (the arc of the CA the request goes to)."""
    alg, sign = signature_algorithm(key)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attributes = der.tlv(0xA0, provenance_attribute(provenance_der, arc))  # [0] IMPLICIT SET OF
    info = der.seq(der.integer(0), subject.public_bytes(), spki, attributes)
    return x509.load_der_x509_csr(der.seq(info, alg, der.bit_string(sign(info))))


def _require_sorted(encodings: list[bytes], what: str) -> None:
    """DER SET OF: the elements' encodings in ascending order (X.690 11.6)."""
    if any(a > b for a, b in pairwise(encodings)):
        raise ExtensionError(f"{what} are not in DER SET OF order")


def read_provenance_attribute(
    tbs_certrequest: bytes, arcs: Iterable[oids.OidArc] = oids.DEFAULT_ACCEPTED_ARCS
) -> bytes | None:
    """The DER of the provenance attribute's value in a ``CertificationRequestInfo``, the
    attribute being ``.4.1`` under one of ``arcs``.

    ``None`` if absent; :class:`ExtensionError` if the structure is not strict DER (including
    the order of both SET OFs: the attributes and each attribute's values), the attribute is
    repeated (under one arc or two) or has other than exactly one value.
    """
    what = ATTRIBUTE_NAME
    wanted = {a.csr_provenance.dotted_string for a in oids.parse_arcs(arcs)}
    try:
        fields = der.children(der.read_one(tbs_certrequest, 0x30))
        if len(fields) != 4 or [t for t, _ in fields[:3]] != [0x02, 0x30, 0x30]:
            raise ExtensionError(f"{what}: malformed DER (not a CertificationRequestInfo)")
        if fields[3][0] != 0xA0:
            raise ExtensionError(f"{what}: malformed DER (attributes are not [0] IMPLICIT)")
        found: list[bytes] = []
        attributes = der.children(fields[3][1])
        _require_sorted([der.tlv(t, b) for t, b in attributes], f"{what}: attributes")
        for tag, body in attributes:
            if tag != 0x30:
                raise ExtensionError(f"{what}: malformed DER (an attribute is not a SEQUENCE)")
            parts = der.children(body)
            if len(parts) != 2 or parts[0][0] != 0x06 or parts[1][0] != 0x31:
                raise ExtensionError(f"{what}: malformed DER (not an Attribute)")
            if der.decode_oid(parts[0][1]) not in wanted:
                continue
            values = []
            pos = 0
            while pos < len(parts[1][1]):
                start = pos
                _, _, pos = der.read(parts[1][1], pos)
                values.append(parts[1][1][start:pos])
            _require_sorted(values, f"{what}: values")
            if len(values) != 1:
                raise ExtensionError(f"{what}: must have exactly one value, has {len(values)}")
            found.append(values[0])
    except der.DerError as exc:
        raise ExtensionError(f"{what}: malformed DER ({exc})") from None
    if len(found) > 1:
        raise ExtensionError(f"{what}: appears more than once")
    return found[0] if found else None
