"""Delegated responder certificates on the real SoftHSM2 tokens and both databases
(decision 0018): the CA side publishes them, with keys in the responder token and never a CA
key there; the responder only loads the newest valid one, switches when a newer one appears
while the old is still valid, and answers tryLater (writing nothing) when there is none.
Concurrent rotators create one signer on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca.clock import utcnow
from ca.requests import IssuanceRequest
from ca.responder_certs import ResponderCertRotator, build_responder_certificate
from ca.responder_token import responder_token_config
from ca.serials import new_serial
from ca.store.models import Issuer, LedgerEntryRow, OcspSigner
from ca.wiring import Runtime
from hsm import KeyStore, KeyType
from ocsp.options import OcspOptions
from ocsp.wiring import open_responder
from tests.unit.helpers import sample_extensions


@pytest.fixture
def responder_keys(ca_runtime: Runtime) -> Iterator[KeyStore]:
    store = KeyStore(responder_token_config(ca_runtime.settings))
    yield store
    store.close()


def _count(rt: Runtime, table: type[OcspSigner] | type[LedgerEntryRow]) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def _request(rt: Runtime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    record = rt.authority.issue(
        IssuanceRequest(key.public_key(), "Signer-Test-Agent", sample_extensions()), "test"
    )
    assert record.certificate is not None
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(record.certificate, rt.authority.chain()[0], hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def _issuing_signers(rt: Runtime) -> list[OcspSigner]:
    with rt.sessions() as s:
        rows = s.scalars(
            select(OcspSigner)
            .join(Issuer, Issuer.id == OcspSigner.issuer_id)
            .where(Issuer.role == "issuing")
            .order_by(OcspSigner.id)
        ).all()
        for row in rows:
            s.expunge(row)
        return list(rows)


def test_without_signers_the_responder_answers_try_later_and_writes_nothing(
    ca_runtime: Runtime,
) -> None:
    rt = ca_runtime
    der = _request(rt)
    before = _count(rt, LedgerEntryRow)
    responder_rt = open_responder(rt.settings, OcspOptions())
    try:
        answer = ocsp.load_der_ocsp_response(responder_rt.responder.respond(der).der)
    finally:
        responder_rt.close()
    assert answer.response_status is ocsp.OCSPResponseStatus.TRY_LATER
    assert _count(rt, OcspSigner) == 0 and _count(rt, LedgerEntryRow) == before


def test_rotation_ahead_of_expiry_overlaps_and_the_responder_takes_the_newest(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    long_ago = utcnow() - timedelta(hours=47)  # 48 h signers made then have 1 h left
    old = ResponderCertRotator(rt.sessions, rt.keys, responder_keys, clock=lambda: long_ago)
    assert [r.created for r in old.ensure_all()] == [True, True]
    der = _request(rt)
    responder_rt = open_responder(rt.settings, OcspOptions())
    try:
        first = ocsp.load_der_ocsp_response(responder_rt.responder.respond(der).der)
        assert first.certificate_status is ocsp.OCSPCertStatus.GOOD  # the old one, still valid
        rotated = ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure_all()
        assert [r.created for r in rotated] == [True, True]  # due: less than half left
        assert _count(rt, OcspSigner) == 4
        responder_rt.responder.poll()  # the feed shows a new signer
        answer = ocsp.load_der_ocsp_response(responder_rt.responder.respond(der).der)
    finally:
        responder_rt.close()
    previous, newest = _issuing_signers(rt)
    assert previous.not_after > utcnow()  # overlap: the old one was still valid
    (signer,) = answer.certificates
    assert signer.public_bytes(serialization.Encoding.DER) == newest.certificate_der
    assert first.responder_key_hash != answer.responder_key_hash
    issuing = rt.authority.chain()[0]
    signer.verify_directly_issued_by(issuing)
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    assert signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING])
    )
    # the signer keys live in the responder token, the CA keys only in the CA token
    with rt.sessions() as s:
        ca_labels = set(s.scalars(select(Issuer.key_label)))
    assert responder_keys.exists(newest.key_label) and not rt.keys.exists(newest.key_label)
    assert not ca_labels & set(responder_keys.labels())


def test_a_signer_the_responder_cannot_load_is_skipped_and_replaced(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """A newest row whose key is not in the responder token (e.g. made before decision 0018
    in the CA token): the responder keeps the older valid one; the CA side replaces it."""
    rt = ca_runtime
    rotator = ResponderCertRotator(rt.sessions, rt.keys, responder_keys)
    rotator.ensure_all()
    (good,) = _issuing_signers(rt)
    now = utcnow()
    foreign_label = f"old-style-ocsp-{new_serial():x}"[:40]
    foreign_key = rt.keys.generate(foreign_label, KeyType.EC_P256)  # in the CA token
    issuing = rt.authority.chain()[0]
    with rt.sessions.begin() as s:
        issuer = s.scalar(select(Issuer).where(Issuer.role == "issuing"))
        assert issuer is not None
        cert = build_responder_certificate(
            foreign_key.public_key(), new_serial(), now - timedelta(minutes=1),
            now + timedelta(hours=48), issuing, rt.keys.get(issuer.key_label),
        )  # fmt: skip
        s.add(
            OcspSigner(
                issuer_id=issuer.id, key_label=foreign_label,
                certificate_der=cert.public_bytes(serialization.Encoding.DER),
                not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                created_at=now,
            )
        )  # fmt: skip
    der = _request(rt)
    responder_rt = open_responder(rt.settings, OcspOptions())
    try:
        answer = ocsp.load_der_ocsp_response(responder_rt.responder.respond(der).der)
    finally:
        responder_rt.close()
    (signer,) = answer.certificates
    assert signer.public_bytes(serialization.Encoding.DER) == good.certificate_der
    results = {r.issuer_name: r for r in rotator.ensure_all()}
    assert results["issuing"].created and not results["root"].created


def test_concurrent_rotators_create_one_signer(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    with rt.sessions() as s:
        issuing_id = s.scalar(select(Issuer.id).where(Issuer.role == "issuing"))
    assert issuing_id is not None

    def rotate(_: int) -> bool:
        return ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure(issuing_id).created

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(rotate, range(4)))
    if rt.engine.dialect.name == "postgresql":
        assert created.count(True) == 1 and _count(rt, OcspSigner) == 1
    else:  # SQLite: a duplicate is tolerated, readers use the newest
        assert created.count(True) >= 1
    forced = ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure(issuing_id, True)
    assert forced.created
