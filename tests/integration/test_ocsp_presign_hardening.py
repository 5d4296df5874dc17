"""The pre-signed OCSP store (decision 0038) under the findings of an attacker's review:
expired certificates are not re-signed forever, a rate-bound presigner does not spin, a
store that cannot be read falls back to signing on demand, stored answers never outlive the
responder's own response validity nor carry a thisUpdate ahead of its clock, and padded
requests cannot fill the hot cache with large keys. Each test failed before its fix."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy import text, update

from ca.clock import utcnow
from ca.store.tables import certificates
from ca.wiring import Runtime
from hsm import KeyStore
from ocsp.loaded_signers import CurrentSigners
from ocsp.options import OcspOptions
from ocsp.presigner import Presigner
from ocsp.responder import Responder
from ocsp.response import ResponseStatus
from ocsp.status import SqlStatusSource
from ocsp.tally import AnswerTally
from tests.integration.ocsp_store_support import issue_certs, plain_request, responder_keys_of


@pytest.fixture
def responder_keys(ca_runtime: Runtime) -> Iterator[KeyStore]:
    with responder_keys_of(ca_runtime) as store:
        yield store


def _issue(rt: Runtime, n: int) -> list[x509.Certificate]:
    return issue_certs(rt, n, "Review-Agent")


def _request(rt: Runtime, cert: x509.Certificate) -> bytes:
    return plain_request(rt, cert)


def _presigner(rt: Runtime, keys: KeyStore, **kw: object) -> Presigner:
    source = SqlStatusSource(rt.engine)
    return Presigner(rt.engine, CurrentSigners(source, keys, utcnow), OcspOptions(), **kw)  # type: ignore[arg-type]


def _responder(rt: Runtime, keys: KeyStore, options: OcspOptions | None = None) -> Responder:
    source = SqlStatusSource(rt.engine)
    return Responder(
        source,
        CurrentSigners(source, keys, utcnow),
        options or OcspOptions(),
        tally=AnswerTally(),
        store=source,
    )


def test_expired_certificates_are_not_re_signed_by_the_refresh(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """The sweep skips expired certificates, the refresh does not: every row ever written is
    re-signed every refresh window forever (12 h certificates: the table, and the HSM work,
    grow by the issuance rate with no end; past --rate the live rows go stale)."""
    rt = ca_runtime
    _live, expired = _issue(rt, 2)
    presigner = _presigner(rt, responder_keys)
    presigner.fill()
    with rt.engine.begin() as conn:
        conn.execute(
            update(certificates)
            .where(certificates.c.serial_hex == format(expired.serial_number, "x"))
            .values(not_after=utcnow() - timedelta(seconds=5))
        )
    half = OcspOptions().refresh_after.total_seconds()
    later = Presigner(
        rt.engine,
        presigner.signers,
        OcspOptions(),
        clock=lambda: utcnow().timestamp() + half - 60,  # inside the refresh lead
    )
    stats = later.step()
    assert stats.refreshed == 1, "the expired certificate's answer was re-signed as well"


def test_a_rate_bound_presigner_loop_does_not_spin(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """Over the --rate budget a step returns more=True and run() steps again at once: each
    step is 5+ queries (head, changes, new, refresh, sweep) on the primary for ~1 signature."""
    rt = ca_runtime
    _issue(rt, 8)
    presigner = _presigner(rt, responder_keys, rate=1.0)
    steps = 0
    real_step = presigner.step

    def counting_step():  # type: ignore[no-untyped-def]
        nonlocal steps
        steps += 1
        return real_step()

    presigner.step = counting_step  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=presigner.run, args=(stop, 0.5))
    thread.start()
    stop.wait(1.5)
    stop.set()
    thread.join(10)
    # at 1 signature/s and --every 0.5, a handful of steps is all the work there is
    assert steps <= 10, f"{steps} steps in 1.5 s"


def test_a_store_failure_falls_back_to_signing_on_demand(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """0038 section 4: a miss goes to the store 'then falls back to signing on demand'. When
    only the store query fails (no SELECT on ocsp_responses before 'db roles' is re-run after
    the upgrade, a responder on new code against a 0011 schema, the kept connection dropped
    while idle) the answer is tryLater instead, for every cold request."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    with rt.engine.begin() as conn:
        conn.execute(text("DROP TABLE ocsp_responses"))
    responder = _responder(rt, responder_keys)
    answer = responder.respond(_request(rt, cert))
    assert answer.status is ResponseStatus.SUCCESSFUL, answer.label


def test_stored_answers_keep_the_responders_response_validity(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """'agentca ocsp serve --response-validity 10m' bounds what clients may cache; the
    presigner (cli/presign_commands.py: OcspOptions()) signs 1 h answers and the responder
    serves them unchecked."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _presigner(rt, responder_keys).fill()
    responder = _responder(rt, responder_keys, OcspOptions(response_validity=timedelta(minutes=10)))
    answer = ocsp.load_der_ocsp_response(responder.respond(_request(rt, cert)).der)
    assert answer.next_update_utc is not None
    validity = answer.next_update_utc - answer.this_update_utc
    assert validity <= timedelta(minutes=10), f"served an answer valid for {validity}"


def test_the_hot_cache_is_not_filled_with_attacker_sized_keys(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """The hot cache keys on the whole request: any one-CertID, no-nonce request (padded with
    an unknown extension, up to max_request_bytes) is stored as a key for free (no signing
    budget on a hit): 20,000 x 16 KiB = 320 MiB per worker, and FIFO pushes every legitimate
    answer out."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    _presigner(rt, responder_keys).fill()
    responder = _responder(rt, responder_keys)
    plain = _request(rt, cert)
    assert responder.respond(plain).status is ResponseStatus.SUCCESSFUL
    req_cert = asn1_ocsp.OCSPRequest.load(plain)["tbs_request"]["request_list"][0]["req_cert"]
    for i in range(30):
        padded = asn1_ocsp.OCSPRequest(
            {
                "tbs_request": {
                    "request_list": [{"req_cert": req_cert}],
                    "request_extensions": [
                        {
                            "extn_id": "1.3.6.1.4.1.99999.1",
                            "critical": False,
                            "extn_value": i.to_bytes(4, "big") + b"\x00" * 15000,
                        }
                    ],
                }
            }
        ).dump()
        assert len(padded) < OcspOptions().max_request_bytes
        assert responder.respond(padded, client="203.0.113.9").status is ResponseStatus.SUCCESSFUL
    key_bytes = sum(len(k) for k in responder._responses)
    assert key_bytes < 30 * 1024, f"{key_bytes} bytes of cache keys for one certificate"


def test_a_presigner_with_a_fast_clock_cannot_publish_future_answers(
    ca_runtime: Runtime, responder_keys: KeyStore
) -> None:
    """The presigner's key store has no clock guard (cli/presign_commands.py builds
    KeyStore(...) without ca.keysetup.guard_signing, unlike the responder and the CA), and
    the responder serves any row whose refresh_at is ahead: a CA host 6 h fast publishes
    answers whose thisUpdate is 6 h in the future (clients reject them), which every
    responder serves, and the presigner will not refresh, for 6.5 h."""
    rt = ca_runtime
    (cert,) = _issue(rt, 1)
    source = SqlStatusSource(rt.engine)
    fast = Presigner(
        rt.engine,
        CurrentSigners(source, responder_keys, utcnow),
        OcspOptions(),
        clock=lambda: utcnow().timestamp() + 6 * 3600,
    )
    fast.fill()
    responder = _responder(rt, responder_keys)
    answer = ocsp.load_der_ocsp_response(responder.respond(_request(rt, cert)).der)
    ahead = answer.this_update_utc - utcnow()
    assert ahead <= timedelta(minutes=1), f"served an answer whose thisUpdate is {ahead} ahead"
