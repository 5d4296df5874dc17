"""Reconciliation of abandoned reservations and the release of their enrollment tokens, on
SQLite with software keys and a fake clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ca.errors import CAError, ErrorCode
from ca.store.models import EnrollmentToken
from tests.unit.core_support import Core, make_core


@pytest.fixture
def core(tmp_path: Path) -> Core:
    return make_core(tmp_path)


def _crash_while_signing(core: Core, token: str | None = None) -> None:
    """Reserve, then "crash" in signing: the reservation is left pending, as by a kill -9."""

    class Crash(BaseException):
        pass

    def crash() -> None:
        raise Crash

    core.while_signing(crash)
    core.authority.issuance._mark_failed = lambda *a, **k: None  # type: ignore[method-assign]
    try:
        step = None
        if token is not None:

            def step(tx):  # type: ignore[no-untyped-def]
                return {"enrollment_token_id": core.tokens.consume(tx, token)}

        with pytest.raises(Crash):
            core.issue(in_reservation=step)
    finally:
        del core.authority.issuance._mark_failed


def test_reconciliation_fails_abandoned_reservations_once(core: Core) -> None:
    _crash_while_signing(core)
    assert core.statuses() == ["pending"]
    assert core.authority.reconcile() == []  # younger than the bound
    core.clock.advance(core.settings.pending_bound + timedelta(seconds=1))
    failed = core.authority.reconcile()
    assert len(failed) == 1 and core.authority.reconcile() == []
    assert core.statuses() == ["failed"]
    assert core.events().count("certificate.failed") == 1


def test_reconciliation_releases_the_token(core: Core) -> None:
    reg = core.register()
    token, _ = core.tokens.create(reg.name, timedelta(hours=1), "test")
    _crash_while_signing(core, token)
    with pytest.raises(CAError) as err:  # in progress: retry once it is reconciled
        core.tokens.registration_for(token)
    assert err.value.code is ErrorCode.CONFLICT and err.value.extra["retry_after"] > 0
    core.clock.advance(core.settings.pending_bound + timedelta(seconds=1))
    assert len(core.authority.reconcile()) == 1
    assert core.events()[-2:] == ["certificate.failed", "enrollment_token.released"]
    with core.sessions() as s:
        assert s.scalar(select(EnrollmentToken.used_at)) is None
    assert core.tokens.registration_for(token).name == reg.name


def test_a_reconciled_reservation_is_never_stored(core: Core) -> None:
    """Signing outlived the bound: the reservation was reconciled, so storing refuses."""

    def reconcile_meanwhile() -> None:
        core.clock.advance(core.settings.pending_bound + timedelta(seconds=1))
        assert len(core.authority.reconcile()) == 1

    core.while_signing(reconcile_meanwhile)
    with pytest.raises(CAError) as err:
        core.issue()
    assert err.value.code is ErrorCode.CONFLICT
    assert core.statuses() == ["failed"]
    assert core.events().count("certificate.failed") == 1
