"""The SPIFFE trust bundle endpoint: ``GET /spiffe/bundle.json``.

The bundle of the CA's trust domain as the SPIFFE Trust Domain and Bundle specification
defines it: a JWK Set (RFC 7517) with one key per root CA certificate, ``use`` set to
``x509-svid``, no ``kid``, the key's public parameters (RFC 7518 section 6) and ``x5c``
holding exactly that one self-signed certificate (X509-SVID section 6.1); plus
``spiffe_sequence`` and ``spiffe_refresh_hint``. Only trust anchors go in the bundle: the
issuing CA travels with each agent's chain (TLS, or RFC 9440 ``Client-Cert-Chain``).

``spiffe_sequence`` is the newest root's notBefore in Unix seconds: it grows when a newer
root is added and is the same in every worker without any state. :func:`bundle_document` is
pure; the route wraps it with ``application/json``, ``Cache-Control`` and a strong ``ETag``
(304 on ``If-None-Match``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Blueprint, Response, request

from ca.api.state import runtime
from ca.errors import CAError, ErrorCode

PATH: Final = "/spiffe/bundle.json"
#: How often consumers should poll for a new bundle (seconds); roots change rarely.
REFRESH_HINT: Final = 3600
#: How long HTTP caches may keep one answer (seconds), well under the refresh hint.
MAX_AGE: Final = 300
X509_SVID_USE: Final = "x509-svid"

_CURVES: Final[dict[str, tuple[str, int]]] = {
    "secp256r1": ("P-256", 32),
    "secp384r1": ("P-384", 48),
    "secp521r1": ("P-521", 66),
}

spiffe_bundle = Blueprint("spiffe_bundle", __name__)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    """RFC 7518 Base64urlUInt (fixed ``size`` bytes for EC coordinates)."""
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(length, "big"))


def public_jwk(certificate: x509.Certificate) -> dict[str, Any]:
    """The public parameters of ``certificate``'s key as a JWK (EC or RSA)."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        crv, size = _CURVES[key.curve.name]
        numbers = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint(rsa_numbers.n), "e": _uint(rsa_numbers.e)}
    raise CAError(ErrorCode.UNSUPPORTED_KEY, f"no JWK for a {type(key).__name__} CA key")


def bundle_document(roots: Sequence[x509.Certificate]) -> dict[str, Any]:
    """The SPIFFE bundle (a JWK Set) whose X.509 authorities are ``roots``."""
    if not roots:
        raise CAError(ErrorCode.NOT_INITIALISED, "the CA is not initialised; there is no bundle")
    keys = []
    for root in roots:
        der = root.public_bytes(serialization.Encoding.DER)
        keys.append(
            {**public_jwk(root), "use": X509_SVID_USE, "x5c": [base64.b64encode(der).decode()]}
        )
    sequence = max(int(root.not_valid_before_utc.timestamp()) for root in roots)
    return {"keys": keys, "spiffe_refresh_hint": REFRESH_HINT, "spiffe_sequence": sequence}


def bundle_json(roots: Sequence[x509.Certificate]) -> bytes:
    """:func:`bundle_document` serialised canonically (sorted keys, so ETags are stable)."""
    return json.dumps(bundle_document(roots), sort_keys=True, separators=(",", ":")).encode()


@spiffe_bundle.get(PATH)
def bundle() -> Response:
    """The trust bundle of this CA's trust domain (public, cacheable)."""
    roots = [r.certificate for r in runtime().authority.issuers() if r.parent_name is None]
    body = bundle_json(roots)
    etag = hashlib.sha256(body).hexdigest()[:32]
    if request.if_none_match.contains_weak(etag):  # RFC 9110 13.1.2: weak comparison
        resp = Response(status=304)
    else:
        resp = Response(body, mimetype="application/json")
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return resp
