"""What the tests of the shared OCSP store (decisions 0038, 0047, 0050) have in common: the
responder token with the issuers' responder certificates, issued certificates, and the plain
one-CertID request a relying party sends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from ca.requests import IssuanceRequest
from ca.responder_certs import ResponderCertRotator
from ca.responder_token import responder_token_config
from ca.wiring import Runtime
from hsm import KeyStore
from tests.unit.helpers import sample_extensions


@contextmanager
def responder_keys_of(rt: Runtime) -> Iterator[KeyStore]:
    """The responder token of ``rt``, with a responder certificate for every issuer."""
    store = KeyStore(responder_token_config(rt.settings))
    ResponderCertRotator(rt.sessions, rt.keys, store).ensure_all()
    try:
        yield store
    finally:
        store.close()


def issue_certs(rt: Runtime, n: int, prefix: str = "Store-Agent") -> list[x509.Certificate]:
    """``n`` agent certificates issued by ``rt``'s issuing CA."""
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        record = rt.authority.issue(
            IssuanceRequest(key.public_key(), f"{prefix}-{i}", sample_extensions()), "test"
        )
        assert record.certificate is not None
        out.append(record.certificate)
    return out


def plain_request(
    rt: Runtime, cert: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None
) -> bytes:
    """The DER of a one-CertID request for ``cert`` (SHA-1 CertID unless ``algorithm``)."""
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, rt.authority.chain()[0], algorithm or hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
