"""Operator, auditor and read-only endpoints (bearer API tokens, role checked per endpoint)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, jsonify, request

from ca.api.auth import ISSUERS, READERS, WRITERS, principal, require
from ca.api.bodies import model_json, registration_json
from ca.api.schemas import (
    BulkRevocation,
    EnrollmentTokenRequest,
    IssueJson,
    NewApiToken,
    NewModel,
    NewRegistration,
    RegistrationUpdate,
    Retirement,
    Revocation,
    Scope,
)
from ca.api.state import runtime
from ca.api.validation import read_body, timedelta_or_none
from ca.apitokens import Role, parse_role
from ca.enrollment import DirectIssuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.model_signatures import check_bundle
from ca.names import parse_sha256_hex
from ca.requests import CertificateFilter, RevocationCriteria
from ca.revocation import RevocationReason
from wire.extensions import ModelDigestScheme

operator = Blueprint("operator", __name__)


def _created(body: Any) -> Response:
    resp = jsonify(body)
    resp.status_code = 201
    return resp


def _reason(raw: str | None) -> RevocationReason:
    return RevocationReason.parse(raw) if raw else RevocationReason.UNSPECIFIED


# -- scopes -----------------------------------------------------------------------------------
@operator.get("/v1/scopes")
@require(READERS)
def list_scopes() -> Response:
    """The scope catalogue."""
    return jsonify(
        [
            {"name": s.name, "description": s.description}
            for s in runtime().read_registry.list_scopes()
        ]
    )


@operator.post("/v1/scopes")
@require(WRITERS)
def add_scope() -> Response:
    """Add a scope to the catalogue."""
    body = read_body(Scope)
    s = runtime().registry.add_scope(
        body.name,
        body.description,
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
    models = runtime().read_registry.list_models(request.args.get("environment"), status)
    resp = jsonify([model_json(m) for m in models])
    # gateways poll this every few seconds: a strong ETag lets them ask "changed?" and get a
    # bodiless 304 (which the access log leaves out, ca.api.access_log)
    resp.add_etag()
    resp.headers["Cache-Control"] = "private, no-cache"
    resp.make_conditional(request)  # a 304 answer when If-None-Match matches
    return resp


@operator.post("/v1/models")
@require(WRITERS)
def add_model() -> Response:
    """Authorise a model digest for an environment."""
    body = read_body(NewModel)
    rt = runtime()
    bundle = None if body.signature is None else body.signature.encode("utf-8")
    verified = None if bundle is None else check_bundle(rt.settings, bundle)
    m = rt.registry.add_model(
        body.digest,
        body.model_type,
        body.environment,
        body.description,
        actor=principal().actor,
        digest_scheme=body.digest_scheme,
        signature=verified,
        bundle=bundle,
    )
    return _created(model_json(m))


@operator.post("/v1/models/<digest>/retire")
@require(WRITERS)
def retire_model(digest: str) -> Response:
    """Retire a model: new issuance stops; with ``revoke: true`` live certificates are revoked."""
    body = read_body(Retirement, optional=True)
    reason = _reason(body.reason) if body.reason else RevocationReason.PRIVILEGE_WITHDRAWN
    done = runtime().operations.retire_model(
        digest, body.environment, revoke=body.revoke, reason=reason, actor=principal().actor
    )
    return jsonify(
        {
            "retired": [model_json(m) for m in done.retired],
            "revoked": [r.serial_hex for r in done.revoked],
        }
    )


# -- agents -----------------------------------------------------------------------------------
@operator.get("/v1/agents")
@require(READERS)
def list_agents() -> Response:
    """All registrations."""
    return jsonify([registration_json(r) for r in runtime().read_registry.list_agents()])


@operator.post("/v1/agents")
@require(WRITERS)
def register_agent() -> Response:
    """Register an agent."""
    body = read_body(NewRegistration)
    max_validity = timedelta_or_none(body.max_validity_seconds)
    key_types = body.key_types
    kwargs: dict[str, Any] = {}
    if max_validity is not None:
        kwargs["max_validity"] = max_validity
    if key_types is not None:
        kwargs["key_types"] = key_types
    reg = runtime().registry.register_agent(
        name=body.name,
        officer=body.officer,
        environment=body.environment,
        model_type=body.model_type,
        scopes=body.scopes,
        model_digests=body.model_digests,
        prompt_digests=body.prompt_digests,
        config_digests=body.config_digests or [],
        organization=body.organization,
        actor=principal().actor,
        require_attestation=body.require_attestation,
        **kwargs,
    )
    return _created(registration_json(reg))


@operator.get("/v1/agents/<name>")
@require(READERS)
def get_agent(name: str) -> Response:
    """One registration."""
    return jsonify(registration_json(runtime().read_registry.get_agent(name)))


@operator.patch("/v1/agents/<name>")
@require(WRITERS)
def update_agent(name: str) -> Response:
    """Change fields of a registration (only those given)."""
    body = read_body(RegistrationUpdate)
    reg = runtime().registry.update_agent(
        name,
        officer=body.officer,
        scopes=body.scopes,
        model_digests=body.model_digests,
        prompt_digests=body.prompt_digests,
        config_digests=body.config_digests,
        key_types=body.key_types,
        max_validity=timedelta_or_none(body.max_validity_seconds),
        active=None if body.status is None else body.status == "active",
        actor=principal().actor,
        require_attestation=body.require_attestation,
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
    body = read_body(EnrollmentTokenRequest, optional=True)
    rt = runtime()
    ttl = timedelta_or_none(body.ttl_seconds) or rt.settings.enrollment_ttl
    token, expires = rt.enrollment_tokens.create(name, ttl, principal().actor)
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
    return jsonify([r.to_dict() for r in runtime().read_queries.list(flt)])


def _provenance(body: IssueJson) -> Provenance | None:
    """Explicit provenance from the body: all of model_type and both digests, or none."""
    model_type, model, prompt = body.model_type, body.model_digest, body.prompt_digest
    given = [v for v in (model_type, model, prompt) if v is not None]
    if not given and body.config_digest is None:
        return None
    if model_type is None or model is None or prompt is None:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            "give model_type, model_digest and prompt_digest together, or none of them "
            "(the CSR's provenance attribute is then used)",
        )
    config_digest = body.config_digest
    return Provenance(
        model_type=model_type,
        model_digest=Digest(parse_sha256_hex(model)),
        prompt_digest=Digest(parse_sha256_hex(prompt)),
        config_digest=Digest(parse_sha256_hex(config_digest)) if config_digest else None,
        model_digest_scheme=ModelDigestScheme.parse(body.model_digest_scheme),
    )


@operator.post("/v1/certificates")
@require(ISSUERS)
def issue_certificate() -> Response:
    """Direct issuance from a CSR for a registered agent, through the enrollment policy.

    ``outside_policy: true`` signs the contents given verbatim; only an ``issuer-verbatim``
    token may ask for it, and the ledger records it with the reasons policy gave.
    """
    body = read_body(IssueJson)
    outside_policy = body.outside_policy
    caller = principal()
    if outside_policy and caller.role is not Role.ISSUER_VERBATIM:
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"role '{caller.role.value}' may not issue outside policy "
            f"(only '{Role.ISSUER_VERBATIM.value}' tokens may)",
        )
    req = DirectIssuance(
        agent_name=body.agent,
        csr=body.csr.encode(),
        provenance=_provenance(body),
        scopes=tuple(body.scopes) if body.scopes is not None else None,
        officer=body.officer,
        environment=body.environment,
        organization=body.organization,
        validity=timedelta_or_none(body.validity_seconds),
    )
    record = runtime().enrollment.issue_direct(req, caller.actor, outside_policy=outside_policy)
    answer = record.to_dict()
    cert = record.certificate
    assert cert is not None
    answer["certificate_pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    resp = _created(answer)
    resp.headers["Location"] = f"/certificates/{record.serial_hex}"
    return resp


@operator.post("/v1/certificates/<serial>/revoke")
@require(WRITERS)
def revoke_certificate(serial: str) -> Response:
    """Revoke one certificate with an RFC 5280 reason."""
    body = read_body(Revocation, optional=True)
    record = runtime().authority.revoke(serial, _reason(body.reason), principal().actor)
    return jsonify(record.to_dict())


@operator.post("/v1/revocations")
@require(WRITERS)
def bulk_revoke() -> Response:
    """Revoke every live certificate bound to a model digest, prompt digest, officer or agent."""
    body = read_body(BulkRevocation)
    model, prompt = body.model_digest, body.prompt_digest
    criteria = RevocationCriteria(
        model_digest=parse_sha256_hex(model).hex() if model else None,
        prompt_digest=parse_sha256_hex(prompt).hex() if prompt else None,
        officer=body.officer,
        agent_name=body.agent,
    )
    records = runtime().authority.revoke_where(criteria, _reason(body.reason), principal().actor)
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
    body = read_body(NewApiToken)
    rt = runtime()
    role = body.role
    if parse_role(role) in (Role.ISSUER_VERBATIM, Role.GATEWAY):
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"'{role}' tokens are created only with the local CLI "
            f"('agentca apitoken create --role {role}'), never through the API",
        )
    secret, info = rt.api_tokens.create(
        body.name,
        role,
        actor=principal().actor,
        ttl=timedelta_or_none(body.ttl_seconds),
    )
    answer = info.to_json(rt.authority.clock())
    answer["token"] = secret
    return _created(answer)


@operator.post("/v1/api-tokens/<name>/revoke")
@require(WRITERS)
def revoke_api_token(name: str) -> Response:
    """Revoke an API token at once: its next request is answered 401."""
    rt = runtime()
    info = rt.api_tokens.revoke(name, principal().actor)
    return jsonify(info.to_json(rt.authority.clock()))
