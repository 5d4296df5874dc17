"""The host's answer map (decision 0050) on the real SoftHSM2 tokens and both databases: a
worker answers from the mapped snapshot without a database read, never answers "good" from it
for a certificate it has seen revoked since the snapshot (also a worker that starts after the
revocation), serves the map again once a newer one carries the change, and ignores a damaged
file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ca.clock import utcnow
from ca.records import RevocationReason
from ca.wiring import Runtime
from hsm import KeyStore
from ocsp.answer_map import FILE_NAME, MapBuilder, build_from_database
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.presigner import Presigner
from ocsp.responder import MAP_MARGIN, Responder
from ocsp.status import SqlStatusSource
from ocsp.tally import MAP, STORE, AnswerTally
from tests.integration.ocsp_store_support import issue_certs, plain_request, responder_keys_of


@pytest.fixture
def responder_keys(ca_runtime: Runtime) -> Iterator[KeyStore]:
    with responder_keys_of(ca_runtime) as store:
        yield store


def _issue(rt: Runtime, n: int) -> list[x509.Certificate]:
    return issue_certs(rt, n, "Map-Agent")


def _request(rt: Runtime, cert: x509.Certificate) -> bytes:
    return plain_request(rt, cert)


def _status(der: bytes) -> ocsp.OCSPCertStatus:
    answer = ocsp.load_der_ocsp_response(der)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status


def _responder(rt: Runtime, keys: KeyStore, path: Path, tally: AnswerTally) -> Responder:
    source = SqlStatusSource(rt.engine)
    return Responder(
        source,
        CurrentSigners(source, keys, utcnow),
        OcspOptions(),
        tally=tally,
        store=source,
        answer_map=path,
    )


def _fill(rt: Runtime, keys: KeyStore) -> Presigner:
    source = SqlStatusSource(rt.engine)
    presigner = Presigner(rt.engine, CurrentSigners(source, keys, utcnow), OcspOptions())
    presigner.fill()
    return presigner


def test_answers_come_from_the_map_and_never_good_after_a_revocation(
    ca_runtime: Runtime, responder_keys: KeyStore, tmp_path: Path
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 3)
    presigner = _fill(rt, responder_keys)
    path = tmp_path / FILE_NAME
    assert build_from_database(rt.engine, path) >= 3
    tally = AnswerTally()
    responder = _responder(rt, responder_keys, path, tally)
    responder.poll()  # reads the feed, then maps the file

    ders = [_request(rt, c) for c in certs]
    for der in ders:
        answer = responder.cached(der)  # the event loop's path: no I/O at all
        assert answer is not None and _status(answer.der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", MAP): 3}

    # revoked after the snapshot: once this worker has read the change, the map's "good"
    # entry is never served, on either path
    rt.authority.revoke(format(certs[1].serial_number, "x"), RevocationReason.KEY_COMPROMISE, "t")
    responder.poll()
    assert responder.cached(ders[1]) is None
    assert _status(responder.respond(ders[1]).der) is ocsp.OCSPCertStatus.REVOKED
    assert ("revoked", MAP) not in tally.take()
    # a worker that starts after the revocation, on the same old map, does not serve it
    # either (its first feed read covers the change)
    late = _responder(rt, responder_keys, path, AnswerTally())
    late.poll()
    assert late.cached(ders[1]) is None
    assert _status(late.respond(ders[1]).der) is ocsp.OCSPCertStatus.REVOKED
    assert late.cached(ders[0]) is not None  # the others still come from the map

    # a map built after the presigner caught up carries the revoked answer and is used
    assert presigner.step().changes == 1
    tally.take()
    third = _responder(rt, responder_keys, path, tally)
    third.poll()  # its first feed read sees the revocation: the old map's entry is vetoed
    assert third.cached(ders[1]) is None
    time.sleep(MAP_MARGIN + 0.1)  # a snapshot begun after the change was seen
    build_from_database(rt.engine, path)
    third._next_map_check = 0.0
    third.poll()
    answer = third.cached(ders[1])
    assert answer is not None and _status(answer.der) is ocsp.OCSPCertStatus.REVOKED
    assert tally.take() == {("revoked", MAP): 1}


def test_a_damaged_or_missing_map_is_not_used(
    ca_runtime: Runtime, responder_keys: KeyStore, tmp_path: Path
) -> None:
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _fill(rt, responder_keys)
    path = tmp_path / FILE_NAME
    tally = AnswerTally()
    responder = _responder(rt, responder_keys, path, tally)
    responder.poll()  # no file yet
    der = _request(rt, cert)
    assert responder.cached(der) is None
    assert _status(responder.respond(der).der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", STORE): 1}

    build_from_database(rt.engine, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])  # truncated
    fresh = _responder(rt, responder_keys, path, tally)
    fresh.poll()
    assert fresh.cached(der) is None
    assert _status(fresh.respond(der).der) is ocsp.OCSPCertStatus.GOOD
    assert tally.take() == {("good", STORE): 1}


def test_a_map_built_before_a_change_or_ahead_of_the_database_is_not_used(
    ca_runtime: Runtime, responder_keys: KeyStore, tmp_path: Path
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 2)
    _fill(rt, responder_keys)
    path = tmp_path / FILE_NAME
    ders = [_request(rt, c) for c in certs]
    # a map whose snapshot says the feed is further on than the database (a restore)
    build_from_database(rt.engine, path)
    data = bytearray(path.read_bytes())
    feed_at = 8 + 4 * 4 + 8 + 8  # magic, four u32, table offset, built_at
    data[feed_at : feed_at + 8] = (10**9).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    ahead = _responder(rt, responder_keys, path, AnswerTally())
    ahead.poll()
    assert ahead.cached(ders[0]) is None
    # an older map never replaces a newer one (a second builder, a clock step)
    older = tmp_path / "older.map"
    build_from_database(rt.engine, older)
    time.sleep(0.05)
    build_from_database(rt.engine, path)
    tally = AnswerTally()
    responder = _responder(rt, responder_keys, path, tally)
    responder.poll()
    assert responder.cached(ders[0]) is not None
    older.replace(path)
    responder._next_map_check = 0.0
    responder.poll()
    assert responder.cached(ders[0]) is None


def test_one_builder_per_directory_writes_the_map(
    ca_runtime: Runtime, responder_keys: KeyStore, tmp_path: Path
) -> None:
    rt = ca_runtime
    _issue(rt, 2)
    _fill(rt, responder_keys)
    builders = [
        MapBuilder(lambda p: build_from_database(rt.engine, p), tmp_path / "map", interval=30)
        for _ in range(2)
    ]
    for builder in builders:
        builder.start()
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "map" / FILE_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert (tmp_path / "map" / FILE_NAME).exists()
        assert sorted(b.builds for b in builders) == [0, 1]  # the lock holder only
        assert (tmp_path / "map").stat().st_mode & 0o077 == 0
    finally:
        for builder in builders:
            builder.stop()
