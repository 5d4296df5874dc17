"""Issue 10 items 1 and 3, pure: the freshness bound (decision 0012) and HSM failures.

A status is vouched for only while the last successful feed poll is at most
``status_freshness`` old; past it every answer (pre-signed, nonce) is tryLater unless the
operator chose ``serve_stale_for``. HSM failures are tryLater with one log line per kind per
second. In-memory source, software keys, fake clock.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from pkcs11 import exceptions as p11e

from hsm.errors import HSMError, TokenNotFound
from hsm.keys import HsmEcPrivateKey
from hsm.keytypes import KeyType
from ocsp.decision import CertState, SerialStatus
from ocsp.loaded_signers import StaticSigners
from ocsp.options import OcspOptions
from ocsp.responder import LogLimiter, Responder
from ocsp.response import ResponseStatus, Signer
from tests.unit.helpers import NOW
from tests.unit.test_ocsp_core import (
    GOOD_SERIAL,
    World,
    cert_id,
    load,
    make_request,
    make_world,
)

OTHER_GOOD = 0x2222_3333_4444_5555_6666


@pytest.fixture
def world() -> World:
    w = make_world()
    w.source.records[(2, format(OTHER_GOOD, "x"))] = w.source.records[(2, format(GOOD_SERIAL, "x"))]
    return w


def _status(answer: Any) -> str:
    if answer.status is not ResponseStatus.SUCCESSFUL:
        return str(answer.status.name)
    return str(load(answer.der).certificate_status.name)


def _revoke_then_outage(world: World, responder: Responder) -> tuple[bytes, bytes, bytes]:
    """Warm the caches, then commit a revocation the responder has not polled and stop the
    database (the window between commit and poll, issue 10 item 1)."""
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    nonce = make_request([cert_id(world.issuing, GOOD_SERIAL)], nonce=b"n1")
    other = make_request([cert_id(world.issuing, OTHER_GOOD)])
    for der in (cached, nonce, other):
        assert _status(responder.respond(der)) == "GOOD"
    # Last successful poll: now. The revocation commits 0.1 s later, the database stops.
    world.clock.t += 0.1
    world.source.set(2, GOOD_SERIAL, SerialStatus(CertState.REVOKED, NOW, 1), change_id=1)
    world.source.down = True
    return cached, nonce, other


def test_unpolled_revocation_is_not_answered_good_past_the_freshness_bound(world: World) -> None:
    responder = world.responder()
    cached, nonce, other = _revoke_then_outage(world, responder)
    # Within the bound (1 s after the last good poll) the last known answers still go out.
    world.clock.t += 0.85  # 0.95 s after the last good poll; the failed poll happens now
    assert _status(responder.respond(cached)) == "GOOD"
    assert _status(responder.respond(nonce)) == "GOOD"
    # Past the bound nothing is vouched for: pre-signed, nonce, and other serials alike.
    world.clock.t += 0.1
    for der in (cached, nonce, other):
        assert responder.respond(der).status is ResponseStatus.TRY_LATER
    world.clock.t += 60
    for der in (cached, nonce, other):
        assert responder.respond(der).status is ResponseStatus.TRY_LATER
    # The database returns: the next feed poll (at most outage_poll_interval later) reads the
    # revocation and answers are right again.
    world.source.down = False
    world.clock.t += world.options.outage_poll_interval
    assert _status(responder.respond(cached)) == "REVOKED"
    assert _status(responder.respond(nonce)) == "REVOKED"
    assert _status(responder.respond(other)) == "GOOD"


def test_bound_is_exact_on_the_fake_clock(world: World) -> None:
    responder = world.responder()
    cached, _, _ = _revoke_then_outage(world, responder)
    world.clock.t += 0.9  # exactly 1.0 s after the last good poll
    assert _status(responder.respond(cached)) == "GOOD"
    world.clock.t += 0.001
    assert responder.respond(cached).status is ResponseStatus.TRY_LATER


def test_healthy_idle_responder_polls_first_and_answers(world: World) -> None:
    """No request for a long time is not staleness: the next request polls, then answers."""
    responder = world.responder()
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    first = responder.respond(cached)
    world.clock.t += 100
    assert responder.respond(cached) is first
    world.source.set(2, GOOD_SERIAL, SerialStatus(CertState.REVOKED, NOW, 1), change_id=1)
    world.clock.t += 100
    assert _status(responder.respond(cached)) == "REVOKED"


def test_bound_is_never_shorter_than_the_poll_interval(world: World) -> None:
    world.options = OcspOptions(status_freshness=0.05, poll_interval=0.2)
    assert world.options.vouch_for == pytest.approx(0.2)
    responder = world.responder()
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    first = responder.respond(cached)
    world.clock.t += 0.15  # between two polls of a healthy database
    assert responder.respond(cached) is first


def test_serve_stale_for_keeps_answering_and_costs_what_the_docs_say(world: World) -> None:
    world.options = OcspOptions(serve_stale_for=30.0)
    assert world.options.vouch_for == pytest.approx(31.0)
    responder = world.responder()
    cached, nonce, other = _revoke_then_outage(world, responder)
    world.clock.t += 20
    # The documented cost: the revocation committed before the outage is answered "good".
    assert _status(responder.respond(cached)) == "GOOD"
    answer = load(responder.respond(nonce).der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.this_update_utc == NOW  # honest: the last good poll, not now
    assert _status(responder.respond(other)) == "GOOD"
    uncached = make_request([cert_id(world.issuing, 0xABCDEF)])
    assert responder.respond(uncached).status is ResponseStatus.TRY_LATER  # never a guess
    world.clock.t += 11  # 31.1 s after the last good poll: the grace is over
    for der in (cached, nonce, other):
        assert responder.respond(der).status is ResponseStatus.TRY_LATER


# ---------------------------------------------------------------------------------- HSM
class FailingToken:
    """A key store whose token fails every signature the way python-pkcs11 does."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def _hsm_sign(self, label: str, mechanism: Any, data: bytes, param: Any = None) -> bytes:
        self.calls += 1
        raise self.exc


def _hsm_responder(world: World, exc: BaseException) -> tuple[Responder, FailingToken]:
    token = FailingToken(exc)
    public = world.signer.key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    key = HsmEcPrivateKey(token, "ocsp-signer", KeyType.EC_P256, public)
    signer = Signer(world.signer.certificate_der, key, world.signer.not_after)
    responder = Responder(
        world.source,
        StaticSigners({2: signer}),
        OcspOptions(sign_rate_per_client=0),
        clock=world.clock.wall,
        monotonic=world.clock.mono,
    )
    return responder, token


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agentca.ocsp" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "exc",
    [p11e.GeneralError(), p11e.DeviceRemoved(), TokenNotFound("token gone"), HSMError("x")],
    ids=["pkcs11-GeneralError", "pkcs11-DeviceRemoved", "TokenNotFound", "HSMError"],
)
def test_hsm_failures_are_try_later_with_one_log_line(
    world: World, exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    responder, token = _hsm_responder(world, exc)
    caplog.set_level(logging.DEBUG, logger="agentca.ocsp")
    for i in range(200):
        der = make_request([cert_id(world.issuing, GOOD_SERIAL)], nonce=i.to_bytes(2, "big"))
        assert responder.respond(der).status is ResponseStatus.TRY_LATER
        world.clock.t += 0.004  # 200 requests in 0.8 s
    assert token.calls == 200
    records = [
        r for r in caplog.records if r.name == "agentca.ocsp" and r.levelno >= logging.WARNING
    ]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert not record.exc_info and "\n" not in record.getMessage()
    assert "tryLater" in record.getMessage()
    # A second later the next failure is reported with the count of those left out.
    world.clock.t += 1
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)], nonce=b"again")
    assert responder.respond(der).status is ResponseStatus.TRY_LATER
    records = [
        r for r in caplog.records if r.name == "agentca.ocsp" and r.levelno >= logging.WARNING
    ]
    assert len(records) == 2
    assert "199 more since the last report" in records[1].getMessage()


def test_log_limiter_is_per_kind() -> None:
    t = [0.0]
    logger = logging.getLogger("test.limiter")
    limiter = LogLimiter(logger, every=1.0, monotonic=lambda: t[0])
    assert limiter.log(logging.WARNING, "a", "first a")
    assert limiter.log(logging.WARNING, "b", "first b")
    assert not limiter.log(logging.WARNING, "a", "again")
    t[0] = 1.0
    assert limiter.log(logging.WARNING, "a", "a after a second")


def test_a_lagging_replica_is_vouched_for_only_as_of_what_it_replayed(world: World) -> None:
    """On a streaming replica a poll confirms the primary as it was ``lag`` seconds before:
    a replica that stopped replaying (polls still succeed) is tryLater once the bound is past,
    never "good" for a revocation it has not replayed (issue 14 item 2)."""
    responder = world.responder()
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    world.source.lag = 0.3
    assert _status(responder.respond(cached)) == "GOOD"
    # the replica stops replaying: every poll succeeds but reads an ever older primary
    states = []
    for step in range(1, 15):
        world.clock.t += 0.1
        world.source.lag = 0.3 + 0.1 * step
        states.append((round(world.source.lag, 1), _status(responder.respond(cached))))
    assert all(state == "GOOD" for lag, state in states if lag <= 0.9), states
    assert all(state == "TRY_LATER" for lag, state in states if lag >= 1.1), states
    # replay resumes and catches up: answers again
    world.clock.t += 0.3
    world.source.lag = 0.05
    assert _status(responder.respond(cached)) == "GOOD"


def test_a_replica_that_replayed_nothing_is_not_vouched_for(world: World) -> None:
    world.source.lag = None
    responder = world.responder()
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    assert responder.respond(cached).status is ResponseStatus.TRY_LATER
    world.source.lag = 0.1
    world.clock.t += 1
    assert _status(responder.respond(cached)) == "GOOD"
