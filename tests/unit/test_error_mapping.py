"""Exceptions from below the edge map to honest problems (ca.errors.as_ca_error)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError, OperationalError

from ca.api.problems import problem_body
from ca.api.statuses import http_status
from ca.errors import ErrorCode, as_ca_error


class _Orig(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_deadlocks_and_serialization_failures_are_conflicts_to_retry(sqlstate: str) -> None:
    """A PostgreSQL deadlock between a revocation and a renewal was answered 503 'the
    database cannot be reached', which it could."""
    err = as_ca_error(OperationalError("UPDATE ...", {}, _Orig(sqlstate)))
    assert err.code is ErrorCode.CONFLICT and "retry" in err.detail


def test_connectivity_is_still_unavailable_and_bad_values_bad_requests() -> None:
    assert as_ca_error(OperationalError("SELECT 1", {}, _Orig("08006"))).code is (
        ErrorCode.DB_UNAVAILABLE
    )
    assert as_ca_error(DataError("INSERT", {}, _Orig("22021"))).code is ErrorCode.BAD_REQUEST
    assert as_ca_error(RuntimeError("boom")).code is ErrorCode.INTERNAL


def test_full_disks_are_storage_full_not_unreachable() -> None:
    """SQLite's 'database or disk is full' reached clients as 503 'the database cannot be
    reached' (issue 10 item 7): it is 507 storage-full, and so is PostgreSQL's disk_full."""
    import errno
    import sqlite3

    sqlite_full = sqlite3.OperationalError("database or disk is full")
    err = as_ca_error(OperationalError("INSERT ...", {}, sqlite_full))
    assert err.code is ErrorCode.STORAGE_FULL and http_status(err) == 507
    assert problem_body(err)["type"].endswith("/storage-full")
    assert as_ca_error(OperationalError("INSERT", {}, _Orig("53100"))).code is (
        ErrorCode.STORAGE_FULL
    )
    disk = OSError(errno.ENOSPC, "No space left on device", "/srv/crl/.x.tmp")
    err = as_ca_error(disk)
    assert err.code is ErrorCode.STORAGE_FULL and "/srv/crl" in err.detail
    assert "[Errno" not in err.detail
