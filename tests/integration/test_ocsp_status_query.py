"""The responder's one-statement status lookup answers exactly as the ORM queries it replaced.

Issue 15 item 2: ``SqlStatusSource.statuses`` is one plain-SQL statement. Here it is compared,
on SQLite and PostgreSQL, with the two SQLAlchemy ORM-column queries it replaced (kept below as
the reference), for issued, revoked (with and without a reason), pending and failed rows, CA
certificates, serials under the wrong issuer, and serials never issued.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import or_, select

from ca.serials import new_serial
from ca.store.models import Certificate, Issuer
from ca.wiring import Runtime
from ocsp.decision import CertState, SerialStatus, status_from_record
from ocsp.status import SqlStatusSource


def _reference(
    engine: sa.Engine, issuer_id: int, serials: Sequence[str]
) -> dict[str, SerialStatus]:
    """The lookup as it was before issue 15 (two ORM-column SELECTs)."""
    wanted = list(dict.fromkeys(serials))
    query = select(
        Certificate.serial_hex,
        Certificate.status,
        Certificate.revoked_at,
        Certificate.revocation_reason,
    ).where(Certificate.issuer_id == issuer_id, Certificate.serial_hex.in_(wanted))
    cas = select(Issuer.serial_hex).where(
        Issuer.serial_hex.in_(wanted),
        or_(Issuer.parent_id == issuer_id, (Issuer.id == issuer_id) & Issuer.parent_id.is_(None)),
    )
    found: dict[str, SerialStatus] = {}
    with engine.connect() as conn:
        for serial, status, revoked_at, reason in conn.execute(query):
            found[serial] = status_from_record(status, revoked_at, reason)
        for (serial,) in conn.execute(cas):
            found.setdefault(serial, status_from_record("issued", None, None))
    return {s: found.get(s, status_from_record(None, None, None)) for s in wanted}


def _row(issuer_id: int, serial: str, status: str, **extra: object) -> dict[str, object]:
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "issuer_id": issuer_id,
        "serial_hex": serial,
        "status": status,
        "agent_name": "a-" + serial[:8],
        "subject": "CN=a-" + serial,
        "public_key_sha256": bytes(32),
        "model_type": "m",
        "model_digest": "0" * 64,
        "prompt_digest": "0" * 64,
        "scopes": "s",
        "officer": "o@example.org",
        "environment": "test",
        "not_before": now,
        "not_after": now + timedelta(hours=1),
        "requested_by": "test",
        "created_at": now,
        "revoked_at": None,  # every row has every key: executemany takes the first row's keys
        "revocation_reason": None,
        **extra,
    }


def test_one_statement_lookup_matches_the_orm_queries(ca_runtime: Runtime) -> None:
    engine = ca_runtime.engine
    with engine.connect() as conn:
        issuers = conn.execute(select(Issuer.id, Issuer.parent_id, Issuer.serial_hex)).all()
    root = next(i for i in issuers if i.parent_id is None)
    issuing = next(i for i in issuers if i.parent_id == root.id)
    revoked_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    serials = {name: format(new_serial(), "x") for name in ("good", "rev", "rev0", "pend", "fail")}
    rows = [
        _row(issuing.id, serials["good"], "issued"),
        _row(issuing.id, serials["rev"], "revoked", revoked_at=revoked_at, revocation_reason=1),
        _row(issuing.id, serials["rev0"], "revoked", revoked_at=revoked_at),
        _row(issuing.id, serials["pend"], "pending"),
        _row(issuing.id, serials["fail"], "failed"),
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Certificate.__table__), rows)
    never = format(new_serial(), "x")
    asked = [*serials.values(), issuing.serial_hex, root.serial_hex, never, serials["good"]]
    source = SqlStatusSource(engine)
    for issuer_id in (issuing.id, root.id):
        new = source.statuses(issuer_id, asked)
        assert new == _reference(engine, issuer_id, asked)
        for one in asked:  # the single-serial form the responder uses on a miss
            assert source.statuses(issuer_id, [one]) == _reference(engine, issuer_id, [one])
    by_issuing = source.statuses(issuing.id, asked)
    assert by_issuing[serials["good"]].state is CertState.GOOD
    assert by_issuing[serials["rev"]] == SerialStatus(CertState.REVOKED, revoked_at, 1)
    assert by_issuing[serials["rev0"]] == SerialStatus(CertState.REVOKED, revoked_at, None)
    for name in ("pend", "fail"):
        assert by_issuing[serials[name]].state is CertState.UNISSUED
    assert by_issuing[never].state is CertState.UNISSUED
    assert by_issuing[issuing.serial_hex].state is CertState.UNISSUED  # not issued by itself
    by_root = source.statuses(root.id, asked)
    assert by_root[issuing.serial_hex].state is CertState.GOOD  # the CA the root issued
    assert by_root[root.serial_hex].state is CertState.GOOD  # the self-issued root
    assert by_root[serials["good"]].state is CertState.UNISSUED  # not the root's
