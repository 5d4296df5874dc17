"""Issue 10 items 4 and 5 in process: a failed reservation releases its enrollment token, a
retry is refused only while the first attempt is pending, reconciliation (also as
``agentca reconcile``) fails abandoned reservations into the ledger (docs 0014)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

import ca.clock
import ca.issuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance, build_agent_csr
from ca.store.models import Certificate, LedgerEntryRow
from ca.wiring import Runtime
from cli.output import cli_serial
from tests.integration.conftest import run_cli

MODEL, PROMPT = "a1" * 32, "c3" * 32


def _register(rt: Runtime, name: str = "crash-agent") -> None:
    rt.registry.add_scope("read_book")
    rt.registry.add_model(MODEL, "m", "prod")
    rt.registry.register_agent(name, "o@example.com", "prod", "m", ["read_book"], [MODEL], [PROMPT])


def _token(rt: Runtime, name: str = "crash-agent") -> str:
    return rt.enrollment_tokens.create(name, timedelta(hours=1), "test")[0]


def _csr(key: Any = None, name: str = "crash-agent") -> tuple[Any, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key, name, Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _events(rt: Runtime, event: str) -> list[dict[str, Any]]:
    with rt.sessions() as s:
        rows = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.event == event)).all()
        return [json.loads(r.body) for r in rows]


def _statuses(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return list(s.scalars(select(Certificate.status).order_by(Certificate.id)).all())


def test_hsm_failure_while_signing_releases_the_token(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    _, csr = _csr()
    real = ca.issuance.sign_agent_certificate

    def hsm_gone(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("GeneralError: the token went away")  # what python-pkcs11 raised

    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", hsm_gone)
    with pytest.raises(RuntimeError):
        rt.enrollment.enroll(token, csr)
    assert _statuses(rt) == ["failed"]
    assert len(_events(rt, "enrollment_token.released")) == 1
    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", real)

    record = rt.enrollment.enroll(token, csr)  # the retry with the same token succeeds
    assert record.status == "issued"
    assert _statuses(rt) == ["failed", "issued"]
    # the answer was lost: the same token and key get the same certificate, not a second one
    again = rt.enrollment.enroll(token, csr)
    assert again.serial_hex == record.serial_hex and again.certificate_der == record.certificate_der
    # a new key with the used token gets nothing
    with pytest.raises(CAError) as refused:
        rt.enrollment.enroll(token, _csr()[1])
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    assert _statuses(rt) == ["failed", "issued"]


def test_storing_failure_releases_the_token(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    _, csr = _csr()
    real = ca.issuance.issued_body

    def outage(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("UPDATE certificates", {}, Exception("server closed the connection"))

    monkeypatch.setattr(ca.issuance, "issued_body", outage)
    with pytest.raises(Exception, match="server closed"):
        rt.enrollment.enroll(token, csr)
    monkeypatch.setattr(ca.issuance, "issued_body", real)
    assert _statuses(rt) == ["failed"]
    assert rt.enrollment.enroll(token, csr).status == "issued"


def test_crash_leaves_pending_then_409_then_reconciled_then_retry(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    _, csr = _csr()

    class Killed(BaseException):
        pass

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Killed  # the process dies here: nothing marks the reservation failed

    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", killed)
    monkeypatch.setattr(rt.authority.issuance, "_mark_failed", lambda *a, **k: None)
    with pytest.raises(Killed):
        rt.enrollment.enroll(token, csr)
    monkeypatch.undo()
    assert _statuses(rt) == ["pending"]

    with pytest.raises(CAError) as busy:
        rt.enrollment.enroll(token, csr)
    assert busy.value.code is ErrorCode.CONFLICT
    assert "in progress; retry in" in busy.value.detail
    assert 1 <= busy.value.extra["retry_after"] <= 121

    assert rt.authority.reconcile() == []  # younger than the bound (120 s)
    rt.authority.clock = lambda: ca.clock.utcnow() + timedelta(seconds=121)
    failed = rt.authority.reconcile()
    assert len(failed) == 1 and rt.authority.reconcile() == []  # once per reservation
    rt.authority.clock = ca.clock.utcnow
    (entry,) = _events(rt, "certificate.failed")
    assert entry["reconciled"] is True and entry["serial"] == failed[0]
    assert len(_events(rt, "enrollment_token.released")) == 1
    assert rt.enrollment.enroll(token, csr).status == "issued"
    assert _statuses(rt) == ["failed", "issued"]


def test_database_refuses_two_live_reservations_for_one_token(ca_runtime: Runtime) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    first = rt.enrollment.enroll(token, _csr()[1])
    second = rt.enrollment.enroll(_token(rt), _csr()[1])
    with rt.sessions() as s:
        token_id = s.scalar(
            select(Certificate.enrollment_token_id).where(
                Certificate.serial_hex == first.serial_hex
            )
        )
    with pytest.raises(IntegrityError), rt.sessions.begin() as s:
        s.execute(
            update(Certificate)
            .where(Certificate.serial_hex == second.serial_hex)
            .values(enrollment_token_id=token_id)
        )


def test_reconcile_command_fails_old_pending_rows(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    monkeypatch.setattr(
        ca.issuance, "sign_agent_certificate", lambda *a, **k: (_ for _ in ()).throw(SystemExit)
    )
    monkeypatch.setattr(rt.authority.issuance, "_mark_failed", lambda *a, **k: None)
    with pytest.raises(SystemExit):
        rt.enrollment.enroll(token, _csr()[1])
    monkeypatch.undo()
    s = rt.settings
    env = {
        "AGENTCA_DATABASE_URL": s.database_url,
        "AGENTCA_MANAGE_SOFTHSM": "0",
        "AGENTCA_PKCS11_MODULE": s.pkcs11_module,
        "AGENTCA_SOFTHSM2_CONF": s.softhsm2_conf,
        "AGENTCA_TOKEN_LABEL": s.token_label,
        "AGENTCA_HSM_PIN_FILE": s.hsm_pin_file,
    }
    young = run_cli("reconcile", "--json", data_dir=s.data_dir, env=env)
    assert young.returncode == 0, young.stderr
    assert json.loads(young.stdout) == {
        "older_than_seconds": 120,
        "reconciled": 0,
        "serials": [],
        "changed": False,
    }
    time.sleep(1.1)
    r = run_cli("reconcile", "--older-than", "1", "--json", data_dir=s.data_dir, env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    out = json.loads(r.stdout)
    assert out["reconciled"] == 1
    assert _statuses(rt) == ["failed"]
    (entry,) = _events(rt, "certificate.failed")
    # the ledger keeps the stored form; the CLI prints serials as openssl does
    assert cli_serial(entry["serial"]) == out["serials"][0] and entry["reconciled"] is True
    assert len(_events(rt, "enrollment_token.released")) == 1
    assert rt.enrollment.enroll(token, _csr()[1]).status == "issued"
    h = run_cli("reconcile", "--help", data_dir=s.data_dir)
    assert h.returncode == 0 and "--older-than" in h.stdout
