"""Issuance (reserve -> sign -> commit) and renewal supersession, on SQLite with software keys
and a fake clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from ca.errors import CAError, ErrorCode
from ca.records import CertStatus
from ca.revocation import RevocationReason
from ca.store.models import Certificate
from tests.unit.core_support import Core, make_core


@pytest.fixture
def core(tmp_path: Path) -> Core:
    return make_core(tmp_path)


def test_issue_reserves_signs_and_commits(core: Core) -> None:
    record = core.issue()
    assert record.status is CertStatus.ISSUED
    assert record.issued_at == core.clock.now
    assert record.not_after == core.clock.now + timedelta(hours=1)
    cert = record.certificate
    assert cert is not None
    cert.verify_directly_issued_by(core.authority.chain()[0])
    assert format(cert.serial_number, "x") == record.serial_hex
    assert core.events() == ["ca.initialised", "certificate.reserved", "certificate.issued"]
    assert core.authority.get(record.serial_hex) == record


def test_the_status_column_is_typed(core: Core) -> None:
    record = core.issue()
    with core.sessions() as s:
        row = s.scalars(select(Certificate)).one()
        assert row.status is CertStatus.ISSUED
        with pytest.raises(StatementError, match="not among the defined enum values"):
            s.execute(select(Certificate).where(Certificate.status == "good"))
    assert core.authority.get(record.serial_hex).to_dict()["status"] == "issued"


@pytest.mark.parametrize(
    ("validity", "code"),
    [
        (timedelta(seconds=-1), ErrorCode.INVALID_VALIDITY),
        (timedelta(days=3650), ErrorCode.INVALID_VALIDITY),
    ],
)
def test_refused_requests_write_nothing(core: Core, validity: timedelta, code: ErrorCode) -> None:
    with pytest.raises(CAError) as err:
        core.authority.issue(core.request(validity=validity), actor="test")
    assert err.value.code is code
    assert core.statuses() == [] and core.events() == ["ca.initialised"]


def test_a_failing_reservation_step_writes_nothing(core: Core) -> None:
    def refuse(_s: object) -> None:
        raise CAError(ErrorCode.POLICY_REFUSED, "no")

    with pytest.raises(CAError):
        core.issue(in_reservation=refuse)
    assert core.statuses() == [] and core.events() == ["ca.initialised"]


def test_what_the_reservation_step_returns_is_recorded(core: Core) -> None:
    reg = core.register()
    token, _ = core.tokens.create(reg.name, timedelta(hours=1), "test")
    core.issue(in_reservation=lambda tx: {"enrollment_token_id": core.tokens.consume(tx, token)})
    with core.sessions() as s:
        assert s.scalar(select(Certificate.enrollment_token_id)) is not None


def test_a_signing_failure_fails_the_reservation(core: Core) -> None:
    core.hsm_down.append(True)
    with pytest.raises(Exception, match="the token went away"):
        core.issue()
    assert core.statuses() == ["failed"]
    assert core.events()[-1] == "certificate.failed"
    core.hsm_down.clear()
    assert core.issue().status is CertStatus.ISSUED


def test_renewal_supersedes_its_parent_in_the_same_transaction(core: Core) -> None:
    parent = core.issue()
    before = core.status_changes()
    child = core.renew(parent)
    assert child.status is CertStatus.ISSUED
    assert core.status(parent) == ("revoked", int(RevocationReason.SUPERSEDED))
    assert core.status_changes() == before + 1
    assert core.events()[-2:] == ["certificate.issued", "certificate.revoked"]
    grandchild = core.renew(child)
    with core.sessions() as s:
        rows = {r.serial_hex: r for r in s.scalars(select(Certificate))}
    root = rows[parent.serial_hex].id
    assert rows[child.serial_hex].lineage_id == root
    assert rows[grandchild.serial_hex].lineage_id == root
    assert rows[grandchild.serial_hex].renewed_from_id == rows[child.serial_hex].id


def test_a_certificate_is_renewed_once(core: Core) -> None:
    parent = core.issue()
    link = core.link(parent)
    core.authority.issue(core.request(), actor="test", renewal=link)
    for again in (link, core.link(parent)):  # the same proof, and a new proof
        with pytest.raises(CAError) as err:
            core.authority.issue(core.request(), actor="test", renewal=again)
        assert err.value.code is ErrorCode.CONFLICT
    assert core.statuses() == ["revoked", "issued"]


def test_a_revoked_or_expired_certificate_is_not_renewed(core: Core) -> None:
    revoked = core.issue()
    core.authority.revoke(revoked.serial_hex, RevocationReason.CESSATION_OF_OPERATION, "t")
    expired = core.issue()
    core.clock.advance(timedelta(hours=2))
    for parent in (revoked, expired):
        with pytest.raises(CAError) as err:
            core.renew(parent)
        assert err.value.code is ErrorCode.UNAUTHENTICATED


def test_supersession_is_a_compare_and_set(core: Core) -> None:
    """A hold committed while the renewal is signed makes the renewal fail, not coexist."""
    parent = core.issue()
    core.while_signing(
        lambda: core.authority.revoke(parent.serial_hex, RevocationReason.CERTIFICATE_HOLD, "t")
    )
    with pytest.raises(CAError) as err:
        core.renew(parent)
    assert err.value.code is ErrorCode.CONFLICT
    assert core.statuses() == ["revoked", "failed"]
    assert core.status(parent) == ("revoked", int(RevocationReason.CERTIFICATE_HOLD))


@pytest.mark.parametrize("role", ["root", "issuing"])
def test_an_ed25519_ca_key_is_refused_before_any_key_is_made(tmp_path: Path, role: str) -> None:
    """Verifiers with the WebPKI profile (cryptography's, the gateway's) refuse every chain
    under an Ed25519 CA key, so such a hierarchy could never issue a usable certificate."""
    from sqlalchemy import text

    from ca.authority import CertificateAuthority
    from ca.config import Settings
    from ca.store.db import make_engine, make_session_factory
    from ca.store.models import Base
    from hsm import SoftKeyStore

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/ed.db")
    engine = make_engine(settings.effective_database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ledger_head (id, size) VALUES (1, 0)"))
    keys = SoftKeyStore()
    authority = CertificateAuthority(settings, make_session_factory(engine), keys)
    types = {"root": "ec-p384", "issuing": "ec-p256", role: "ed25519"}
    with pytest.raises(CAError) as caught:
        authority.initialise(types["root"], types["issuing"])
    assert caught.value.code is ErrorCode.UNSUPPORTED_KEY and role in str(caught.value)
    assert keys.labels() == [] and not authority.is_initialised()
