"""A registration tightened between enrollment's decision and its reservation refuses the
issuance (decision 0051's follow-up): the reservation issues only while the registration is the
one the decision read (``agents.updated_at``), on the PostgreSQL three-statement path and the
general one (SQLite)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from ca.errors import CAError, ErrorCode
from ca.store.models import Certificate, EnrollmentToken
from ca.wiring import Runtime
from tests.integration.test_crash_safe_enrollment import _csr, _register, _token

NAME = "crash-agent"


def _tighten_once(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """After the first policy decision, an operator requires attestation (committed)."""
    real = rt.enrollment._outcome
    calls: list[int] = []

    def decide_then_tighten(*args: Any, **kwargs: Any) -> Any:
        outcome = real(*args, **kwargs)
        if not calls:
            rt.registry.update_agent(NAME, require_attestation=True, actor="test")
        calls.append(1)
        return outcome

    monkeypatch.setattr(rt.enrollment, "_outcome", decide_then_tighten)
    return calls


def test_a_registration_tightened_after_the_decision_refuses_the_issuance(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = ca_runtime
    _register(rt)
    token = _token(rt)
    _, csr = _csr()
    calls = _tighten_once(rt, monkeypatch)
    with pytest.raises(CAError) as info:
        rt.enrollment.enroll(token, csr)
    if rt.engine.dialect.name == "postgresql":
        # the three-statement reservation wrote nothing; the general path decided anew on
        # the tightened registration
        assert info.value.code is ErrorCode.POLICY_REFUSED, info.value
        assert any(r.startswith("attestation-missing") for r in info.value.extra["reasons"])
        assert len(calls) == 2
    else:
        assert info.value.code is ErrorCode.CONFLICT, info.value
        assert "changed while the request was decided" in str(info.value)
    with rt.sessions() as s:
        assert s.scalars(select(Certificate.status)).all() == []  # no record at all
        assert s.scalar(select(EnrollmentToken.used_at)) is None  # the token is not spent

    # sent again, the request is decided on the registration as it now is
    with pytest.raises(CAError) as again:
        rt.enrollment.enroll(token, csr)
    assert any(r.startswith("attestation-missing") for r in again.value.extra["reasons"])
    # an unchanged registration still issues, with the same token
    rt.registry.update_agent(NAME, require_attestation=False, actor="test")
    assert rt.enrollment.enroll(token, csr).status == "issued"


def test_an_unchanged_registration_takes_the_three_statement_path(
    ca_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison holds for an unchanged registration, NULL organization included: the
    PostgreSQL enrollment issues without falling back to the general path."""
    rt = ca_runtime
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("the three-statement path is PostgreSQL's")
    _register(rt)
    token = _token(rt)
    _, csr = _csr()

    def general_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(rt.enrollment, "_decide", general_path)
    assert rt.enrollment.enroll(token, csr).status == "issued"
