"""Enrollment policy: a pure decision over a registration, the model inventory and a request.

``decide`` never touches a database or the clock; it returns either the exact certificate
contents to issue or a refusal that names *every* reason, so an operator sees the whole
problem at once instead of fixing one field per attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.attestation import AttestedStatement, spki_sha256
from ca.errors import CAError, ErrorCode
from ca.extensions import (
    Accountability,
    AgentExtensions,
    Attestation,
    Authorization,
    Digest,
    Provenance,
)
from ca.names import normalise_scopes
from ca.profile import key_type_of
from ca.requests import IssuanceRequest


@dataclass(frozen=True)
class Registration:
    """An agent registration: the envelope its certificates must fit in."""

    name: str
    officer: str
    environment: str
    model_type: str
    allowed_scopes: tuple[str, ...]
    allowed_model_digests: tuple[str, ...]
    allowed_prompt_digests: tuple[str, ...]
    allowed_key_types: tuple[str, ...]
    max_validity: timedelta
    organization: str | None = None
    active: bool = True
    id: int | None = None
    # Empty: the CSR must declare no config digest. Otherwise it must declare one of these.
    allowed_config_digests: tuple[str, ...] = ()
    #: certificates only with a runtime attestation of the key and provenance (decision 0051)
    require_attestation: bool = False
    #: the stored policy columns as the decision read them (``ca.registry.POLICY_COLUMNS``): a
    #: reservation issues only while they are unchanged, so a registration tightened after
    #: the decision refuses the issuance instead of racing it
    version: tuple[object, ...] | None = None


@dataclass(frozen=True)
class InventoryModel:
    """One model digest in the inventory for one environment."""

    digest: str
    model_type: str
    environment: str
    active: bool
    #: the scheme the digest was registered under (decision 0049); certified only under it
    digest_scheme: str = "agentca-manifest-v1"
    #: the producer whose verified OMS signature admitted the entry (decision 0052), or None
    signed_by: str | None = None
    #: ``key`` or ``certificate``, and the signing key's SHA-256 or the certificate's subject
    signature_method: str | None = None
    signer: str | None = None
    signature_sha256: str | None = None
    #: the environment takes only signed models (``signed_model_environments``): an entry
    #: added unsigned, before the setting, no longer certifies there
    signature_required: bool = False


@dataclass(frozen=True)
class EnrollmentClaim:
    """What the agent asks for: its key, claimed provenance, scopes and validity."""

    public_key: CertificatePublicKeyTypes
    provenance: Provenance | None
    requested_scopes: tuple[str, ...] | None = None
    requested_validity: timedelta | None = None
    #: the verified statement of the attestation the agent sent (None: none, or refused)
    attestation: AttestedStatement | None = None
    #: why the attestation sent was refused (``attestation-*: detail``); None: not refused
    attestation_error: str | None = None
    #: SHA-256 of a statement that may not be used again (the current certificate's, on renewal)
    spent_statement: bytes | None = None


@dataclass(frozen=True)
class Refusal:
    """Every reason the request cannot be granted."""

    reasons: tuple[str, ...]

    def as_error(self, agent: str) -> CAError:
        detail = f"enrollment for '{agent}' refused: " + "; ".join(self.reasons)
        return CAError(ErrorCode.POLICY_REFUSED, detail, reasons=list(self.reasons))


def decide(
    registration: Registration,
    inventory: Mapping[tuple[str, str], InventoryModel],
    claim: EnrollmentClaim,
    default_validity: timedelta,
    global_max_validity: timedelta,
) -> IssuanceRequest | Refusal:
    """Grant (an :class:`IssuanceRequest`) or refuse (a :class:`Refusal` naming each reason).

    ``inventory`` maps ``(digest_hex, environment)`` to the inventory entry.
    """
    reasons: list[str] = []
    reg = registration
    if not reg.active:
        reasons.append(f"registration '{reg.name}' is disabled")
    try:
        key_type = key_type_of(claim.public_key)
        if key_type not in reg.allowed_key_types:
            reasons.append(
                f"key type {key_type} is not allowed (allowed: {', '.join(reg.allowed_key_types)})"
            )
    except CAError as exc:
        reasons.append(exc.detail)
    prov = claim.provenance
    if prov is None:
        reasons.append("the CSR carries no agent provenance attribute")
    else:
        if prov.model_type != reg.model_type:
            reasons.append(
                f"model type '{prov.model_type}' does not match the registration's "
                f"'{reg.model_type}'"
            )
        model = prov.model_digest.hex
        if model not in reg.allowed_model_digests:
            reasons.append(f"model digest {model} is not allowed for this agent")
        entry = inventory.get((model, reg.environment))
        if entry is None:
            reasons.append(
                f"model digest {model} is not in the inventory for environment '{reg.environment}'"
            )
        elif not entry.active:
            reasons.append(f"model digest {model} is retired")
        elif entry.signature_required and entry.signed_by is None:
            reasons.append(
                f"model-unsigned: environment '{reg.environment}' takes only models with a "
                f"verified signature, and model digest {model} was added unsigned"
            )
        if entry is not None and entry.digest_scheme != prov.model_digest_scheme.label:
            reasons.append(
                f"model digest {model} is registered under scheme {entry.digest_scheme}, "
                f"the CSR claims {prov.model_digest_scheme.label}"
            )
        prompt = prov.prompt_digest.hex
        if prompt not in reg.allowed_prompt_digests:
            reasons.append(f"prompt digest {prompt} is not allowed for this agent")
        config = None if prov.config_digest is None else prov.config_digest.hex
        if config is None:
            if reg.allowed_config_digests:
                reasons.append("the CSR declares no config digest; this agent requires one")
        elif not reg.allowed_config_digests:
            reasons.append(
                f"config digest {config} is not allowed: this agent's registration allows none"
            )
        elif config not in reg.allowed_config_digests:
            reasons.append(f"config digest {config} is not allowed for this agent")
    reasons += attestation_reasons(reg, claim)
    scopes: tuple[str, ...] = reg.allowed_scopes
    if claim.requested_scopes is not None:
        try:
            scopes = normalise_scopes(claim.requested_scopes)
        except CAError as exc:
            reasons.append(exc.detail)
        else:
            beyond = sorted(set(scopes) - set(reg.allowed_scopes))
            if beyond:
                reasons.append(f"scopes beyond the registration: {', '.join(beyond)}")
    limit = min(reg.max_validity, global_max_validity)
    validity = claim.requested_validity or min(default_validity, limit)
    if validity <= timedelta(0):
        reasons.append("validity must be positive")
    elif validity > limit:
        reasons.append(f"validity {validity} exceeds the maximum of {limit}")
    if reasons:
        return Refusal(tuple(reasons))
    assert prov is not None
    return IssuanceRequest(
        public_key=claim.public_key,
        agent_name=reg.name,
        extensions=AgentExtensions(
            provenance=prov,
            authorization=Authorization(scopes=scopes),
            accountability=Accountability(
                officer=reg.officer, environment=reg.environment, organization=reg.organization
            ),
            attestation=_marker(claim.attestation),
        ),
        validity=validity,
    )


def _marker(statement: AttestedStatement | None) -> Attestation | None:
    if statement is None:
        return None
    return Attestation(
        statement.method,
        statement.attestor,
        statement.key_id,
        statement.issued_at,
        Digest(statement.statement_sha256),
    )


def attestation_reasons(reg: Registration, claim: EnrollmentClaim) -> list[str]:
    """Why the attestation does not let this claim through (each reason starts with its
    ``attestation-*`` slug): missing while required, refused, or attesting something else
    than the CSR (key, agent, environment, model digest and scheme, prompt, config)."""
    if claim.attestation_error is not None:
        return [claim.attestation_error]
    st = claim.attestation
    if st is None:
        if reg.require_attestation:
            return [
                f"attestation-missing: agent '{reg.name}' requires a runtime attestation "
                "and none was sent"
            ]
        return []
    reasons = []
    if claim.spent_statement is not None and claim.spent_statement == st.statement_sha256:
        reasons.append(
            "attestation-reused: the current certificate was issued on this attestation; "
            "a renewal needs a fresh one"
        )
    if st.spki_sha256 != spki_sha256(claim.public_key):
        reasons.append(
            "attestation-key-mismatch: the attestation is for another public key than the CSR's"
        )
    if st.agent != reg.name:
        reasons.append(f"attestation-mismatch: attested agent '{st.agent}' is not '{reg.name}'")
    if st.environment != reg.environment:
        reasons.append(
            f"attestation-mismatch: attested environment '{st.environment}' is not "
            f"'{reg.environment}'"
        )
    prov = claim.provenance
    if prov is not None:
        differs = []
        if (st.model_digest.value, st.model_digest_scheme) != (
            prov.model_digest.value,
            prov.model_digest_scheme,
        ):
            differs.append("model digest")
        if st.prompt_digest.value != prov.prompt_digest.value:
            differs.append("prompt digest")
        config = None if prov.config_digest is None else prov.config_digest.value
        attested_config = None if st.config_digest is None else st.config_digest.value
        if config != attested_config:
            differs.append("config digest")
        if differs:
            reasons.append(
                f"attestation-mismatch: the CSR's {', '.join(differs)} differ from the attested"
            )
    return reasons
