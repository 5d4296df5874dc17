"""The shared store of pre-signed OCSP answers (issue 15 item 1, decision 0038) on the real
SoftHSM2 tokens and both databases: the presigner fills it for every live certificate, a
responder serves those exact bytes without signing, a revocation is never answered "good"
from the store (before the presigner catches up the row is unusable, after it the row says
revoked), hold and release follow, other CertID encodings are signed on demand, a signer
rotation re-signs everything in the background (decision 0047), and the rate bound holds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import select

from ca.clock import utcnow
from ca.records import RevocationReason
from ca.responder_certs import ResponderCertRotator
from ca.store.tables import ocsp_responses
from ca.wiring import Runtime
from hsm import KeyStore
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.presigner import Presigner, presigned_count
from ocsp.responder import Responder
from ocsp.status import SqlStatusSource
from ocsp.tally import STORE, AnswerTally
from tests.integration.ocsp_store_support import issue_certs, responder_keys_of


@pytest.fixture
def responder_keys(ca_runtime: Runtime) -> Iterator[KeyStore]:
    with responder_keys_of(ca_runtime) as store:
        yield store


def _issue(rt: Runtime, n: int) -> list[x509.Certificate]:
    return issue_certs(rt, n, "Presign-Agent")


def _request(rt: Runtime, cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, rt.authority.chain()[0], algorithm)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def _parts(rt: Runtime, keys: KeyStore, **kw: float) -> tuple[Presigner, Responder, AnswerTally]:
    source = SqlStatusSource(rt.engine)
    presigner = Presigner(rt.engine, CurrentSigners(source, keys, utcnow), OcspOptions(), **kw)
    tally = AnswerTally()
    responder = Responder(
        source, CurrentSigners(source, keys, utcnow), OcspOptions(), tally=tally, store=source
    )
    return presigner, responder, tally


def _status(der: bytes) -> ocsp.OCSPCertStatus:
    answer = ocsp.load_der_ocsp_response(der)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status


def _row_der(rt: Runtime, serial: int) -> bytes:
    with rt.engine.connect() as conn:
        der = conn.execute(
            select(ocsp_responses.c.der).where(ocsp_responses.c.serial_hex == format(serial, "x"))
        ).scalar_one()
    return bytes(der)


def test_the_store_answers_good_and_never_good_after_a_revocation(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 3)
    presigner, responder, tally = _parts(rt, responder_keys)
    stats = presigner.fill()
    assert stats.signed >= 3 and presigned_count(rt.engine) >= 3

    der = _request(rt, certs[0], hashes.SHA1())
    answer = responder.respond(der)
    assert _status(answer.der) is ocsp.OCSPCertStatus.GOOD
    assert answer.der == _row_der(rt, certs[0].serial_number)  # the store's bytes, unsigned here
    assert tally.take() == {("good", STORE): 1}
    # the answer verifies under the delegated signer it names
    parsed = ocsp.load_der_ocsp_response(answer.der)
    signer = parsed.certificates[0]
    pub = signer.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))

    # revoked: before the presigner runs again, the stale "good" row is not used ...
    rt.authority.revoke(format(certs[1].serial_number, "x"), RevocationReason.KEY_COMPROMISE, "t")
    fresh = Responder(
        responder.source, responder.signers, OcspOptions(), tally=tally, store=responder.store
    )
    revoked_der = _request(rt, certs[1], hashes.SHA1())
    assert _status(fresh.respond(revoked_der).der) is ocsp.OCSPCertStatus.REVOKED
    assert ("revoked", "miss") in tally.take()
    # ... and after it, the row itself says revoked and is served from the store
    assert presigner.step().changes == 1
    other = Responder(
        responder.source, responder.signers, OcspOptions(), tally=tally, store=responder.store
    )
    assert _status(other.respond(revoked_der).der) is ocsp.OCSPCertStatus.REVOKED
    assert tally.take() == {("revoked", STORE): 1}


def test_hold_and_release_are_re_signed(ca_runtime: Runtime, responder_keys: KeyStore) -> None:
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    presigner, responder, tally = _parts(rt, responder_keys)
    presigner.fill()
    serial = format(cert.serial_number, "x")
    rt.authority.revoke(serial, RevocationReason.CERTIFICATE_HOLD, "t")
    assert presigner.step().changes == 1
    der = _request(rt, cert, hashes.SHA1())
    held = ocsp.load_der_ocsp_response(responder.respond(der).der)
    assert held.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert held.revocation_reason is x509.ReasonFlags.certificate_hold
    rt.authority.release_hold(serial, "t")
    assert presigner.step().changes == 1
    again = Responder(
        responder.source, responder.signers, OcspOptions(), tally=tally, store=responder.store
    )
    tally.take()
    assert _status(again.respond(der).der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", STORE): 1}


def test_other_cert_id_encodings_are_signed_on_demand(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    presigner, responder, tally = _parts(rt, responder_keys)
    presigner.fill()
    answer = responder.respond(_request(rt, cert, hashes.SHA256()))
    assert _status(answer.der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", "miss"): 1}
    assert answer.der != _row_der(rt, cert.serial_number)


def test_new_certificates_are_presigned_on_the_next_step(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    presigner, _, _ = _parts(rt, responder_keys)
    presigner.fill()
    before = presigned_count(rt.engine)
    _issue(rt, 2)
    stats = presigner.step()
    assert stats.new == 2
    assert presigned_count(rt.engine) == before + 2


def test_a_new_signer_re_signs_every_row_in_the_background(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 2)
    presigner, responder, tally = _parts(rt, responder_keys)
    presigner.fill()
    old = _row_signers(rt)
    ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure_all(force=True)
    # the responder signs with the new signer, and still serves the old one's rows (0047) ...
    responder.poll()
    tally.take()
    der = _request(rt, certs[0], hashes.SHA1())
    answer = responder.respond(der)
    assert _status(answer.der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", STORE): 1}
    assert answer.der == _row_der(rt, certs[0].serial_number)
    # ... until the presigner has re-signed them all with the new one
    assert presigner.fill().rotated >= 2
    new = _row_signers(rt)
    assert len(new) == 1 and new != old
    fresh = Responder(
        responder.source, responder.signers, OcspOptions(), tally=tally, store=responder.store
    )
    assert _status(fresh.respond(der).der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", STORE): 1}


def _row_signers(rt: Runtime) -> set[int]:
    with rt.engine.connect() as conn:
        return set(conn.execute(select(ocsp_responses.c.signer_id).distinct()).scalars())


def test_the_rate_bounds_each_step(ca_runtime: Runtime, responder_keys: KeyStore) -> None:
    rt = ca_runtime
    _issue(rt, 6)
    presigner, _, _ = _parts(rt, responder_keys, rate=3.0)
    first = presigner.step()
    assert first.signed <= 3 and first.more
    assert presigner.fill().signed >= 3  # and the rest follows, at that rate


def test_rows_refresh_before_responders_stop_using_them(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    _issue(rt, 2)
    presigner, _, _ = _parts(rt, responder_keys)
    presigner.fill()
    half = OcspOptions().refresh_after.total_seconds()
    later = Presigner(
        rt.engine,
        presigner.signers,
        OcspOptions(),
        clock=lambda: utcnow().timestamp() + half - 60,  # inside the refresh lead
    )
    later._follow_head()
    stats = later.step()
    assert stats.refreshed >= 2
    with rt.engine.connect() as conn:
        oldest = conn.execute(select(ocsp_responses.c.refresh_at).order_by("refresh_at")).first()
    assert oldest is not None
    assert oldest[0] > utcnow().timestamp() + half - 60 + timedelta(minutes=1).total_seconds()


def test_prefetch_reads_several_answers_in_one_go(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 3)
    presigner, responder, tally = _parts(rt, responder_keys)
    presigner.fill()
    responder.poll()
    ders = [_request(rt, c, hashes.SHA1()) for c in certs]
    # a SHA-256 CertID has no pre-signed answer: prefetch leaves it to respond()
    sha256 = _request(rt, certs[0], hashes.SHA256())
    assert responder.prefetch([*ders, sha256]) == 3
    tally.take()
    for cert, der in zip(certs, ders, strict=True):
        assert responder.respond(der).der == _row_der(rt, cert.serial_number)
    assert tally.take() == {("good", "hit"): 3}
    assert responder.prefetch([ders[0]]) == 0  # one request alone: nothing to batch
