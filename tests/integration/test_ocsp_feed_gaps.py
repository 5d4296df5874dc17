"""Feed ids committed out of order (decision 0047), with two real PostgreSQL connections.

Transaction A revokes a certificate and inserts its ``status_changes`` row but does not
commit; transaction B commits a later change. A reader that only remembers the highest id
it read skips A's id for good. Both readers of the feed, the presigner and the responder's
hot-cache invalidation, must pick A's revocation up once A commits, also when A runs longer
than the hole window (a long bulk revocation), and must give up a hole whose writer rolled
back. The presigner's sweep is pushed an hour away so that only the feed can find A."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import Connection, insert, select, text, update

from ca.clock import utcnow
from ca.records import RevocationReason
from ca.store.models import StatusChange
from ca.store.tables import certificates, ocsp_responses
from ca.wiring import Runtime, open_runtime
from hsm import KeyStore, TokenConfig
from ocsp.change_feed import WINDOW
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.presigner import Presigner
from ocsp.responder import Responder
from ocsp.status import SqlStatusSource
from ocsp.tally import AnswerTally
from tests.integration.conftest import settings_for
from tests.integration.ocsp_store_support import issue_certs, responder_keys_of


class Clock:
    """A monotonic clock the test moves past the hole window."""

    def __init__(self) -> None:
        import time

        self.real = time.monotonic
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real() + self.offset


@pytest.fixture
def pg_runtime(tmp_path: Path, pg_url: str, hsm_config: TokenConfig) -> Iterator[Runtime]:
    rt = open_runtime(settings_for(tmp_path, pg_url, hsm_config), create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    yield rt
    rt.engine.dispose()


@pytest.fixture
def keys(pg_runtime: Runtime) -> Iterator[KeyStore]:
    with responder_keys_of(pg_runtime) as store:
        yield store


def _issue(rt: Runtime, n: int) -> list[x509.Certificate]:
    return issue_certs(rt, n, "Gap-Agent")


def _hold_revocation(conn: Connection, rt: Runtime, cert: x509.Certificate) -> int:
    """In ``conn``'s open transaction: revoke ``cert`` and insert its feed row (its id)."""
    serial = format(cert.serial_number, "x")
    now = utcnow()
    conn.execute(
        update(certificates)
        .where(certificates.c.serial_hex == serial)
        .values(status="revoked", revoked_at=now, revocation_reason=1)
    )
    issuer_id = conn.execute(
        select(certificates.c.issuer_id).where(certificates.c.serial_hex == serial)
    ).scalar_one()
    return int(
        conn.execute(
            insert(StatusChange)
            .values(issuer_id=issuer_id, serial_hex=serial, changed_at=now)
            .returning(StatusChange.id)
        ).scalar_one()
    )


def _row_status(rt: Runtime, cert: x509.Certificate) -> str:
    with rt.engine.connect() as conn:
        return str(
            conn.execute(
                select(ocsp_responses.c.cert_status).where(
                    ocsp_responses.c.serial_hex == format(cert.serial_number, "x")
                )
            ).scalar_one()
        )


def _presigner(rt: Runtime, keys: KeyStore, clock: Clock) -> Presigner:
    source = SqlStatusSource(rt.engine)
    presigner = Presigner(
        rt.engine, CurrentSigners(source, keys, utcnow), sweep_every=3600.0, monotonic=clock
    )
    presigner.fill()  # every row signed, the sweep an hour away
    return presigner


def _responder(rt: Runtime, keys: KeyStore, clock: Clock) -> Responder:
    source = SqlStatusSource(rt.engine)
    return Responder(
        source,
        CurrentSigners(source, keys, utcnow),
        OcspOptions(sign_rate_per_client=0),
        monotonic=clock,
        tally=AnswerTally(),
    )


def _status(responder: Responder, rt: Runtime, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, rt.authority.chain()[0], hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    responder.poll()
    answer = ocsp.load_der_ocsp_response(responder.respond(der).der)
    return answer.certificate_status


@pytest.mark.parametrize("past_the_window", [False, True])
def test_the_presigner_picks_up_a_change_committed_after_a_later_one(
    pg_runtime: Runtime, keys: KeyStore, past_the_window: bool
) -> None:
    rt = pg_runtime
    early, late = _issue(rt, 2)
    clock = Clock()
    presigner = _presigner(rt, keys, clock)
    with rt.engine.connect() as a:
        a.begin()
        a_id = _hold_revocation(a, rt, early)
        rt.authority.revoke(format(late.serial_number, "x"), RevocationReason.SUPERSEDED, "b")
        stats = presigner.step()
        assert stats.changes == 1 and _row_status(rt, late) == "revoked"
        assert a_id in presigner.feed.holes
        if past_the_window:
            # A is still running after the window (a long bulk revocation): its id is kept
            clock.offset += WINDOW * 2
            presigner.step()
            assert a_id in presigner.feed.holes
        assert _row_status(rt, early) == "issued"  # right: A has not committed
        a.commit()
    stats = presigner.step()
    assert stats.changes == 1
    assert _row_status(rt, early) == "revoked"
    assert not presigner.feed.holes


@pytest.mark.parametrize("past_the_window", [False, True])
def test_the_responder_drops_an_answer_whose_change_committed_late(
    pg_runtime: Runtime, keys: KeyStore, past_the_window: bool
) -> None:
    rt = pg_runtime
    early, late = _issue(rt, 2)
    clock = Clock()
    responder = _responder(rt, keys, clock)
    assert _status(responder, rt, early) is ocsp.OCSPCertStatus.GOOD  # now in the hot cache
    with rt.engine.connect() as a:
        a.begin()
        _hold_revocation(a, rt, early)
        rt.authority.revoke(format(late.serial_number, "x"), RevocationReason.SUPERSEDED, "b")
        assert _status(responder, rt, late) is ocsp.OCSPCertStatus.REVOKED
        if past_the_window:
            clock.offset += WINDOW * 2
        assert _status(responder, rt, early) is ocsp.OCSPCertStatus.GOOD
        a.commit()
    assert _status(responder, rt, early) is ocsp.OCSPCertStatus.REVOKED


def test_a_rolled_back_hole_is_given_up_after_the_window(
    pg_runtime: Runtime, keys: KeyStore
) -> None:
    rt = pg_runtime
    early, late = _issue(rt, 2)
    clock = Clock()
    presigner = _presigner(rt, keys, clock)
    with rt.engine.connect() as a:
        a.begin()
        a_id = _hold_revocation(a, rt, early)
        rt.authority.revoke(format(late.serial_number, "x"), RevocationReason.SUPERSEDED, "b")
        presigner.step()
        a.rollback()
    presigner.step()
    assert a_id in presigner.feed.holes  # within the window it is still looked for
    clock.offset += WINDOW + 1
    presigner.step()
    assert a_id not in presigner.feed.holes  # its writer ended: given up
    assert _row_status(rt, early) == "issued"


def test_a_feed_that_goes_back_drops_every_cached_answer(
    pg_runtime: Runtime, keys: KeyStore
) -> None:
    """Found in review: the cursor keeps the highest id it read, so after a restore (or a
    database swapped under the responders) the reused ids look old and a revocation under one
    of them never reached the hot caches; the 0038 reader moved back with the head."""
    rt = pg_runtime
    early, late = _issue(rt, 2)
    responder = _responder(rt, keys, Clock())
    presigner = _presigner(rt, keys, Clock())
    for serial in (late.serial_number, early.serial_number):
        rt.authority.revoke(format(serial, "x"), RevocationReason.CERTIFICATE_HOLD, "t")
        rt.authority.release_hold(format(serial, "x"), "t")
    assert _status(responder, rt, early) is ocsp.OCSPCertStatus.GOOD  # cached, feed at 4
    presigner.step()
    with rt.engine.begin() as conn:  # what a restore of an older backup looks like
        conn.execute(text("DELETE FROM status_changes"))
        seq = conn.execute(text("SELECT pg_get_serial_sequence('status_changes', 'id')"))
        conn.execute(text(f"ALTER SEQUENCE {seq.scalar_one()} RESTART WITH 1"))
    rt.authority.revoke(format(early.serial_number, "x"), RevocationReason.KEY_COMPROMISE, "t")
    assert _status(responder, rt, early) is ocsp.OCSPCertStatus.REVOKED
    presigner.step()
    assert _row_status(rt, early) == "revoked"
