"""Review findings on the WIMSE profile and WITs: each test failed before its fix."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import import_key

from agent.csr import sign_statement
from ca.errors import CAError
from ca.wit import WitRequest, check_wit_request
from gateway.httpsig import parse_signature
from gateway.problems import Check, Denied
from gateway.wit import WitVerifier
from tests.support.gateway_pki import Pki
from wire.renewal import renewal_statement, wit_request_statement


def test_fast_path_keeps_a_component_holding_a_parenthesis() -> None:
    """A ")" inside a covered component string ended the inner list early on the fast path:
    ``("@method" "ab)" "@path")`` became ``("@method", "a")``, unlike the general parser and
    unlike what the signed ``@signature-params`` line says."""
    headers = {
        "signature-input": 'sig=("@method" "ab)" "@path");created=1;tag="t"',
        "signature": "sig=:AAAA:",
    }
    assert parse_signature(headers, "t").covered == ("@method", "ab)", "@path")


class _Issuer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = import_key(self.key, "EC")
        public = self.jwk.as_dict(private=False)
        self.verifier = WitVerifier({"keys": [public | {"kid": self.jwk.thumbprint()}]}, "iss")
        agent = ec.generate_private_key(ec.SECP256R1()).public_key()
        self.cnf = import_key(agent, "EC").as_dict(private=False) | {"alg": "ES256"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "iss", "sub": "spiffe://t/a", "iat": now, "exp": now + 600}
        body |= {"cnf": {"jwk": self.cnf}} | claims
        header = {"alg": "ES256", "typ": "wit+jwt", "kid": self.jwk.thumbprint()}
        return jwt.encode(header, body, self.jwk)


def test_a_wit_not_yet_valid_is_refused() -> None:
    """RFC 7519 4.1.5: a JWT must not be accepted before its ``nbf``."""
    issuer = _Issuer()
    token = issuer.token(nbf=int(time.time()) + 3600)
    with pytest.raises(Denied) as refused:
        issuer.verifier.verify(token, time.time())
    assert refused.value.check is Check.SIGNATURE_EXPIRED


@pytest.mark.parametrize("nbf", ["soon", 1.5, True])
def test_a_wit_nbf_must_be_an_integer(nbf: object) -> None:
    issuer = _Issuer()
    with pytest.raises(Denied) as refused:
        issuer.verifier.verify(issuer.token(nbf=nbf), time.time())
    assert refused.value.check is Check.MALFORMED


def test_a_wit_cnf_jwk_must_be_an_asymmetric_key() -> None:
    """A symmetric ``cnf.jwk`` (``kty: oct``) is no workload public key."""
    issuer = _Issuer()
    token = issuer.token(cnf={"jwk": {"kty": "oct", "k": "c2VjcmV0c2VjcmV0", "alg": "ES256"}})
    with pytest.raises(Denied) as refused:
        issuer.verifier.verify(token, time.time())
    assert refused.value.check is Check.MALFORMED


def test_a_renewal_proof_mints_no_wit() -> None:
    """The proof of a renewal (a real CSR's SHA-256 in the CSR slot) does not verify as a WIT
    request proof for the same certificate and time; the WIT proof does (checked offline,
    before the CA would look the certificate up)."""
    pki = Pki.create()
    key = ec.generate_private_key(ec.SECP256R1())
    _, cert = pki.issue(key)
    der = cert.public_bytes(serialization.Encoding.DER)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    now = max(datetime.now(UTC), cert.not_valid_before_utc)
    created = int(now.timestamp())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    looked_up: list[str] = []

    def record_of(serial: str) -> Any:
        looked_up.append(serial)
        raise LookupError("stop here")

    renewal = sign_statement(key, renewal_statement(created, csr, der))
    with pytest.raises(CAError, match="proof does not verify"):
        check_wit_request(WitRequest(pem, created, renewal), pki.issuing, record_of, now)
    assert not looked_up
    wit_proof = sign_statement(key, wit_request_statement(created, der, None))
    with pytest.raises(LookupError, match="stop here"):
        check_wit_request(WitRequest(pem, created, wit_proof), pki.issuing, record_of, now)
    assert looked_up == [format(cert.serial_number, "x")]


@pytest.mark.parametrize("issuers", ["", " ", ["https://ca.example", ""]])
def test_an_empty_issuer_is_no_configuration(issuers: Any) -> None:
    """``issuers=""`` (e.g. an unset public_base_url) would trust WITs that say ``iss: ""``."""
    jwks = _Issuer().verifier.keys.as_dict(private=False)
    with pytest.raises(ValueError, match="issuers"):
        WitVerifier(jwks, issuers)
