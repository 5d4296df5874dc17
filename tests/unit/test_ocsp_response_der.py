"""The direct-DER response builder gives the same bytes as the asn1crypto builder.

Ed25519 and RSA PKCS#1 v1.5 signatures are deterministic, so the two builders' outputs can be
compared byte for byte; ECDSA (random k) is compared on the decoded fields and the signature
is verified. Cases: good, revoked with and without a reason, never issued (extended revoke),
a nonce, several CertIDs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ocsp.decision import GOOD, UNISSUED, CertState, SerialStatus
from ocsp.response import Signer, SingleAnswer, build_basic_response
from ocsp.response_der import build_response_der

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "responder")])


def _signer(key: CertificateIssuerPrivateKeyTypes) -> Signer:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(12345)
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=1))
        .sign(key, algorithm)
    )
    return Signer(cert.public_bytes(serialization.Encoding.DER), key, T0 + timedelta(days=1))


def _cert_id(serial: int) -> bytes:
    req = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(b"\x01" * 20, b"\x02" * 20, serial, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    return bytes(
        asn1_ocsp.OCSPRequest.load(req)["tbs_request"]["request_list"][0]["req_cert"].dump()
    )


REVOKED = SerialStatus(CertState.REVOKED, T0 - timedelta(hours=3), 1)
REVOKED_NO_REASON = SerialStatus(CertState.REVOKED, T0 - timedelta(hours=2), None)
CASES = {
    "good": ([GOOD], None),
    "revoked": ([REVOKED], None),
    "revoked-no-reason": ([REVOKED_NO_REASON], None),
    "unissued": ([UNISSUED], None),
    "nonce": ([GOOD], b"\x07" * 16),
    "several": ([GOOD, REVOKED, UNISSUED, REVOKED_NO_REASON], b"\x01"),
}


def _build(
    builder: object, signer: Signer, statuses: list[SerialStatus], nonce: bytes | None
) -> bytes:
    answers = [SingleAnswer(_cert_id(1000 + i), st) for i, st in enumerate(statuses)]
    return builder(  # type: ignore[operator, no-any-return]
        answers,
        signer,
        produced_at=T0,
        this_update=T0,
        next_update=T0 + timedelta(hours=1),
        nonce=nonce,
    )


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_same_bytes_as_the_asn1crypto_builder(case: str, kind: str) -> None:
    key: CertificateIssuerPrivateKeyTypes = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(65537, 2048)
    )
    signer = _signer(key)
    statuses, nonce = CASES[case]
    old = _build(build_basic_response, signer, statuses, nonce)
    new = _build(build_response_der, signer, statuses, nonce)
    assert new == old


@pytest.mark.parametrize("case", sorted(CASES))
def test_ecdsa_answers_decode_alike_and_verify(case: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = _signer(key)
    statuses, nonce = CASES[case]
    old = ocsp.load_der_ocsp_response(_build(build_basic_response, signer, statuses, nonce))
    new = ocsp.load_der_ocsp_response(_build(build_response_der, signer, statuses, nonce))
    assert new.tbs_response_bytes == old.tbs_response_bytes  # everything but the signature
    assert new.signature_algorithm_oid == old.signature_algorithm_oid
    assert [c.public_bytes(serialization.Encoding.DER) for c in new.certificates] == [
        c.public_bytes(serialization.Encoding.DER) for c in old.certificates
    ]
    key.public_key().verify(new.signature, new.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    singles = list(new.responses)
    assert len(singles) == len(statuses)
    for single, status in zip(singles, statuses, strict=True):
        if status.state is CertState.GOOD:
            assert single.certificate_status is ocsp.OCSPCertStatus.GOOD
        else:
            assert single.certificate_status is ocsp.OCSPCertStatus.REVOKED
            assert single.revocation_time_utc == status.answer_time
