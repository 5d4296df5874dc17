"""The pure enrollment policy decision: grants exact contents, refusals name every reason."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.api.problems import problem_body
from ca.extensions import Digest, Provenance
from ca.policy import EnrollmentClaim, InventoryModel, Refusal, Registration, decide
from ca.requests import IssuanceRequest
from tests.unit.helpers import MODEL, PROMPT

OTHER = "11" * 32
REG = Registration(
    name="exec-agent",
    officer="officer@bank.example",
    environment="prod",
    model_type="claude-x",
    allowed_scopes=("query_order_book", "submit_limit_order"),
    allowed_model_digests=(MODEL,),
    allowed_prompt_digests=(PROMPT,),
    allowed_key_types=("ec-p256",),
    max_validity=timedelta(hours=6),
    organization="Bank",
    id=7,
)
INVENTORY = {(MODEL, "prod"): InventoryModel(MODEL, "claude-x", "prod", True)}
PROV = Provenance("claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))


def _claim(**kw: object) -> EnrollmentClaim:
    values: dict[str, object] = {
        "public_key": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "provenance": PROV,
    }
    values.update(kw)
    return EnrollmentClaim(**values)  # type: ignore[arg-type]


def _decide(claim: EnrollmentClaim, reg: Registration = REG, inv=INVENTORY):
    return decide(reg, inv, claim, timedelta(hours=12), timedelta(days=7))


def test_grant_carries_registration_values() -> None:
    out = _decide(_claim())
    assert isinstance(out, IssuanceRequest)
    assert out.agent_name == "exec-agent"
    assert out.extensions.authorization.scopes == ("query_order_book", "submit_limit_order")
    assert out.extensions.accountability.officer == "officer@bank.example"
    assert out.extensions.accountability.organization == "Bank"
    assert out.extensions.provenance == PROV
    assert out.validity == timedelta(hours=6)  # default capped by the registration


def test_requested_subset_of_scopes_and_shorter_validity() -> None:
    out = _decide(
        _claim(requested_scopes=("submit_limit_order",), requested_validity=timedelta(hours=1))
    )
    assert isinstance(out, IssuanceRequest)
    assert out.extensions.authorization.scopes == ("submit_limit_order",)
    assert out.validity == timedelta(hours=1)


def test_refusal_names_every_reason_at_once() -> None:
    bad = Provenance("gpt-y", Digest.sha256_hex(OTHER), Digest.sha256_hex(OTHER))
    out = _decide(
        _claim(
            public_key=rsa.generate_private_key(65537, 2048).public_key(),
            provenance=bad,
            requested_scopes=("withdraw_funds",),
            requested_validity=timedelta(days=2),
        )
    )
    assert isinstance(out, Refusal)
    text = " | ".join(out.reasons)
    for needle in (
        "key type rsa-2048",
        "model type 'gpt-y'",
        f"model digest {OTHER} is not allowed",
        "not in the inventory",
        f"prompt digest {OTHER}",
        "withdraw_funds",
        "exceeds the maximum",
    ):
        assert needle in text, needle
    assert len(out.reasons) == 7
    err = out.as_error("exec-agent")
    assert problem_body(err)["reasons"] == list(out.reasons)


def test_retired_model_is_refused() -> None:
    inv = {(MODEL, "prod"): InventoryModel(MODEL, "claude-x", "prod", False)}
    out = _decide(_claim(), inv=inv)
    assert isinstance(out, Refusal) and out.reasons == (f"model digest {MODEL} is retired",)


def test_inventory_is_per_environment() -> None:
    inv = {(MODEL, "staging"): InventoryModel(MODEL, "claude-x", "staging", True)}
    out = _decide(_claim(), inv=inv)
    assert isinstance(out, Refusal) and "environment 'prod'" in out.reasons[0]


def test_missing_provenance_and_disabled_registration() -> None:
    import dataclasses

    out = _decide(_claim(provenance=None), reg=dataclasses.replace(REG, active=False))
    assert isinstance(out, Refusal)
    assert out.reasons == (
        "registration 'exec-agent' is disabled",
        "the CSR carries no agent provenance attribute",
    )


def test_malformed_scope_request_is_a_reason_not_a_crash() -> None:
    out = _decide(_claim(requested_scopes=("Not A Scope",)))
    assert isinstance(out, Refusal) and "scope" in out.reasons[0]


# -- config digests (issue 9 item 10): certified only when the registration allows them -------
CONFIG = "5c" * 32
PROV_CFG = Provenance(
    "claude-x", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT), Digest.sha256_hex(CONFIG)
)


def test_config_digest_is_refused_when_the_registration_allows_none() -> None:
    out = _decide(_claim(provenance=PROV_CFG))
    assert isinstance(out, Refusal)
    assert out.reasons == (
        f"config digest {CONFIG} is not allowed: this agent's registration allows none",
    )


def test_config_digest_allowed_by_the_registration_is_certified() -> None:
    import dataclasses

    reg = dataclasses.replace(REG, allowed_config_digests=(OTHER, CONFIG))
    out = _decide(_claim(provenance=PROV_CFG), reg=reg)
    assert isinstance(out, IssuanceRequest)
    assert out.extensions.provenance.config_digest == Digest.sha256_hex(CONFIG)


def test_config_digest_not_in_the_registration_is_refused() -> None:
    import dataclasses

    reg = dataclasses.replace(REG, allowed_config_digests=(OTHER,))
    out = _decide(_claim(provenance=PROV_CFG), reg=reg)
    assert isinstance(out, Refusal)
    assert out.reasons == (f"config digest {CONFIG} is not allowed for this agent",)


def test_a_registration_with_config_digests_requires_one() -> None:
    import dataclasses

    reg = dataclasses.replace(REG, allowed_config_digests=(CONFIG,))
    out = _decide(_claim(), reg=reg)
    assert isinstance(out, Refusal)
    assert out.reasons == ("the CSR declares no config digest; this agent requires one",)


def test_no_config_digest_and_none_allowed_is_granted() -> None:
    out = _decide(_claim())
    assert isinstance(out, IssuanceRequest)
    assert out.extensions.provenance.config_digest is None
