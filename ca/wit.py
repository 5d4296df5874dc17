"""Workload Identity Tokens (draft-ietf-wimse-workload-creds, section 3.1) minted by the CA.

A WIT is a JWS compact JWT: header ``{"alg", "kid", "typ": "wit+jwt"}``, claims ``iss`` (the
CA's public base URL), ``sub`` (the certificate's one URI SAN, the agent's SPIFFE ID),
``iat``, ``exp`` (minutes), ``jti`` and ``cnf.jwk`` (the certificate's public key with its
JOSE ``alg``). It is signed by the issuing CA key in the HSM (decision 0025) through joserfc:
:class:`HsmJwsAlgorithm` is a JWS algorithm whose ``sign`` calls the HSM key object (which
cannot export its private bytes) and turns ECDSA's DER signature into JWS's raw ``r || s``.
The verification keys are the JWKS at ``/ca/wit-jwks.json`` (``kid`` = RFC 7638 thumbprint,
``x5c`` = the issuing CA certificate and the root, so a verifier can check the key against
the X.509 trust anchor it already has).

The request is authenticated by possession of the certificate key: the agent signs the
renewal-statement format with a WIT context (``wire/renewal.py``); the certificate must be
issued by this CA, on record, ``issued`` (not revoked, not on hold) and unexpired.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import import_key
from joserfc.jws import JWSRegistry

from ca.errors import CAError, ErrorCode
from ca.proof import verify_statement
from ca.records import CertificateRecord, CertStatus
from wire.jwk import jwk_key_type
from wire.renewal import wit_request_statement

WIT_TYP: Final = "wit+jwt"
DEFAULT_LIFETIME: Final = timedelta(minutes=10)
MAX_LIFETIME: Final = timedelta(hours=1)
PROOF_MAX_AGE: Final = timedelta(minutes=5)
PROOF_MAX_AHEAD: Final = timedelta(seconds=30)


def jose_algorithm(key: Any) -> str:
    """The JWS ``alg`` for a (public or private) key: ES256, ES384, EdDSA or RS256."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        names = {"secp256r1": "ES256", "secp384r1": "ES384"}
        if key.curve.name in names:
            return names[key.curve.name]
    elif isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "EdDSA"
    elif isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    raise CAError(ErrorCode.BAD_REQUEST, f"no JWS algorithm for a {type(key).__name__}")


def public_jwk(public_key: Any, **params: str) -> dict[str, Any]:
    """The public JWK of ``public_key`` with its ``alg`` (and ``params``)."""
    jwk = import_key(public_key, jwk_key_type(public_key)).as_dict(private=False)
    return {**jwk, "alg": jose_algorithm(public_key), **params}


def thumbprint(public_key: Any) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of a public key."""
    return str(import_key(public_key, jwk_key_type(public_key)).thumbprint())


class HsmJwsAlgorithm(JWSAlgModel):
    """A JWS algorithm that signs with a key object whose private part never leaves the HSM.

    joserfc's own algorithms read the private numbers (to build a JWK); this one only calls
    ``key.sign`` (``hsm.KeyManager`` keys are cryptography private-key subclasses)."""

    def __init__(self, signing_key: Any) -> None:
        self.name = jose_algorithm(signing_key)
        self.description = f"{self.name} with an HSM-resident key"
        self.key_type = {"ES": "EC", "Ed": "OKP", "RS": "RSA"}[self.name[:2]]
        self.signing_key = signing_key

    def check_key(self, key: Any) -> None:
        if key.key_type != self.key_type:
            raise ValueError(f"{self.name} needs an {self.key_type} key")

    def sign(self, msg: bytes, key: Any) -> bytes:
        k = self.signing_key
        if isinstance(k, ec.EllipticCurvePrivateKey):
            size = (k.curve.key_size + 7) // 8
            digest = hashes.SHA256() if size == 32 else hashes.SHA384()
            r, s = decode_dss_signature(k.sign(msg, ec.ECDSA(digest)))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(k, rsa.RSAPrivateKey):
            return bytes(k.sign(msg, padding.PKCS1v15(), hashes.SHA256()))
        return bytes(k.sign(msg))

    def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:  # pragma: no cover - minting only
        return False


@dataclass(frozen=True)
class MintedWit:
    """A minted WIT and the claims the CA logs and answers."""

    token: str
    sub: str
    jti: str
    expires: datetime


def mint_wit(
    signing_key: Any,
    issuer: str,
    certificate: x509.Certificate,
    now: datetime,
    lifetime: timedelta,
    jti: str | None = None,
) -> MintedWit:
    """The WIT for ``certificate`` signed by ``signing_key``."""
    sub = subject_of(certificate)
    subject_key = certificate.public_key()
    iat = int(now.timestamp())
    exp = iat + int(lifetime.total_seconds())
    public = signing_key.public_key()
    header = {"alg": jose_algorithm(public), "kid": thumbprint(public), "typ": WIT_TYP}
    claims = {
        "iss": issuer,
        "sub": sub,
        "iat": iat,
        "exp": exp,
        "jti": jti or secrets.token_urlsafe(16),  # 128 bits
        "cnf": {"jwk": public_jwk(subject_key)},
    }
    algorithm = HsmJwsAlgorithm(signing_key)
    registry = JWSRegistry(algorithms=[algorithm.name])
    registry.algorithms = {algorithm.name: algorithm}  # this registry only, not joserfc's
    token = jwt.encode(header, claims, import_key(public, jwk_key_type(public)), registry=registry)
    return MintedWit(token, sub, str(claims["jti"]), datetime.fromtimestamp(exp, now.tzinfo))


def subject_of(certificate: x509.Certificate) -> str:
    """The certificate's one URI SAN (the agent's SPIFFE ID)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CAError(ErrorCode.BAD_REQUEST, "the certificate has no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CAError(ErrorCode.BAD_REQUEST, "the certificate needs exactly one URI SAN")
    return uris[0]


def wit_jwks(issuing: x509.Certificate, chain: list[x509.Certificate]) -> dict[str, Any]:
    """The JWKS verifiers use for WITs: the issuing CA key, ``kid`` and ``x5c``."""
    public = issuing.public_key()
    x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    return {"keys": [public_jwk(public, kid=thumbprint(public), use="sig") | {"x5c": x5c}]}


@dataclass(frozen=True)
class WitRequest:
    """An agent's request for a WIT: its certificate, the proof's time and signature."""

    certificate_pem: bytes
    created: int
    proof: bytes
    lifetime: timedelta | None = None


def check_wit_request(
    req: WitRequest,
    issuing: x509.Certificate,
    record_of: Callable[[str], CertificateRecord],
    now: datetime,
) -> x509.Certificate:
    """The authenticated certificate of ``req``; ``CAError`` otherwise.

    ``record_of(serial_hex)`` answers the certificate's record (``CAError`` if unknown)."""
    try:
        cert = x509.load_pem_x509_certificate(req.certificate_pem)
    except ValueError:
        raise CAError(ErrorCode.BAD_REQUEST, "the certificate is not valid PEM") from None
    try:
        cert.verify_directly_issued_by(issuing)
    except (ValueError, TypeError, InvalidSignature):
        raise CAError(
            ErrorCode.UNAUTHENTICATED, "the certificate was not issued by this CA"
        ) from None
    if not 0 <= req.created < 2**40:
        raise CAError(ErrorCode.BAD_REQUEST, "created must be a Unix time in seconds")
    age = now.timestamp() - req.created
    if age > PROOF_MAX_AGE.total_seconds():
        raise CAError(ErrorCode.UNAUTHENTICATED, "the WIT request proof is stale")
    if -age > PROOF_MAX_AHEAD.total_seconds():
        raise CAError(ErrorCode.UNAUTHENTICATED, "the WIT request proof is from the future")
    lifetime = None if req.lifetime is None else int(req.lifetime.total_seconds())
    der = cert.public_bytes(serialization.Encoding.DER)
    statement = wit_request_statement(req.created, der, lifetime)
    if not verify_statement(cert.public_key(), req.proof, statement):
        raise CAError(
            ErrorCode.UNAUTHENTICATED, "the proof does not verify with the certificate key"
        )
    try:
        record = record_of(format(cert.serial_number, "x"))
    except CAError as exc:
        if exc.code is not ErrorCode.NOT_FOUND:
            raise
        record = None
    if record is None or record.certificate_der != der:
        raise CAError(
            ErrorCode.UNAUTHENTICATED, f"certificate {cert.serial_number:x} is not on record"
        )
    if record.status != CertStatus.ISSUED:
        raise CAError(
            ErrorCode.UNAUTHENTICATED,
            f"certificate {record.serial_hex} is {record.status}"
            + (f" ({record.revocation_reason})" if record.revocation_reason else ""),
        )
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CAError(ErrorCode.UNAUTHENTICATED, "the certificate is not valid now")
    return cert


def wit_lifetime(requested: timedelta | None, cert: x509.Certificate, now: datetime) -> timedelta:
    """The lifetime to grant: asked for (default 10 min, at most 1 h), never past the
    certificate's notAfter."""
    wanted = DEFAULT_LIFETIME if requested is None else requested
    if not timedelta(seconds=60) <= wanted <= MAX_LIFETIME:
        raise CAError(ErrorCode.BAD_REQUEST, "lifetime_seconds must be 60..3600")
    return min(wanted, cert.not_valid_after_utc - now)
