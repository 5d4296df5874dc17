"""Pre-signed answers across a responder-certificate rotation (decision 0047), on the real
SoftHSM2 tokens and both databases.

After a rotation, rows of the previous signer stay usable while that signer is valid for the
issuer and not retired; the presigner moves them to the new signer in the background, oldest
refresh time first, within its rate. A retired signer's rows, an expired signer's rows, a row
naming another issuer's signer, and a row whose bytes say another status than its columns
are never served."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy import select, update

from ca.clock import utcnow
from ca.records import RevocationReason
from ca.responder_certs import ResponderCertRotator
from ca.store.models import OcspSigner
from ca.store.tables import ocsp_responses
from ca.wiring import Runtime
from hsm import KeyStore
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.presigner import Presigner
from ocsp.responder import Responder
from ocsp.status import SqlStatusSource
from ocsp.tally import STORE, AnswerTally
from tests.integration.ocsp_store_support import issue_certs, plain_request, responder_keys_of

_r = ocsp_responses.c


@pytest.fixture
def responder_keys(ca_runtime: Runtime) -> Iterator[KeyStore]:
    with responder_keys_of(ca_runtime) as store:
        yield store


def _issue(rt: Runtime, n: int) -> list[x509.Certificate]:
    return issue_certs(rt, n, "Rotation-Agent")


def _request(rt: Runtime, cert: x509.Certificate) -> bytes:
    return plain_request(rt, cert)


def _presigner(rt: Runtime, keys: KeyStore, **kw: float) -> Presigner:
    source = SqlStatusSource(rt.engine)
    return Presigner(rt.engine, CurrentSigners(source, keys, utcnow), OcspOptions(), **kw)


def _responder(rt: Runtime, keys: KeyStore, wall_offset: float = 0.0) -> Responder:
    source = SqlStatusSource(rt.engine)
    return Responder(
        source,
        CurrentSigners(source, keys, utcnow),
        OcspOptions(sign_rate_per_client=0),
        clock=lambda: utcnow().timestamp() + wall_offset,
        tally=AnswerTally(),
        store=source,
    )


def _rows(rt: Runtime) -> dict[str, tuple[int, int, bytes]]:
    """serial -> (signer_id, refresh_at, der)"""
    with rt.engine.connect() as conn:
        rows = conn.execute(select(_r.serial_hex, _r.signer_id, _r.refresh_at, _r.der))
        return {r[0]: (int(r[1]), int(r[2]), bytes(r[3])) for r in rows}


def _signer_ids(rt: Runtime, issuer_id: int) -> list[int]:
    with rt.engine.connect() as conn:
        query = select(OcspSigner.id).where(OcspSigner.issuer_id == issuer_id)
        return [int(i) for i in conn.execute(query.order_by(OcspSigner.id)).scalars()]


def _served_from_store(responder: Responder, rt: Runtime, cert: x509.Certificate) -> bool:
    responder.poll()
    responder.tally.take()
    responder.respond(_request(rt, cert))
    return any(cache == STORE for _, cache in responder.tally.take())


def test_rotation_goes_oldest_first_within_the_rate(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    certs = _issue(rt, 3)
    _presigner(rt, responder_keys).fill()
    # distinct refresh times, the last certificate's the oldest
    now = int(utcnow().timestamp())
    with rt.engine.begin() as conn:
        for i, cert in enumerate(certs):
            conn.execute(
                update(ocsp_responses)
                .where(_r.serial_hex == format(cert.serial_number, "x"))
                .values(refresh_at=now + 1000 + 100 * (len(certs) - i))
            )
    before = _rows(rt)
    ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure_all(force=True)
    presigner = _presigner(rt, responder_keys, rate=1.0)
    stats = presigner.step()
    assert stats.rotated == 1 and stats.rate_limited
    after = _rows(rt)
    moved = [s for s in before if after[s][0] != before[s][0]]
    assert moved == [format(certs[-1].serial_number, "x")]
    # the other rows are still served meanwhile, from the store
    assert _served_from_store(_responder(rt, responder_keys), rt, certs[0])
    assert presigner.fill().rotated == len(certs) - 1
    assert len({v[0] for v in _rows(rt).values()}) == 1
    assert presigner.step().rotated == 0  # nothing left: no more work for it


def test_a_retired_signers_rows_are_never_served_and_re_signed_at_once(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    presigner = _presigner(rt, responder_keys)
    presigner.fill()
    responder = _responder(rt, responder_keys)
    assert _served_from_store(responder, rt, cert)  # and now in its hot cache
    old = _rows(rt)[format(cert.serial_number, "x")]
    results = ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure_all(
        retire_previous=True
    )
    with rt.engine.connect() as conn:
        retired = conn.execute(
            select(OcspSigner.id).where(OcspSigner.retired_at.is_not(None))
        ).scalars()
        assert old[0] in set(retired)
    # the hot cache and the store both refuse the retired signer's answer
    responder.poll()
    answer = responder.respond(_request(rt, cert))
    assert answer.der != old[2]
    assert not _served_from_store(responder, rt, cert)
    # the presigner's sweep re-signs the row at once (no background wait)
    assert presigner.step().swept >= 1
    row = _rows(rt)[format(cert.serial_number, "x")]
    assert row[0] in {r.signer_id for r in results}
    assert _served_from_store(_responder(rt, responder_keys), rt, cert)


def test_an_expired_signers_row_is_never_served(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """The responder learns which signers it trusts when it reloads them; an answer of one that
    expired since is refused at serving time even if its row claims a later nextUpdate."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _presigner(rt, responder_keys).fill()
    later = 49 * 3600.0  # past the 48 h responder certificate
    t = int(utcnow().timestamp() + later)
    with rt.engine.begin() as conn:
        conn.execute(
            update(ocsp_responses).values(
                this_update=t - 10, next_update=t + 600, refresh_at=t + 300
            )
        )
    responder = _responder(rt, responder_keys, wall_offset=later)
    responder.poll()
    answer = responder.respond(_request(rt, cert))
    assert answer.der != _rows(rt)[format(cert.serial_number, "x")][2]
    assert not any(cache == STORE for _, cache in responder.tally.take())


def test_a_row_outliving_its_signer_is_not_served(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """Found in review: a row valid now whose nextUpdate is past its signer's certificate was
    served (clients cache it till nextUpdate, but it stops verifying when the signer ends)."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _presigner(rt, responder_keys).fill()
    with rt.engine.connect() as conn:
        end = conn.execute(select(OcspSigner.not_after).where(OcspSigner.issuer_id == 2)).scalar()
    assert end is not None
    later = end.timestamp() - utcnow().timestamp() - 1800  # half an hour before it ends
    t = int(utcnow().timestamp() + later)
    with rt.engine.begin() as conn:
        conn.execute(
            update(ocsp_responses).values(
                this_update=t - 10, next_update=int(end.timestamp()) + 300, refresh_at=t + 600
            )
        )
    responder = _responder(rt, responder_keys, wall_offset=later)
    responder.poll()
    answer = responder.respond(_request(rt, cert))
    assert answer.der != _rows(rt)[format(cert.serial_number, "x")][2]
    assert not any(cache == STORE for _, cache in responder.tally.take())


def test_a_row_naming_another_issuers_signer_is_not_served(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _presigner(rt, responder_keys).fill()
    root_id = min(i.id for i in SqlStatusSource(rt.engine).issuers())
    (root_signer,) = _signer_ids(rt, root_id)
    with rt.engine.begin() as conn:
        conn.execute(update(ocsp_responses).values(signer_id=root_signer))
    assert not _served_from_store(_responder(rt, responder_keys), rt, cert)


def test_a_row_whose_bytes_say_good_is_not_served_for_a_revoked_certificate(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """Found in review: the responder trusted the row's columns for the status, never its
    bytes. A row rewritten with an earlier genuine "good" answer of the certificate (by a
    writer of ocsp_responses, or a restore mixing two backups) was served for a revoked one."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    serial = format(cert.serial_number, "x")
    presigner = _presigner(rt, responder_keys)
    presigner.fill()
    good = _rows(rt)[serial][2]
    rt.authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "t")
    assert presigner.step().changes == 1
    with rt.engine.begin() as conn:
        conn.execute(update(ocsp_responses).where(_r.serial_hex == serial).values(der=good))
    responder = _responder(rt, responder_keys)
    responder.poll()
    answer = ocsp.load_der_ocsp_response(responder.respond(_request(rt, cert)).der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_a_responder_whose_token_lacks_the_new_key_still_serves_the_store(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """0038 had such a host sign every cold request on demand; the new signer is valid for the
    issuer, so its pre-signed rows are served (the host signs with what it holds)."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    presigner = _presigner(rt, responder_keys)
    presigner.fill()
    ResponderCertRotator(rt.sessions, rt.keys, responder_keys).ensure_all(force=True)
    presigner.fill()
    source = SqlStatusSource(rt.engine)
    newest = max(_signer_ids(rt, 2))
    signers = CurrentSigners(source, responder_keys, utcnow)
    signers.reload()
    assert signers.signer_for(2).row_id == newest
    # a host without the newest key: its signer is the older one
    with rt.engine.connect() as conn:
        label = conn.execute(select(OcspSigner.key_label).where(OcspSigner.id == newest)).scalar()
    assert label is not None
    assert _rows(rt)[format(cert.serial_number, "x")][0] == newest
    lacking = _Without(responder_keys, label)
    responder = Responder(
        source,
        CurrentSigners(source, lacking, utcnow),  # type: ignore[arg-type]
        OcspOptions(sign_rate_per_client=0),
        tally=AnswerTally(),
        store=source,
    )
    responder.poll()
    assert responder.signers.signer_for(2).row_id != newest
    assert _served_from_store(responder, rt, cert)


class _Without:
    """The responder token as a host sees it that never got one key."""

    def __init__(self, keys: KeyStore, label: str) -> None:
        self.keys, self.label = keys, label

    def get(self, label: str) -> object:
        from hsm import KeyNotFound

        if label == self.label:
            raise KeyNotFound(label)
        return self.keys.get(label)

    def exists(self, label: str) -> bool:
        return label != self.label and self.keys.exists(label)
