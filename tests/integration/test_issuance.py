"""The issuance cycle against real SoftHSM2 keys, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store
from sqlalchemy import func, select

from ca.errors import CAError, ErrorCode
from ca.extensions import read_agent_extensions
from ca.requests import CertificateFilter, IssuanceRequest
from ca.revocation import RevocationReason
from ca.store.models import Certificate, CertStatus
from ca.wiring import Runtime
from hsm import KeyNotExtractable
from tests.unit.helpers import sample_extensions


def _request(**changes) -> IssuanceRequest:
    values = dict(
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        agent_name="ExecutionAgent-ETH-01",
        extensions=sample_extensions(),
        validity=timedelta(hours=2),
    )
    values.update(changes)
    return IssuanceRequest(**values)  # type: ignore[arg-type]


def _count(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)


def test_issue_records_and_chains_to_root(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    record = ca.issue(_request(), actor="test")
    assert record.status == CertStatus.ISSUED
    cert = record.certificate
    assert cert is not None
    issuing, root = ca.chain()
    verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
    assert verifier.verify(cert, [issuing]).chain[-1] == root
    assert read_agent_extensions(cert) == sample_extensions()
    assert record.scopes == ("query_anonymized_order_book", "submit_limit_order")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(hours=2, seconds=60)
    assert record.fingerprint_sha256 == hashlib.sha256(record.certificate_der or b"").hexdigest()
    again = ca.get(record.serial_hex)
    assert again.certificate_der == record.certificate_der


def test_serials_unique_and_random(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    serials = {ca.issue(_request(), actor="test").serial_hex for _ in range(20)}
    assert len(serials) == 20
    assert all(len(s) >= 17 for s in serials)  # > 64 bits


def test_revoke_records_reason_and_refuses_twice(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    record = ca.issue(_request(), actor="test")
    revoked = ca.revoke(record.serial_hex, RevocationReason.KEY_COMPROMISE, actor="officer")
    assert revoked.status == CertStatus.REVOKED
    assert revoked.revocation_reason is RevocationReason.KEY_COMPROMISE
    assert revoked.revoked_at is not None
    with pytest.raises(CAError) as err:
        ca.revoke(record.serial_hex, RevocationReason.SUPERSEDED, actor="officer")
    assert err.value.code is ErrorCode.ALREADY_REVOKED
    with pytest.raises(CAError) as err:
        ca.revoke("abcdef0123", RevocationReason.SUPERSEDED, actor="officer")
    assert err.value.code is ErrorCode.NOT_FOUND


def test_hold_can_be_released_or_made_permanent(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    a = ca.issue(_request(), actor="t")
    ca.revoke(a.serial_hex, RevocationReason.CERTIFICATE_HOLD, actor="t")
    assert ca.release_hold(a.serial_hex, actor="t").status == CertStatus.ISSUED
    b = ca.issue(_request(), actor="t")
    ca.revoke(b.serial_hex, RevocationReason.CERTIFICATE_HOLD, actor="t")
    final = ca.revoke(b.serial_hex, RevocationReason.KEY_COMPROMISE, actor="t")
    assert final.revocation_reason is RevocationReason.KEY_COMPROMISE
    with pytest.raises(CAError):
        ca.release_hold(b.serial_hex, actor="t")


def test_list_filters(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    first = ca.issue(_request(agent_name="alpha"), actor="t")
    ca.issue(_request(agent_name="beta"), actor="t")
    ca.revoke(first.serial_hex, RevocationReason.SUPERSEDED, actor="t")
    assert [r.agent_name for r in ca.list(CertificateFilter(agent_name="alpha"))] == ["alpha"]
    assert [r.agent_name for r in ca.list(CertificateFilter(status="revoked"))] == ["alpha"]
    assert len(ca.list(CertificateFilter(officer="compliance-officer@enterprise.io"))) == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"agent_name": "bad/name"}, ErrorCode.INVALID_NAME),
        ({"validity": timedelta(days=30)}, ErrorCode.INVALID_VALIDITY),
        ({"validity": timedelta(seconds=-5)}, ErrorCode.INVALID_VALIDITY),
        (
            {"public_key": rsa.generate_private_key(65537, 1024).public_key()},
            ErrorCode.UNSUPPORTED_KEY,
        ),
    ],
)
def test_bad_requests_leave_no_record(ca_runtime: Runtime, change: dict, code: ErrorCode) -> None:
    before = _count(ca_runtime)
    with pytest.raises(CAError) as err:
        ca_runtime.authority.issue(_request(**change), actor="t")
    assert err.value.code is code
    assert _count(ca_runtime) == before


def test_signing_failure_leaves_failed_record_never_issued(ca_runtime: Runtime) -> None:
    """If the HSM fails after the reservation, the row ends 'failed', never 'issued'."""
    ca = ca_runtime.authority
    issuing = ca.hierarchy.signing_issuer()
    real_key = issuing.key

    class BrokenKey(type(real_key)):  # type: ignore[misc]
        def sign(self, *a, **k):
            raise KeyNotExtractable("simulated HSM failure")

    broken = object.__new__(BrokenKey)
    broken.__dict__.update(real_key.__dict__)
    issuing.key = broken
    try:
        with pytest.raises(Exception, match="simulated HSM failure"):
            ca.issue(_request(), actor="t")
    finally:
        issuing.key = real_key
    rows = ca.list(CertificateFilter(status="failed"))
    assert len(rows) == 1 and rows[0].certificate_der is None
    assert ca.list(CertificateFilter(status="issued")) == []


def test_pending_reservations_are_reconciled(ca_runtime: Runtime) -> None:
    ca = ca_runtime.authority
    issuing = ca.hierarchy.signing_issuer()
    with ca_runtime.sessions() as session:
        ca.issuance._reserve(
            session,
            issuing,
            _request(),
            ca.clock(),
            ca.clock() + timedelta(hours=1),
            "t",
            None,
            None,
            None,
        )
    assert len(ca.list(CertificateFilter(status="pending"))) == 1
    assert ca.reconcile_pending(timedelta(minutes=5)) == 0  # created "now": not yet abandoned
    ca.clock = _later
    assert ca.reconcile_pending(timedelta(minutes=5)) == 1
    assert ca.list(CertificateFilter(status="pending")) == []


def _later():
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)


def test_ca_keys_are_not_extractable(ca_runtime: Runtime) -> None:
    """The token itself refuses to reveal the CA private keys."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    keys = ca_runtime.keys
    for issuer in ca_runtime.authority.issuers():
        key = keys.get(issuer.key_label)
        with pytest.raises(KeyNotExtractable):
            key.private_bytes(None, None, None)  # type: ignore[arg-type]

        def read(session, label=issuer.key_label):
            obj = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            assert obj[Attribute.SENSITIVE] is True
            assert obj[Attribute.EXTRACTABLE] is False
            assert obj[Attribute.NEVER_EXTRACTABLE] is True
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                obj[Attribute.VALUE]
            return True

        assert keys.call_with_session(read)


def test_chain_is_a_proper_hierarchy(ca_runtime: Runtime) -> None:
    issuing, root = ca_runtime.authority.chain()
    assert issuing.issuer == root.subject
    assert root.issuer == root.subject
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0


def test_status_changes_feed_records_revocations(ca_runtime: Runtime) -> None:
    from ca.store.models import StatusChange

    ca = ca_runtime.authority
    a = ca.issue(_request(), actor="t")
    ca.revoke(a.serial_hex, RevocationReason.CERTIFICATE_HOLD, actor="t")
    ca.release_hold(a.serial_hex, actor="t")
    with ca_runtime.sessions() as s:
        feed = s.scalars(select(StatusChange).order_by(StatusChange.id)).all()
        assert [c.serial_hex for c in feed] == [a.serial_hex, a.serial_hex]
        assert feed[0].id < feed[1].id
