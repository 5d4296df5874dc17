"""An environment made signed-only stops certifying the unsigned models it already had
(decision 0052, "Changed"), on SQLite and PostgreSQL through the real CA runtime.

``signed_model_environments`` refused only new unsigned ``model add``; an entry added unsigned
before the setting kept certifying. Now the enrollment policy refuses it with a
``model-unsigned`` reason, writes nothing and leaves the token usable; the same registration
enrolls again once the setting no longer covers the environment.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ca.errors import CAError, ErrorCode
from ca.store.models import Certificate
from ca.wiring import Runtime
from tests.integration.test_crash_safe_enrollment import _csr, _register, _token


def _rows(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Certificate)) or 0)


def test_an_unsigned_entry_no_longer_certifies_once_its_environment_is_signed_only(
    ca_runtime: Runtime,
) -> None:
    rt = ca_runtime
    _register(rt)  # the model "m" is added unsigned to "prod"
    assert rt.enrollment.registry is rt.registry
    assert rt.enrollment.enroll(_token(rt), _csr()[1]).status == "issued"

    rt.registry.signed_environments = ("Prod*",)  # case does not matter
    token = _token(rt)
    with pytest.raises(CAError) as info:
        rt.enrollment.enroll(token, _csr()[1])
    assert info.value.code is ErrorCode.POLICY_REFUSED, info.value
    reasons = info.value.extra["reasons"]
    assert any(r.startswith("model-unsigned: environment 'prod'") for r in reasons), reasons
    assert _rows(rt) == 1  # nothing written

    rt.registry.signed_environments = ("staging",)
    assert rt.enrollment.enroll(token, _csr()[1]).status == "issued"  # the same token
    assert _rows(rt) == 2
