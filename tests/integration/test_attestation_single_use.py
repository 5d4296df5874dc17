"""A runtime attestation statement yields one certificate (decision 0051, "Changed").

On SQLite and PostgreSQL, through the real CA runtime (SoftHSM2 keys): a statement spent on one
certificate is refused with another token (``attestation-reused``, no record written, the token
left usable), a fresh statement then enrolls; a reservation that fails releases its statement
with its token so the agent's retry succeeds; and eight concurrent enrollments on one statement
with eight tokens give exactly one certificate, the other seven the same refusal (the unique
index ``uq_certificates_attestation_live`` decides the race, never a 500).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

import ca.issuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.store.models import Certificate, EnrollmentToken
from ca.wiring import Runtime
from tests.integration.test_crash_safe_enrollment import MODEL, PROMPT, _csr, _register, _token
from tests.support.attestor import Orchestrator, write_attestors

NAME = "crash-agent"
ORCH = Orchestrator("orchestrator.prod", "orch-prod-1")
PROV = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))


@pytest.fixture
def rt(ca_runtime: Runtime, tmp_path: Path) -> Runtime:
    path = write_attestors(tmp_path / "attestors", [(ORCH, ["prod"])])
    enrollment = ca_runtime.enrollment
    enrollment.settings = dataclasses.replace(enrollment.settings, attestors_file=str(path))
    _register(ca_runtime)
    ca_runtime.registry.update_agent(NAME, require_attestation=True, actor="test")
    return ca_runtime


def _statuses(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return list(s.scalars(select(Certificate.status).order_by(Certificate.id)).all())


def _unused_tokens(rt: Runtime) -> int:
    with rt.sessions() as s:
        return len(
            s.scalars(select(EnrollmentToken.id).where(EnrollmentToken.used_at.is_(None))).all()
        )


def _reused(exc: CAError) -> bool:
    return exc.code is ErrorCode.POLICY_REFUSED and any(
        r.startswith("attestation-reused") for r in exc.extra.get("reasons", [])
    )


def test_a_spent_statement_is_refused_with_another_token(rt: Runtime) -> None:
    key, csr = _csr()
    statement = ORCH.attest(NAME, "prod", key.public_key(), PROV).encode()
    first = rt.enrollment.enroll(_token(rt), csr, attestation=statement)
    assert first.status == "issued"
    with rt.sessions() as s:
        stored = s.scalar(select(Certificate.attestation_sha256))
    assert stored is not None and len(stored) == 64

    second_token = _token(rt)
    for again in (csr, _csr(key)[1]):  # the same CSR, or a new CSR for the same key
        with pytest.raises(CAError) as info:
            rt.enrollment.enroll(second_token, again, attestation=statement)
        assert _reused(info.value), info.value
    # the blanks around a token do not make it another statement
    with pytest.raises(CAError) as info:
        rt.enrollment.enroll(second_token, csr, attestation=b"  " + statement + b"\n")
    assert _reused(info.value), info.value
    assert _statuses(rt) == ["issued"]  # no record for the refusals
    assert _unused_tokens(rt) == 1  # and the second token is not spent

    fresh = ORCH.attest(NAME, "prod", key.public_key(), PROV).encode()
    assert rt.enrollment.enroll(second_token, csr, attestation=fresh).status == "issued"
    # a lost answer: the same token and key get the same certificate again, no new statement
    replay = rt.enrollment.enroll(second_token, csr, attestation=fresh)
    assert _statuses(rt) == ["issued", "issued"] and replay.status == "issued"


def test_a_failed_reservation_releases_its_statement(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, csr = _csr()
    statement = ORCH.attest(NAME, "prod", key.public_key(), PROV).encode()
    token = _token(rt)
    real = ca.issuance.sign_agent_certificate

    def hsm_gone(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("GeneralError: the token went away")

    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", hsm_gone)
    with pytest.raises(RuntimeError):
        rt.enrollment.enroll(token, csr, attestation=statement)
    monkeypatch.setattr(ca.issuance, "sign_agent_certificate", real)
    assert _statuses(rt) == ["failed"]
    record = rt.enrollment.enroll(token, csr, attestation=statement)  # the agent's retry
    assert record.status == "issued"
    assert _statuses(rt) == ["failed", "issued"]


def test_concurrent_uses_of_one_statement_give_one_certificate(rt: Runtime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    statement = ORCH.attest(NAME, "prod", key.public_key(), PROV).encode()
    tokens = [_token(rt) for _ in range(8)]
    csrs = [_csr(key)[1] for _ in tokens]
    start = threading.Barrier(len(tokens))
    outcomes: list[object] = []

    def enroll(token: str, csr: bytes) -> None:
        start.wait(timeout=30)
        try:
            outcomes.append(rt.enrollment.enroll(token, csr, attestation=statement).status)
        except CAError as exc:
            outcomes.append(exc)

    threads = [
        threading.Thread(target=enroll, args=pair) for pair in zip(tokens, csrs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    issued = [o for o in outcomes if o == "issued"]
    refused = [o for o in outcomes if isinstance(o, CAError) and _reused(o)]
    # SQLite serialises writers, so a waiting one may be told to retry (503 or 409); it never
    # issues a second certificate and never answers 500
    retry = (ErrorCode.DB_UNAVAILABLE, ErrorCode.CONFLICT)
    busy = [o for o in outcomes if isinstance(o, CAError) and o.code in retry]
    assert len(issued) == 1 and len(issued) + len(refused) + len(busy) == 8, outcomes
    if rt.engine.dialect.name == "postgresql":
        assert not busy, outcomes
    assert _statuses(rt) == ["issued"]
    assert _unused_tokens(rt) == 7
