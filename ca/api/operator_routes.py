"""Operator, auditor and read-only endpoints (bearer API tokens, role checked per endpoint)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, jsonify, request

from ca.api.auth import ISSUERS, READERS, WRITERS, principal, require
from ca.api.bodies import (
    field,
    json_body,
    model_json,
    registration_json,
    seconds,
    string_list,
)
from ca.api.state import runtime
from ca.apitokens import Role, parse_role
from ca.authority import CertificateFilter, RevocationCriteria
from ca.enrollment import DirectIssuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.names import parse_sha256_hex
from ca.revocation import RevocationReason

operator = Blueprint("operator", __name__)


def _created(body: Any) -> Response:
    resp = jsonify(body)
    resp.status_code = 201
    return resp


def _reason(data: dict[str, Any]) -> RevocationReason:
    raw = field(data, "reason", str, required=False)
    return RevocationReason.parse(raw) if raw else RevocationReason.UNSPECIFIED


# -- scopes -----------------------------------------------------------------------------------
@operator.get("/v1/scopes")
@require(READERS)
def list_scopes() -> Response:
    """The scope catalogue."""
    return jsonify(
        [{"name": s.name, "description": s.description} for s in runtime().registry.list_scopes()]
    )


@operator.post("/v1/scopes")
@require(WRITERS)
def add_scope() -> Response:
    """Add a scope to the catalogue."""
    data = json_body()
    s = runtime().registry.add_scope(
        field(data, "name", str),
        field(data, "description", str, required=False),
        actor=principal().actor,
    )
    return _created({"name": s.name, "description": s.description})


# -- models -----------------------------------------------------------------------------------
@operator.get("/v1/models")
@require(READERS)
def list_models() -> Response:
    """The model inventory (filters: environment, status)."""
    status = request.args.get("status")
    if status not in (None, "active", "retired"):
        raise CAError(ErrorCode.BAD_REQUEST, "status must be active or retired")
    models = runtime().registry.list_models(request.args.get("environment"), status)
    return jsonify([model_json(m) for m in models])


@operator.post("/v1/models")
@require(WRITERS)
def add_model() -> Response:
    """Authorise a model digest for an environment."""
    data = json_body()
    m = runtime().registry.add_model(
        field(data, "digest", str),
        field(data, "model_type", str),
        field(data, "environment", str),
        field(data, "description", str, required=False),
        actor=principal().actor,
    )
    return _created(model_json(m))


@operator.post("/v1/models/<digest>/retire")
@require(WRITERS)
def retire_model(digest: str) -> Response:
    """Retire a model: new issuance stops; with ``revoke: true`` live certificates are revoked."""
    data = json_body() if request.get_data() else {}
    environment = field(data, "environment", str, required=False)
    revoke = field(data, "revoke", bool, required=False) or False
    reason = _reason(data) if "reason" in data else RevocationReason.PRIVILEGE_WITHDRAWN
    rt = runtime()
    retired = rt.registry.retire_model(digest, environment, actor=principal().actor)
    revoked: list[str] = []
    if revoke:
        records = rt.authority.revoke_where(
            RevocationCriteria(
                model_digest=parse_sha256_hex(digest).hex(), environment=environment
            ),
            reason,
            principal().actor,
        )
        revoked = [r.serial_hex for r in records]
    return jsonify({"retired": [model_json(m) for m in retired], "revoked": revoked})


# -- agents -----------------------------------------------------------------------------------
@operator.get("/v1/agents")
@require(READERS)
def list_agents() -> Response:
    """All registrations."""
    return jsonify([registration_json(r) for r in runtime().registry.list_agents()])


@operator.post("/v1/agents")
@require(WRITERS)
def register_agent() -> Response:
    """Register an agent."""
    data = json_body()
    max_validity = seconds(data, "max_validity_seconds")
    key_types = string_list(data, "key_types", required=False)
    kwargs: dict[str, Any] = {}
    if max_validity is not None:
        kwargs["max_validity"] = max_validity
    if key_types is not None:
        kwargs["key_types"] = key_types
    reg = runtime().registry.register_agent(
        name=field(data, "name", str),
        officer=field(data, "officer", str),
        environment=field(data, "environment", str),
        model_type=field(data, "model_type", str),
        scopes=string_list(data, "scopes") or [],
        model_digests=string_list(data, "model_digests") or [],
        prompt_digests=string_list(data, "prompt_digests") or [],
        config_digests=string_list(data, "config_digests", required=False) or [],
        organization=field(data, "organization", str, required=False),
        actor=principal().actor,
        **kwargs,
    )
    return _created(registration_json(reg))


@operator.get("/v1/agents/<name>")
@require(READERS)
def get_agent(name: str) -> Response:
    """One registration."""
    return jsonify(registration_json(runtime().registry.get_agent(name)))


@operator.patch("/v1/agents/<name>")
@require(WRITERS)
def update_agent(name: str) -> Response:
    """Change fields of a registration (only those given)."""
    data = json_body()
    status = field(data, "status", str, required=False)
    if status not in (None, "active", "disabled"):
        raise CAError(ErrorCode.BAD_REQUEST, "status must be active or disabled")
    reg = runtime().registry.update_agent(
        name,
        officer=field(data, "officer", str, required=False),
        scopes=string_list(data, "scopes", required=False),
        model_digests=string_list(data, "model_digests", required=False),
        prompt_digests=string_list(data, "prompt_digests", required=False),
        config_digests=string_list(data, "config_digests", required=False),
        key_types=string_list(data, "key_types", required=False),
        max_validity=seconds(data, "max_validity_seconds"),
        active=None if status is None else status == "active",
        actor=principal().actor,
    )
    return jsonify(registration_json(reg))


@operator.post("/v1/agents/<name>/disable")
@require(WRITERS)
def disable_agent(name: str) -> Response:
    """Disable a registration: no enrollment or renewal until re-enabled."""
    return jsonify(
        registration_json(
            runtime().registry.update_agent(name, active=False, actor=principal().actor)
        )
    )


@operator.post("/v1/agents/<name>/enrollment-tokens")
@require(WRITERS)
def create_enrollment_token(name: str) -> Response:
    """A one-time enrollment token for the agent (shown only in this answer)."""
    data = json_body() if request.get_data() else {}
    rt = runtime()
    ttl = seconds(data, "ttl_seconds") or rt.settings.enrollment_ttl
    token, expires = rt.registry.create_enrollment_token(name, ttl, principal().actor)
    return _created({"token": token, "agent": name, "expires_at": expires.isoformat()})


# -- certificates -----------------------------------------------------------------------------
@operator.get("/v1/certificates")
@require(READERS)
def list_certificates() -> Response:
    """Certificate records, newest first (filters: agent, status, officer, digests, limit)."""
    args = request.args
    try:
        limit = int(args.get("limit", "100"))
    except ValueError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, "limit must be an integer") from exc
    if not 1 <= limit <= 10_000:
        raise CAError(ErrorCode.BAD_REQUEST, "limit must be between 1 and 10000")
    flt = CertificateFilter(
        agent_name=args.get("agent"),
        status=args.get("status"),
        officer=args.get("officer"),
        model_digest=parse_sha256_hex(args["model_digest"]).hex()
        if "model_digest" in args
        else None,
        prompt_digest=parse_sha256_hex(args["prompt_digest"]).hex()
        if "prompt_digest" in args
        else None,
        limit=limit,
    )
    return jsonify([r.to_dict() for r in runtime().authority.list(flt)])


def _provenance(data: dict[str, Any]) -> Provenance | None:
    """Explicit provenance from the body: all of model_type and both digests, or none."""
    names = ("model_type", "model_digest", "prompt_digest")
    given = [n for n in names if data.get(n) is not None]
    if not given and data.get("config_digest") is None:
        return None
    if len(given) != len(names):
        raise CAError(
            ErrorCode.BAD_REQUEST,
            "give model_type, model_digest and prompt_digest together, or none of them "
            "(the CSR's provenance attribute is then used)",
        )
    config_digest = field(data, "config_digest", str, required=False)
    return Provenance(
        model_type=field(data, "model_type", str),
        model_digest=Digest(parse_sha256_hex(field(data, "model_digest", str))),
        prompt_digest=Digest(parse_sha256_hex(field(data, "prompt_digest", str))),
        config_digest=Digest(parse_sha256_hex(config_digest)) if config_digest else None,
    )


@operator.post("/v1/certificates")
@require(ISSUERS)
def issue_certificate() -> Response:
    """Direct issuance from a CSR for a registered agent, through the enrollment policy.

    ``outside_policy: true`` signs the contents given verbatim; only an ``issuer-verbatim``
    token may ask for it, and the ledger records it with the reasons policy gave.
    """
    data = json_body()
    outside_policy = field(data, "outside_policy", bool, required=False) or False
    caller = principal()
    if outside_policy and caller.role is not Role.ISSUER_VERBATIM:
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"role '{caller.role.value}' may not issue outside policy "
            f"(only '{Role.ISSUER_VERBATIM.value}' tokens may)",
        )
    scopes = string_list(data, "scopes", required=False)
    req = DirectIssuance(
        agent_name=field(data, "agent", str),
        csr=field(data, "csr", str).encode(),
        provenance=_provenance(data),
        scopes=tuple(scopes) if scopes is not None else None,
        officer=field(data, "officer", str, required=False),
        environment=field(data, "environment", str, required=False),
        organization=field(data, "organization", str, required=False),
        validity=seconds(data, "validity_seconds"),
    )
    record = runtime().enrollment.issue_direct(req, caller.actor, outside_policy=outside_policy)
    body = record.to_dict()
    cert = record.certificate
    assert cert is not None
    body["certificate_pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    resp = _created(body)
    resp.headers["Location"] = f"/certificates/{record.serial_hex}"
    return resp


@operator.post("/v1/certificates/<serial>/revoke")
@require(WRITERS)
def revoke_certificate(serial: str) -> Response:
    """Revoke one certificate with an RFC 5280 reason."""
    data = json_body() if request.get_data() else {}
    record = runtime().authority.revoke(serial, _reason(data), principal().actor)
    return jsonify(record.to_dict())


@operator.post("/v1/revocations")
@require(WRITERS)
def bulk_revoke() -> Response:
    """Revoke every live certificate bound to a model digest, prompt digest, officer or agent."""
    data = json_body()
    model = field(data, "model_digest", str, required=False)
    prompt = field(data, "prompt_digest", str, required=False)
    criteria = RevocationCriteria(
        model_digest=parse_sha256_hex(model).hex() if model else None,
        prompt_digest=parse_sha256_hex(prompt).hex() if prompt else None,
        officer=field(data, "officer", str, required=False),
        agent_name=field(data, "agent", str, required=False),
    )
    records = runtime().authority.revoke_where(criteria, _reason(data), principal().actor)
    return jsonify({"revoked": [r.serial_hex for r in records], "count": len(records)})


# -- API tokens -------------------------------------------------------------------------------
@operator.get("/v1/api-tokens")
@require(WRITERS)
def list_api_tokens() -> Response:
    """Every API token with its role, status, expiry and last use (never the secret)."""
    rt = runtime()
    now = rt.authority.clock()
    return jsonify([t.to_json(now) for t in rt.api_tokens.list()])


@operator.post("/v1/api-tokens")
@require(WRITERS)
def create_api_token() -> Response:
    """Create an API token; the secret is in this answer only. ``ttl_seconds`` is optional
    (default and maximum lifetimes are settings)."""
    data = json_body()
    rt = runtime()
    role = field(data, "role", str)
    if parse_role(role) is Role.ISSUER_VERBATIM:
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"'{Role.ISSUER_VERBATIM.value}' tokens are created only with the local CLI "
            "('agentca apitoken create --role issuer-verbatim'), never through the API",
        )
    secret, info = rt.api_tokens.create(
        field(data, "name", str),
        role,
        actor=principal().actor,
        ttl=seconds(data, "ttl_seconds"),
    )
    body = info.to_json(rt.authority.clock())
    body["token"] = secret
    return _created(body)


@operator.post("/v1/api-tokens/<name>/revoke")
@require(WRITERS)
def revoke_api_token(name: str) -> Response:
    """Revoke an API token at once: its next request is answered 401."""
    rt = runtime()
    info = rt.api_tokens.revoke(name, principal().actor)
    return jsonify(info.to_json(rt.authority.clock()))
