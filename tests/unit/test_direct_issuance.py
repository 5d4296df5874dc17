"""Pure pieces of direct issuance: accountability checks, verbatim contents, the ledger note."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import CertificateSigningRequestBuilder, Name

from ca.apitokens import Role, parse_role
from ca.enrollment import DirectIssuance, _accountability_mismatches, _verbatim
from ca.errors import CAError, ErrorCode
from ca.issuance import decision_note, issued_body
from ca.store.models import Certificate
from tests.unit.test_policy import PROV, REG


def _csr():  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    return CertificateSigningRequestBuilder().subject_name(Name([])).sign(key, hashes.SHA256())


def _req(**kw: object) -> DirectIssuance:
    pem = _csr().public_bytes(serialization.Encoding.PEM)
    return DirectIssuance(agent_name="exec-agent", csr=pem, **kw)  # type: ignore[arg-type]


def test_issuer_verbatim_is_a_role() -> None:
    assert parse_role("issuer-verbatim") is Role.ISSUER_VERBATIM


def test_accountability_must_be_the_registrations() -> None:
    same = _req(officer=REG.officer, environment="prod", organization="Bank")
    assert _accountability_mismatches(same, REG) == []
    other = _req(officer="stranger@evil.example", environment="staging")
    assert _accountability_mismatches(other, REG) == [
        "officer 'stranger@evil.example' is not the registration's officer 'officer@bank.example'",
        "environment 'staging' is not the registration's environment 'prod'",
    ]


def test_verbatim_signs_exactly_what_is_given_and_notes_the_reasons() -> None:
    req = _req(scopes=("halt_trading",), officer="stranger@evil.example", environment="prod")
    out = _verbatim(req, _csr(), PROV, ["no agent is registered as 'exec-agent'"])
    assert out.extensions.authorization.scopes == ("halt_trading",)
    assert out.extensions.accountability.officer == "stranger@evil.example"
    assert out.ledger_note == {
        "outside_policy": True,
        "policy_reasons": ["no agent is registered as 'exec-agent'"],
    }


def test_verbatim_needs_every_content() -> None:
    with pytest.raises(CAError) as err:
        _verbatim(_req(scopes=("a",)), _csr(), None, [])
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert "missing: provenance, officer, environment" in err.value.detail


def test_issuance_entries_are_outside_policy_unless_noted() -> None:
    assert decision_note(None) == {"outside_policy": True}
    assert decision_note({"outside_policy": False}) == {"outside_policy": False}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = Certificate(
        serial_hex="01", agent_name="a", not_before=now, not_after=now, requested_by="x"
    )
    ext = _verbatim(
        _req(scopes=("a",), officer="o@example.com", environment="prod"), _csr(), PROV, []
    ).extensions
    body = issued_body(row, ext, "00" * 32, {"outside_policy": False})
    assert body["outside_policy"] is False and "policy_reasons" not in body
