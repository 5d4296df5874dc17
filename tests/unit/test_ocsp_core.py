"""Pure OCSP core: request parsing, the section 7 decisions, signed responses, the responder's
cache and freshness logic, against an in-memory status source, software keys and a fake clock."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from ca.errors import CAError, ErrorCode
from ca.responder_certs import build_responder_certificate, needs_rotation
from ocsp.decision import EPOCH, GOOD, UNISSUED, CertState, SerialStatus, status_from_record
from ocsp.loaded_signers import StaticSigners
from ocsp.options import OcspOptions
from ocsp.request import parse_request
from ocsp.responder import Responder
from ocsp.response import ResponseStatus, Signer
from ocsp.status import Change, FeedHead, IssuerInfo, SignerInfo
from tests.unit.helpers import NOW, software_hierarchy

EXTENDED_REVOKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.9")


# ---------------------------------------------------------------------------------- fixtures
@dataclass
class Clock:
    """Wall and monotonic time that only move when told."""

    t: float = NOW.timestamp()

    def wall(self) -> float:
        return self.t

    def mono(self) -> float:
        return self.t - NOW.timestamp() + 1000.0


@dataclass
class FakeSource:
    """An in-memory StatusSource; ``down`` simulates an unreachable database."""

    issuers_list: list[IssuerInfo]
    records: dict[tuple[int, str], SerialStatus] = field(default_factory=dict)
    feed: list[Change] = field(default_factory=list)
    hidden: set[int] = field(default_factory=set)  # ids allocated but not committed
    down: bool = False
    status_queries: int = 0
    lag: float | None = 0.0  # a streaming replica's (FeedHead.lag)

    def _check(self) -> None:
        if self.down:
            raise CAError(ErrorCode.DB_UNAVAILABLE, "down")

    def head(self) -> FeedHead:
        self._check()
        top = max((c.id for c in self.feed), default=0)
        return FeedHead(top, 1, len(self.issuers_list), self.lag)

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]:
        self._check()
        extra = set(also)
        return [
            c for c in self.feed if (c.id > after or c.id in extra) and c.id not in self.hidden
        ][:limit]

    def issuers(self) -> list[IssuerInfo]:
        self._check()
        return list(self.issuers_list)

    def signers(self, valid_at: datetime) -> list[SignerInfo]:
        self._check()
        return []

    def snapshot(self) -> None:
        return None

    def statuses(self, issuer_id: int, serials: Sequence[str]) -> dict[str, SerialStatus]:
        self._check()
        self.status_queries += 1
        return {s: self.records.get((issuer_id, s), UNISSUED) for s in serials}

    def set(self, issuer_id: int, serial: int, status: SerialStatus, change_id: int) -> None:
        self.records[(issuer_id, format(serial, "x"))] = status
        self.feed.append(Change(change_id, issuer_id, format(serial, "x")))


def issuer_info(ident: int, cert: x509.Certificate) -> IssuerInfo:
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return IssuerInfo(
        id=ident,
        name=f"ca{ident}",
        certificate_der=parsed.dump(),
        name_hash_sha1=parsed.subject.sha1,
        key_hash_sha1=parsed.public_key.sha1,
        name_hash_sha256=parsed.subject.sha256,
        key_hash_sha256=parsed.public_key.sha256,
        parent_id=None,
        serial_hex=format(cert.serial_number, "x"),
    )


@dataclass
class World:
    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    signer_cert: x509.Certificate
    signer: Signer
    source: FakeSource
    clock: Clock
    options: OcspOptions

    def responder(self) -> Responder:
        return Responder(
            self.source,
            StaticSigners({2: self.signer}),
            self.options,
            clock=self.clock.wall,
            monotonic=self.clock.mono,
        )


GOOD_SERIAL = 0x1111_2222_3333_4444_5555
REVOKED_SERIAL = 0x6666_7777_8888_9999_AAAA
PENDING_SERIAL = 0xBBBB_CCCC_DDDD_EEEE_FFFF


def make_world() -> World:
    _, root, issuing_key, issuing = software_hierarchy()
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_cert = build_responder_certificate(
        signer_key.public_key(),
        0x5151,
        NOW - timedelta(hours=1),
        NOW + timedelta(hours=47),
        issuing,
        issuing_key,
    )
    signer = Signer(
        signer_cert.public_bytes(serialization.Encoding.DER),
        signer_key,
        signer_cert.not_valid_after_utc,
    )
    source = FakeSource([issuer_info(1, root), issuer_info(2, issuing)])
    source.records[(2, format(GOOD_SERIAL, "x"))] = GOOD
    source.records[(2, format(REVOKED_SERIAL, "x"))] = SerialStatus(
        CertState.REVOKED, NOW - timedelta(minutes=5), 1
    )
    source.records[(2, format(PENDING_SERIAL, "x"))] = status_from_record("pending", None, None)
    return World(root, issuing, issuing_key, signer_cert, signer, source, Clock(), OcspOptions())


@pytest.fixture
def world() -> World:
    return make_world()


def cert_id(issuer: x509.Certificate, serial: int, algorithm: str = "sha1") -> asn1_ocsp.CertId:
    parsed = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    name = parsed.subject.dump()
    key = parsed.public_key["public_key"].contents[1:]  # BIT STRING without unused-bits octet
    return asn1_ocsp.CertId(
        {
            "hash_algorithm": {"algorithm": algorithm},
            "issuer_name_hash": hashlib.new(algorithm, name).digest(),
            "issuer_key_hash": hashlib.new(algorithm, key).digest(),
            "serial_number": serial,
        }
    )


def make_request(
    ids: Sequence[asn1_ocsp.CertId], nonce: bytes | None = None, integer_nonce: bool = False
) -> bytes:
    """A DER request; ``integer_nonce`` re-tags the nonce value as an INTEGER (invalid)."""
    tbs: dict[str, object] = {"request_list": [{"req_cert": i} for i in ids]}
    if integer_nonce:
        nonce = b"ABC"
    if nonce is not None:
        tbs["request_extensions"] = [{"extn_id": "nonce", "extn_value": core.OctetString(nonce)}]
    der = bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())
    return der.replace(b"\x04\x03ABC", b"\x02\x03ABC") if integer_nonce else der


def load(der: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(der)


def verify(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """The response is signed by the included signer certificate, issued by ``issuer``."""
    (signer,) = response.certificates
    key = signer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    signer.verify_directly_issued_by(issuer)
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in eku
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    digest = hashlib.sha1(
        signer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    ).digest()
    assert response.responder_key_hash == digest
    return signer


# ---------------------------------------------------------------------------------- parsing
def test_parse_several_cert_ids_and_nonce(world: World) -> None:
    der = make_request(
        [cert_id(world.issuing, 1), cert_id(world.issuing, 2, "sha256")], nonce=b"n" * 32
    )
    request = parse_request(der)
    assert [c.serial_number for c in request.cert_ids] == [1, 2]
    assert [c.hash_algorithm for c in request.cert_ids] == ["sha1", "sha256"]
    assert request.nonce == b"n" * 32


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: b"garbage",
        lambda d: d[:-3],  # truncated
        lambda d: d + b"\x00",  # trailing data
        lambda d: b"\x30\x80" + d[2:],  # indefinite length
    ],
)
def test_malformed_bytes_are_refused(world: World, mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CAError) as err:
        parse_request(mangle(make_request([cert_id(world.issuing, 5)])))
    assert err.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("ids", "nonce", "raw"),
    [
        (0, None, None),  # empty request list
        (65, None, None),  # too many CertIDs
        (1, b"x" * 33, None),  # nonce longer than 32 octets (RFC 8954)
        (1, b"", None),  # empty nonce
        (1, None, True),  # nonce that is not an OCTET STRING
    ],
)
def test_invalid_requests_are_refused(world: World, ids: int, nonce, raw) -> None:  # type: ignore[no-untyped-def]
    der = make_request([cert_id(world.issuing, i + 1) for i in range(ids)], nonce, bool(raw))
    with pytest.raises(CAError):
        parse_request(der)


# ---------------------------------------------------------------------------------- decisions
def test_good_revoked_and_never_issued(world: World) -> None:
    responder = world.responder()
    good = load(responder.respond(make_request([cert_id(world.issuing, GOOD_SERIAL)])).der)
    assert good.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    verify(good, world.issuing)
    assert good.this_update_utc == NOW
    assert good.next_update_utc == NOW + timedelta(hours=1)
    assert not any(e.oid == EXTENDED_REVOKE for e in good.extensions)

    revoked = load(responder.respond(make_request([cert_id(world.issuing, REVOKED_SERIAL)])).der)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert revoked.revocation_time_utc == NOW - timedelta(minutes=5)

    for serial in (PENDING_SERIAL, 0x42, 0, -5, 1 << 170):
        never = load(responder.respond(make_request([cert_id(world.issuing, serial)])).der)
        assert never.certificate_status is ocsp.OCSPCertStatus.REVOKED, serial
        assert never.revocation_reason is x509.ReasonFlags.certificate_hold
        assert never.revocation_time_utc == EPOCH
        ext = never.extensions.get_extension_for_oid(EXTENDED_REVOKE)
        assert ext.value.value == b"\x05\x00"  # NULL
        verify(never, world.issuing)


def test_status_from_record_never_good_unless_issued() -> None:
    for status in (None, "pending", "failed", "bogus"):
        assert status_from_record(status, None, None).state is CertState.UNISSUED
    assert status_from_record("issued", None, None) is GOOD
    held = status_from_record("revoked", NOW, 6)
    assert held.state is CertState.REVOKED and held.answer_reason == 6


def test_answers_with_the_hash_algorithm_asked_for(world: World) -> None:
    responder = world.responder()
    for algorithm, cls in (("sha1", hashes.SHA1), ("sha256", hashes.SHA256)):
        der = make_request([cert_id(world.issuing, GOOD_SERIAL, algorithm)])
        response = load(responder.respond(der).der)
        assert isinstance(response.hash_algorithm, cls)
        assert response.serial_number == GOOD_SERIAL
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_foreign_issuer_and_unmatched_hash_are_unauthorized(world: World) -> None:
    responder = world.responder()
    _, _, _, foreign = software_hierarchy()
    for ids in (
        [cert_id(foreign, GOOD_SERIAL)],
        [cert_id(world.issuing, GOOD_SERIAL), cert_id(foreign, 7)],  # one foreign spoils all
        [cert_id(world.issuing, GOOD_SERIAL, "md5")],  # cannot match: not ours to vouch for
        [cert_id(world.issuing, GOOD_SERIAL), cert_id(world.root, world.issuing.serial_number)],
    ):
        answer = responder.respond(make_request(ids))
        assert answer.status is ResponseStatus.UNAUTHORIZED
        assert load(answer.der).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_multiple_cert_ids_and_nonce_are_signed_per_request(world: World) -> None:
    responder = world.responder()
    der = make_request(
        [
            cert_id(world.issuing, GOOD_SERIAL),
            cert_id(world.issuing, REVOKED_SERIAL, "sha256"),
            cert_id(world.issuing, 0x99),
        ],
        nonce=b"\x01" * 16,
    )
    first = responder.respond(der)
    parsed = asn1_ocsp.OCSPResponse.load(first.der)
    data = parsed["response_bytes"]["response"].parsed["tbs_response_data"]
    states = [r["cert_status"].name for r in data["responses"]]
    assert states == ["good", "revoked", "revoked"]
    assert [r["cert_id"].dump() for r in data["responses"]] == [
        i["req_cert"].dump() for i in asn1_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"]
    ]
    assert load(first.der).extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == (
        b"\x01" * 16
    )
    assert responder._responses == {}  # nonce answers are never cached
    verify(load(first.der), world.issuing)


# ---------------------------------------------------------------------------------- cache
def test_cached_answer_is_served_and_revocation_replaces_it(world: World) -> None:
    responder = world.responder()
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    first = responder.respond(der)
    assert responder.respond(der) is first  # same bytes, no new signature
    queries = world.source.status_queries
    world.source.set(2, GOOD_SERIAL, SerialStatus(CertState.REVOKED, NOW, 1), change_id=1)
    world.clock.t += 0.1  # before the next poll: still the cached answer
    assert responder.respond(der) is first
    world.clock.t += 0.15  # poll due: the change feed drops the entry
    answer = load(responder.respond(der).der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert world.source.status_queries == queries + 1


def test_change_committed_out_of_order_is_not_missed(world: World) -> None:
    responder = world.responder()
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    responder.respond(der)
    # Change 1 is allocated first but commits after change 2 (concurrent revocations).
    world.source.set(2, 0x77, SerialStatus(CertState.REVOKED, NOW, 1), change_id=2)
    world.source.set(2, GOOD_SERIAL, SerialStatus(CertState.REVOKED, NOW, 1), change_id=1)
    world.source.feed.sort(key=lambda c: c.id)
    world.source.hidden = {1}
    world.clock.t += 0.3
    assert load(responder.respond(der).der).certificate_status is ocsp.OCSPCertStatus.GOOD
    world.source.hidden = set()  # change 1 commits now
    world.clock.t += 0.3
    assert load(responder.respond(der).der).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_cached_answers_expire_before_next_update(world: World) -> None:
    responder = world.responder()
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    first = responder.respond(der)
    world.clock.t += 30 * 60 + 1  # past refresh (half the validity)
    again = responder.respond(der)
    assert again is not first
    assert load(again.der).this_update_utc > load(first.der).this_update_utc


def test_database_outage_with_serve_stale_for(world: World) -> None:
    """The availability option (decision 0012): known answers keep flowing during an outage,
    until their refresh point. By default they stop after 1 s (tests/unit/test_ocsp_freshness)."""
    world.options = OcspOptions(serve_stale_for=3600)
    responder = world.responder()
    cached = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    first = responder.respond(cached)
    responder.respond(make_request([cert_id(world.issuing, REVOKED_SERIAL)]))
    world.source.down = True
    world.clock.t += 60
    assert responder.respond(cached) is first  # still valid: served
    uncached = make_request([cert_id(world.issuing, 0xABCDEF)])
    assert responder.respond(uncached).status is ResponseStatus.TRY_LATER
    # A nonce request for a status known before the outage: honest thisUpdate.
    nonce = make_request([cert_id(world.issuing, REVOKED_SERIAL)], nonce=b"abc")
    answer = load(responder.respond(nonce).der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.this_update_utc == NOW
    world.clock.t += 31 * 60  # beyond the refresh point: nothing can be vouched for
    assert responder.respond(cached).status is ResponseStatus.TRY_LATER
    assert responder.respond(nonce).status is ResponseStatus.TRY_LATER
    world.source.down = False
    world.clock.t += 2
    assert load(responder.respond(cached).der).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert load(responder.respond(uncached).der).certificate_status is (ocsp.OCSPCertStatus.REVOKED)


def test_unexpected_errors_become_internal_error(world: World) -> None:
    responder = world.responder()

    def boom(*_: object) -> dict[str, SerialStatus]:
        raise RuntimeError("bug")

    world.source.statuses = boom  # type: ignore[method-assign]
    answer = responder.respond(make_request([cert_id(world.issuing, 0x1234)]))
    assert answer.status is ResponseStatus.INTERNAL_ERROR
    assert answer.der == b"\x30\x03\x0a\x01\x02"


# ---------------------------------------------------------------------------------- signer
def test_responder_certificate_profile(world: World) -> None:
    cert = world.signer_cert
    cert.verify_directly_issued_by(world.issuing)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_rotation_threshold() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=48)
    assert not needs_rotation(start, end, start + timedelta(hours=23), 0.5)
    assert needs_rotation(start, end, start + timedelta(hours=25), 0.5)


# ---------------------------------------------------------------------------------- budgets
def test_signing_is_budgeted_per_client_and_cached_answers_keep_flowing(world: World) -> None:
    """A nonce flood from one address spends only that address's budget (issue 9 item 4)."""
    world.options = world.options.replace(sign_rate_per_client=1.0, sign_burst_per_client=3)
    responder = world.responder()
    plain = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    presigned = responder.respond(plain, "10.0.0.9")  # a normal client warms the cache
    statuses = []
    for i in range(20):
        der = make_request([cert_id(world.issuing, 0x7000 + i)], nonce=bytes([i + 1]) * 8)
        statuses.append(load(responder.respond(der, "10.0.0.66").der).response_status)
    # the attacker spends its burst of 3 signatures, then gets tryLater
    assert statuses.count(ocsp.OCSPResponseStatus.SUCCESSFUL) == 3
    assert statuses[-1] is ocsp.OCSPResponseStatus.TRY_LATER
    # the attacker still gets pre-signed answers; a nonce request over budget gets the
    # pre-signed answer without a nonce (RFC 8954), never tryLater when one is cached
    assert responder.respond(plain, "10.0.0.66") is presigned
    nonce_req = make_request([cert_id(world.issuing, GOOD_SERIAL)], nonce=b"\x05" * 8)
    assert responder.respond(nonce_req, "10.0.0.66") is presigned
    # another client's signed work is untouched
    fresh = make_request([cert_id(world.issuing, REVOKED_SERIAL)], nonce=b"\x06" * 8)
    answer = load(responder.respond(fresh, "10.0.0.10").der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    # the budget refills with time
    world.clock.t += 2.0
    again = make_request([cert_id(world.issuing, 0x9999)], nonce=b"\x07" * 8)
    assert load(responder.respond(again, "10.0.0.66").der).response_status is (
        ocsp.OCSPResponseStatus.SUCCESSFUL
    )


def test_many_cert_ids_cost_more_of_the_budget(world: World) -> None:
    world.options = world.options.replace(sign_rate_per_client=1.0, sign_burst_per_client=10)
    responder = world.responder()
    big = make_request([cert_id(world.issuing, 0x100 + i) for i in range(64)])
    first = load(responder.respond(big, "10.0.0.66").der)
    second = load(responder.respond(big, "10.0.0.66").der)
    assert first.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL  # cost 8 of 10
    assert second.response_status is ocsp.OCSPResponseStatus.TRY_LATER
