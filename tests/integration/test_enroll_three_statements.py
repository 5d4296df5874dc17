"""Enrollment in three statements on PostgreSQL (ca/enroll_pg.py, decision 0048): the leaf
hashes PostgreSQL computes are the ledger's, a token is single-use under concurrency, and
concurrent enrollments leave a gap-free ledger with one ``certificate.issued`` per
certificate. Run on both backends (``db_url``): SQLite takes the general path."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from ca.enroll_pg import all_appended, ledger_arrays
from ca.errors import CAError, ErrorCode, as_ca_error
from ca.ledger.entries import LedgerEntry
from ca.store.models import Certificate, LedgerEntryRow
from ca.wiring import Runtime
from tests.integration.test_crash_safe_enrollment import _csr, _register, _token


def test_leaf_hash_split_matches_the_ledger_entry() -> None:
    now = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
    body = {"agent": "é-agent", "officer": "o@example.com", "n": 7, "nested": {"z": [1, "ü"]}}
    arrays = ledger_arrays([("agent:x", "certificate.issued", body, now)])
    for seq in (0, 9, 10, 12345, 2**40):
        digits = str(seq).encode()
        ours = hashlib.sha256(arrays["l_prefix"][0] + digits + arrays["l_suffix"][0]).digest()
        entry = LedgerEntry(seq, arrays["l_time"][0], "agent:x", "certificate.issued", body)
        assert ours == entry.leaf_hash()
    assert arrays["l_agent"] == ["é-agent"] and arrays["l_officer"] == ["o@example.com"]
    with pytest.raises(ValueError, match="floating"):
        ledger_arrays([("a", "e", {"x": 1.5}, now)])


def _ledger_checks(rt: Runtime) -> list[LedgerEntryRow]:
    """Every stored leaf hash is the entry's; numbers are 0..n-1; the head says n."""
    with rt.sessions() as s:
        rows = list(s.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.seq)).all())
    assert [r.seq for r in rows] == list(range(len(rows)))
    for r in rows:
        entry = LedgerEntry(r.seq, r.time, r.actor, r.event, json.loads(r.body))
        assert entry.leaf_hash() == r.leaf_hash, r.seq
    assert rt.ledger.size() == len(rows)
    return rows


def _in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait(timeout=30)
        try:
            results[i] = work(i)
        except CAError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


def test_one_token_yields_one_certificate_under_concurrency(ca_runtime: Runtime) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    csrs = [_csr()[1] for _ in range(8)]  # eight keys: none can be a replay of another
    results = _in_threads(8, lambda i: rt.enrollment.enroll(token, csrs[i]))
    issued = [r for r in results if not isinstance(r, CAError)]
    refused = [r for r in results if isinstance(r, CAError)]
    assert len(issued) == 1
    assert {e.code for e in refused} <= {ErrorCode.UNAUTHENTICATED, ErrorCode.CONFLICT}
    with rt.sessions() as s:
        assert s.scalars(select(Certificate.status)).all() == ["issued"]
    events = [r.event for r in _ledger_checks(rt)]
    assert events.count("enrollment_token.used") == 1
    assert events.count("certificate.issued") == 1


def test_concurrent_enrollments_keep_the_ledger_whole(ca_runtime: Runtime) -> None:
    rt = ca_runtime
    _register(rt)
    tokens = [_token(rt) for _ in range(24)]
    csrs = [_csr()[1] for _ in range(24)]

    def three(i: int) -> list[str]:
        return [rt.enrollment.enroll(tokens[j], csrs[j]).serial_hex for j in (i, i + 8, i + 16)]

    serials = [s for r in _in_threads(8, three) for s in r]
    assert len(set(serials)) == 24
    rows = _ledger_checks(rt)
    issued = {
        json.loads(r.body)["serial"]: json.loads(r.body)["fingerprint_sha256"]
        for r in rows
        if r.event == "certificate.issued"
    }
    with rt.sessions() as s:
        certs = s.execute(select(Certificate.serial_hex, Certificate.certificate_der)).all()
    assert len(certs) == 24
    for serial, der in certs:  # each certificate's entry carries its own fingerprint
        assert issued[serial] == hashlib.sha256(der).hexdigest()
        assert int(serial, 16) >= 1 << 64  # at least 64 random bits (ca.serials)
    reserved = [r for r in rows if r.event == "certificate.reserved"]
    used = [r for r in rows if r.event == "enrollment_token.used"]
    assert len(reserved) == len(used) == 24
    # each reservation's token entry comes just before its reserved entry
    assert all(rows[r.seq - 1].event == "enrollment_token.used" for r in reserved)


def test_a_refusal_writes_nothing_and_names_the_reason(ca_runtime: Runtime) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    before = rt.ledger.size()
    rt.registry.update_agent("crash-agent", active=False, actor="test")
    with pytest.raises(CAError) as refused:
        rt.enrollment.enroll(token, _csr()[1])
    assert refused.value.code is ErrorCode.POLICY_REFUSED
    assert rt.ledger.size() == before + 1  # the disable's own entry, nothing of the request
    with rt.sessions() as s:
        assert s.scalars(select(Certificate)).all() == []
    with pytest.raises(CAError) as bad:
        rt.enrollment.enroll(token, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA")
    assert bad.value.code is ErrorCode.BAD_CSR


def test_a_lost_connection_is_a_503_and_the_next_request_reconnects(ca_runtime: Runtime) -> None:
    rt = ca_runtime
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("the three-statement path is PostgreSQL's")
    _register(rt)
    tokens = [_token(rt) for _ in range(2)]
    rt.enrollment.enroll(tokens[0], _csr()[1])  # a pooled connection now exists
    with rt.engine.connect() as other:  # the server drops every other connection
        other.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        other.commit()
    try:
        record = rt.enrollment.enroll(tokens[1], _csr()[1])
    except Exception as exc:  # the dropped connection was the one handed out
        assert as_ca_error(exc).code is ErrorCode.DB_UNAVAILABLE
        record = rt.enrollment.enroll(tokens[1], _csr()[1])  # the pool reconnected
    assert record.status == "issued"
    _ledger_checks(rt)


def test_a_short_ledger_append_rolls_the_statement_back(ca_runtime: Runtime) -> None:
    """The check every fast statement ends with: a count other than the expected one is an
    error, and the statement's other writes are gone with it."""
    rt = ca_runtime
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("the three-statement path is PostgreSQL's")
    check = all_appended("(SELECT count(*) FROM w)", "2")
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("CREATE TEMP TABLE t (x int)"))
        ok = text(f"WITH w AS (INSERT INTO t VALUES (1), (2) RETURNING x) SELECT {check}")
        assert c.execute(ok).scalar() == 2
        short = text(f"WITH w AS (INSERT INTO t VALUES (3) RETURNING x) SELECT {check}")
        with pytest.raises(DBAPIError, match="ledger entries not all appended: 1"):
            c.execute(short)
        assert c.execute(text("SELECT count(*) FROM t")).scalar() == 2
