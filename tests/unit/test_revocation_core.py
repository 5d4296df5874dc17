"""Revocation, holds, keyCompromise lineage revocation and retire-and-revoke, on SQLite with
software keys and a fake clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ca.errors import CAError, ErrorCode
from ca.records import CertStatus
from ca.requests import RevocationCriteria
from ca.revocation import RevocationReason
from tests.unit.core_support import Core, make_core
from tests.unit.helpers import MODEL

HOLD = RevocationReason.CERTIFICATE_HOLD
KEY_COMPROMISE = RevocationReason.KEY_COMPROMISE


@pytest.fixture
def core(tmp_path: Path) -> Core:
    return make_core(tmp_path)


def test_revoke_records_the_change_feed_and_the_ledger(core: Core) -> None:
    record = core.issue()
    core.clock.advance(timedelta(minutes=1))
    revoked = core.authority.revoke(record.serial_hex, RevocationReason.AFFILIATION_CHANGED, "op")
    assert revoked.status is CertStatus.REVOKED and revoked.revoked_at == core.clock.now
    assert revoked.revocation_reason is RevocationReason.AFFILIATION_CHANGED
    assert core.status_changes() == 1 and core.events()[-1] == "certificate.revoked"
    with pytest.raises(CAError) as err:
        core.authority.revoke(record.serial_hex, RevocationReason.UNSPECIFIED, "op")
    assert err.value.code is ErrorCode.ALREADY_REVOKED
    with pytest.raises(CAError) as err:
        core.authority.revoke(record.serial_hex, RevocationReason.REMOVE_FROM_CRL, "op")
    assert err.value.code is ErrorCode.BAD_REQUEST


def test_a_hold_is_released_or_made_permanent(core: Core) -> None:
    a, b = core.issue(), core.issue()
    for record in (a, b):
        core.authority.revoke(record.serial_hex, HOLD, "op")
    released = core.authority.release_hold(a.serial_hex, "op")
    assert released.status is CertStatus.ISSUED and released.revoked_at is None
    held_at = core.authority.get(b.serial_hex).revoked_at
    core.clock.advance(timedelta(minutes=5))
    final = core.authority.revoke(b.serial_hex, RevocationReason.CESSATION_OF_OPERATION, "op")
    assert final.revocation_reason is RevocationReason.CESSATION_OF_OPERATION
    assert final.revoked_at == held_at  # the revocation dates from the hold
    with pytest.raises(CAError) as err:
        core.authority.release_hold(b.serial_hex, "op")
    assert err.value.code is ErrorCode.CONFLICT
    assert core.events().count("certificate.hold_released") == 1


def test_key_compromise_revokes_the_lineage(core: Core) -> None:
    first = core.issue()
    second = core.renew(first)
    third = core.renew(second)
    unrelated = core.issue()
    core.authority.revoke(third.serial_hex, HOLD, "op")
    fourth = core.issue()  # not in the lineage
    core.authority.revoke(second.serial_hex, KEY_COMPROMISE, "op")  # escalates 'superseded'
    assert core.status(second) == ("revoked", int(KEY_COMPROMISE))
    assert core.status(first) == ("revoked", int(RevocationReason.SUPERSEDED))  # keeps it
    assert core.status(third) == ("revoked", int(KEY_COMPROMISE))  # hold made permanent
    assert core.status(unrelated) == ("issued", None)
    assert core.status(fourth) == ("issued", None)


def test_key_compromise_fails_a_renewal_being_signed(core: Core) -> None:
    parent = core.issue()
    core.while_signing(lambda: core.authority.revoke(parent.serial_hex, KEY_COMPROMISE, "op"))
    with pytest.raises(CAError) as err:
        core.renew(parent)
    assert err.value.code is ErrorCode.CONFLICT
    assert core.statuses() == ["revoked", "failed"]
    assert core.status(parent) == ("revoked", int(KEY_COMPROMISE))
    assert core.events().count("certificate.failed") == 1


def test_revoke_where_takes_only_live_matching_certificates(core: Core) -> None:
    live = core.issue()
    expired = core.authority.issue(core.request(validity=timedelta(minutes=1)), actor="test")
    other = core.authority.issue(core.request(agent_name="other-agent"), actor="test")
    core.clock.advance(timedelta(minutes=2))
    done = core.authority.revoke_where(
        RevocationCriteria(agent_name="exec-agent"), KEY_COMPROMISE, "op"
    )
    assert [r.serial_hex for r in done] == [live.serial_hex]
    assert core.status(expired) == ("issued", None)
    assert core.status(other) == ("issued", None)
    with pytest.raises(CAError) as err:
        core.authority.revoke_where(RevocationCriteria(), KEY_COMPROMISE, "op")
    assert err.value.code is ErrorCode.BAD_REQUEST


def test_retiring_a_model_and_revoking_is_one_transaction(core: Core) -> None:
    core.register()
    live = core.issue()
    with pytest.raises(CAError):  # the revocation part is refused: nothing is retired
        core.operations.retire_model(
            MODEL, revoke=True, reason=RevocationReason.REMOVE_FROM_CRL, actor="op"
        )
    assert all(m.active for m in core.registry.list_models())
    assert core.status(live) == ("issued", None)
    done = core.operations.retire_model(MODEL, revoke=True, actor="op")
    assert [m.active for m in done.retired] == [False]
    assert [r.serial_hex for r in done.revoked] == [live.serial_hex]
    assert core.status(live) == ("revoked", int(RevocationReason.PRIVILEGE_WITHDRAWN))
    with pytest.raises(CAError) as err:
        core.operations.retire_model(MODEL, actor="op")
    assert err.value.code is ErrorCode.NOT_FOUND


def test_retire_with_revoke_after_a_plain_retire_still_revokes(core: Core) -> None:
    """Review 3: an operator who retired a model without --revoke and comes back for its live
    certificates got "no active model ... to retire" and nothing was revoked."""
    core.register()
    live = core.issue()
    core.operations.retire_model(MODEL, actor="op")
    assert core.status(live) == ("issued", None)
    done = core.operations.retire_model(MODEL, revoke=True, actor="op")
    assert done.retired == [] and [r.serial_hex for r in done.revoked] == [live.serial_hex]
    assert core.status(live) == ("revoked", int(RevocationReason.PRIVILEGE_WITHDRAWN))
    with pytest.raises(CAError) as err:  # a digest never in the inventory is still not found
        core.operations.retire_model("ab" * 32, revoke=True, actor="op")
    assert err.value.code is ErrorCode.NOT_FOUND


def test_retire_with_revoke_cancels_a_reservation_being_signed(core: Core) -> None:
    """Review 3: a certificate reserved before the model was retired with --revoke, and
    signed while it was, was stored afterwards: a live certificate for the retired model."""
    core.register()
    core.while_signing(lambda: core.operations.retire_model(MODEL, revoke=True, actor="op"))
    with pytest.raises(CAError) as err:
        core.issue()
    assert err.value.code is ErrorCode.CONFLICT
    assert core.statuses() == ["failed"]
    assert "certificate.issued" not in core.events()


def test_a_reservation_refuses_a_model_retired_after_the_decision(core: Core) -> None:
    """Review 3: the reservation re-checks the model as it re-checks the registration."""
    core.register()
    env = "production-eu-west-1"
    with core.sessions.begin() as s:
        core.registry.confirm_model_active(s, MODEL, env)  # active: no error
    core.operations.retire_model(MODEL, actor="op")
    with pytest.raises(CAError) as err, core.sessions.begin() as s:
        core.registry.confirm_model_active(s, MODEL, env)
    assert err.value.code is ErrorCode.POLICY_REFUSED
