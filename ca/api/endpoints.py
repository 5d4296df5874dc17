"""The route table of the CA API's OpenAPI document: what a type cannot say.

Path, method, summary, tag, security, parameters, and which model of :mod:`ca.api.schemas`
each operation takes and answers; :mod:`ca.api.openapi` assembles the document. Just over
400 lines: one literal per operation (36 of them), kept together so the table reads as one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ca.api import schemas
from ca.api.schemas import MAX_SECONDS, SHA256_PATTERN

REF = "#/components/schemas/{model}"
_PROBLEM = {"$ref": "#/components/responses/Problem"}
_S = {"type": "string"}
_HEX = {"type": "string", "pattern": SHA256_PATTERN}
_SERIAL = {"type": "string", "pattern": "^(0x)?[0-9a-fA-F:]{1,59}$"}


_ACTION_BATCH: dict[str, Any] = {
    "type": "object",
    "description": "wire.actions.ActionBatch: consecutive records of one gateway's log "
    "(at most 1,000, body at most 4 MiB), optionally its latest signed checkpoint",
    "required": ["v", "gateway", "records"],
    "properties": {
        "v": {"type": "integer", "enum": [1]},
        "gateway": _S,
        "records": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "object"}},
        "checkpoint": {"type": "object"},
    },
}
_ACTIONS_ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "duplicates", "next_seq"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
        "next_seq": {"type": "integer", "minimum": 0},
        "checkpoint": {"enum": ["pending", "consistent", "inconsistent"]},
    },
}


def _op(
    summary: str,
    tag: str,
    security: str | None,
    ok: dict[str, Any],
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("400", "401", "403", "404", "409", "413", "415", "429"),
    body_required: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": dict(ok)}
    for code in errors:
        op["responses"][code] = _PROBLEM
    op["responses"]["default"] = _PROBLEM
    if security == "api":
        op["security"] = [{"apiToken": []}]
    elif security == "enroll":
        op["security"] = [{"enrollmentToken": []}]
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": body}
    if params:
        op["parameters"] = params
    return op


def _json(schema: dict[str, Any] | type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": ref(schema) if isinstance(schema, type) else schema}}


def _list(model: type[BaseModel]) -> dict[str, Any]:
    return _json({"type": "array", "items": ref(model)})


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or _S}


def _query(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or _S}


def ref(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to ``model``'s component schema."""
    return {"$ref": REF.format(model=model.__name__)}


def _ok(code: str, description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description}
    if content is not None:
        resp["content"] = content
    return {code: resp}


def _cert_answers() -> dict[str, Any]:
    return {
        "application/json": {"schema": ref(schemas.Certificate)},
        "application/pem-certificate-chain": {"schema": {"type": "string"}},
        "application/pkix-cert": {"schema": {"type": "string", "format": "binary"}},
    }


def paths() -> dict[str, Any]:
    """``paths`` of the OpenAPI document: every route of the CA API."""
    return {
        "/health": {
            "get": _op(
                "Liveness (the database answers; the HSM state is reported, not required)",
                "public",
                None,
                _ok("200", "OK", _json(schemas.Health)),
                errors=(),
            )
        },
        "/ready": {
            "get": _op(
                "Readiness: database, HSM and clock skew (503 when not ready)",
                "public",
                None,
                _ok("200", "Ready", _json(schemas.Readiness))
                | _ok("503", "Not ready (the body says why)", _json(schemas.Readiness)),
                errors=(),
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics, text exposition (only clients in metrics_networks; "
                "404 for anyone else)",
                "public",
                None,
                _ok("200", "Metrics", {"text/plain": {"schema": _S}}),
                errors=("404",),
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                "public",
                None,
                _ok("200", "OpenAPI document", _json({"type": "object"})),
                errors=(),
            )
        },
        "/ca/chain.pem": {
            "get": _op(
                "Issuing CA then root, PEM",
                "public",
                None,
                _ok("200", "PEM chain", {"application/pem-certificate-chain": {"schema": _S}}),
                errors=(),
            )
        },
        "/ca/metadata.json": {
            "get": _op(
                "CA metadata: trust domain, issuers, OID arcs (current and accepted), CRL and "
                "OCSP URLs",
                "public",
                None,
                _ok("200", "the metadata", _json(schemas.CAMetadata)),
                errors=(),
            )
        },
        "/ca/{name}.der": {
            "get": _op(
                "A CA certificate, DER (caIssuers)",
                "public",
                None,
                _ok("200", "DER", {"application/pkix-cert": {"schema": _S}}),
                params=[_path_param("name")],
                errors=("404",),
            )
        },
        "/ca/{name}.pem": {
            "get": _op(
                "A CA certificate, PEM",
                "public",
                None,
                _ok("200", "PEM", {"application/x-pem-file": {"schema": _S}}),
                params=[_path_param("name")],
                errors=("404",),
            )
        },
        "/spiffe/bundle.json": {
            "get": _op(
                "The SPIFFE trust bundle (JWK Set of the root CA certificates, use x509-svid)",
                "public",
                None,
                _ok("200", "bundle; cacheable, 304 on If-None-Match", _json(schemas.SpiffeBundle)),
                errors=("503",),
            )
        },
        "/certificates/{serial}": {
            "get": _op(
                "A certificate by serial",
                "public",
                None,
                _ok("200", "the record", _cert_answers()),
                params=[
                    _path_param("serial", _SERIAL),
                    _query("format", {"enum": ["json", "pem", "der"]}),
                ],
                errors=("400", "404"),
            )
        },
        "/crl/{filename}": {
            "get": _op(
                "A published CRL, DER: <issuer>.crl (full) or <issuer>-delta.crl",
                "public",
                None,
                _ok(
                    "200",
                    "the CRL (RFC 5280) with cache headers; 304 on If-None-Match",
                    {"application/pkix-crl": {"schema": {"type": "string", "format": "binary"}}},
                ),
                params=[_path_param("filename", {"type": "string"})],
                errors=("404",),
            )
        },
        "/v1/ledger/checkpoint": {
            "get": _op(
                "The newest signed checkpoint (tree size, root, audit certificate)",
                "auditor",
                None,
                _ok("200", "checkpoint", _json(schemas.Checkpoint)),
                errors=("404",),
            )
        },
        "/v1/ledger/checkpoints": {
            "post": _op(
                "Sign a checkpoint now",
                "auditor",
                "api",
                _ok("201", "checkpoint", _json(schemas.Checkpoint)),
            )
        },
        "/v1/ledger/consistency": {
            "get": _op(
                "RFC 9162 consistency proof between two tree sizes (auditor or operator token)",
                "auditor",
                "api",
                _ok("200", "proof", _json(schemas.ConsistencyProof)),
                params=[
                    _query("from", {"type": "integer", "minimum": 1}),
                    _query("to", {"type": "integer", "minimum": 1}),
                ],
                errors=("400", "401", "403"),
            )
        },
        "/v1/ledger/export": {
            "get": _op(
                "Export the ledger up to the newest signed checkpoint, streamed (auditor or"
                " operator token; 404 before the first checkpoint)",
                "auditor",
                "api",
                _ok(
                    "200",
                    "JSON Lines or CSV export",
                    {"application/jsonl": {"schema": _S}, "text/csv": {"schema": _S}},
                ),
                params=[
                    _query("format", {"enum": ["jsonl", "csv"]}),
                    _query("since"),
                    _query("until"),
                    _query("agent"),
                    _query("officer"),
                    _query("event"),
                ],
            )
        },
        "/v1/actions": {
            "post": _op(
                "Ship a batch of a gateway's decision records into the action ledger (gateway"
                " token for its own name only; idempotent; decision 0056)",
                "gateway",
                "api",
                _ok("200", "stored", _json(_ACTIONS_ANSWER)),
                body=_json(_ACTION_BATCH),
                errors=("400", "401", "403", "409", "413", "415", "422", "429"),
            )
        },
        "/v1/enroll": {
            "post": _op(
                "Enroll with a one-time token and a CSR carrying provenance",
                "agent",
                "enroll",
                _ok("201", "issued", _cert_answers()),
                body={
                    "application/pkcs10": {"schema": {"type": "string", "format": "binary"}},
                    **_json(schemas.EnrollJson),
                },
                params=[
                    _query("scopes"),
                    _query(
                        "validity_seconds",
                        {"type": "integer", "minimum": 1, "maximum": MAX_SECONDS},
                    ),
                ],
            )
        },
        "/v1/renew": {
            "post": _op(
                "Renew by proving possession of the current key (single-use proof; the "
                "current certificate is revoked as superseded when the new one is issued; "
                "409 when the proof was used or the certificate was already renewed)",
                "agent",
                None,
                _ok("201", "issued", _cert_answers()),
                body=_json(schemas.RenewJson),
            )
        },
        "/v1/wit": {
            "post": _op(
                "A Workload Identity Token (draft-ietf-wimse-workload-creds) for a valid, "
                "unrevoked certificate of this CA, by proving possession of its key",
                "agent",
                None,
                _ok("201", "minted", _json(schemas.Wit)),
                body=_json(schemas.WitJson),
            )
        },
        "/ca/wit-jwks.json": {
            "get": _op(
                "The keys that sign Workload Identity Tokens (JWKS, with x5c)",
                "public",
                None,
                _ok("200", "JWK Set", {"application/jwk-set+json": {"schema": {"type": "object"}}}),
                errors=(),
            )
        },
        "/v1/scopes": {
            "get": _op(
                "The scope catalogue",
                "operator",
                "api",
                _ok("200", "scopes", _list(schemas.Scope)),
            ),
            "post": _op(
                "Add a scope",
                "operator",
                "api",
                _ok("201", "added", _json(schemas.Scope)),
                body=_json(schemas.Scope),
            ),
        },
        "/v1/models": {
            "get": _op(
                "The model inventory",
                "operator",
                "api",
                _ok("200", "models; strong ETag, 304 on If-None-Match", _list(schemas.Model)),
                params=[_query("environment"), _query("status", {"enum": ["active", "retired"]})],
            ),
            "post": _op(
                "Authorise a model digest",
                "operator",
                "api",
                _ok("201", "added", _json(schemas.Model)),
                body=_json(schemas.NewModel),
            ),
        },
        "/v1/models/{digest}/retire": {
            "post": _op(
                "Retire a model (optionally revoking its live certificates)",
                "operator",
                "api",
                _ok("200", "retired", _json(schemas.Retired)),
                body=_json(schemas.Retirement),
                body_required=False,
                params=[_path_param("digest", _HEX)],
            )
        },
        "/v1/agents": {
            "get": _op(
                "Registrations",
                "operator",
                "api",
                _ok("200", "agents", _list(schemas.Registration)),
            ),
            "post": _op(
                "Register an agent",
                "operator",
                "api",
                _ok("201", "registered", _json(schemas.Registration)),
                body=_json(schemas.NewRegistration),
            ),
        },
        "/v1/agents/{name}": {
            "get": _op(
                "One registration",
                "operator",
                "api",
                _ok("200", "agent", _json(schemas.Registration)),
                params=[_path_param("name")],
            ),
            "patch": _op(
                "Update a registration",
                "operator",
                "api",
                _ok("200", "agent", _json(schemas.Registration)),
                body=_json(schemas.RegistrationUpdate),
                params=[_path_param("name")],
            ),
        },
        "/v1/agents/{name}/disable": {
            "post": _op(
                "Disable a registration",
                "operator",
                "api",
                _ok("200", "agent", _json(schemas.Registration)),
                params=[_path_param("name")],
            )
        },
        "/v1/agents/{name}/enrollment-tokens": {
            "post": _op(
                "Create a one-time enrollment token (shown once)",
                "operator",
                "api",
                _ok("201", "token", _json(schemas.EnrollmentToken)),
                body=_json(schemas.EnrollmentTokenRequest),
                body_required=False,
                params=[_path_param("name")],
            )
        },
        "/v1/certificates": {
            "get": _op(
                "Certificate records",
                "operator",
                "api",
                _ok("200", "records", _list(schemas.Certificate)),
                params=[
                    _query("agent"),
                    _query("status"),
                    _query("officer"),
                    _query("model_digest", _HEX),
                    _query("prompt_digest", _HEX),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                ],
            ),
            "post": _op(
                "Issue from a CSR for a registered agent, under policy (403 policy-refused "
                "with every reason; outside_policy needs an issuer-verbatim token, else 403)",
                "operator",
                "api",
                _ok("201", "issued", _json(schemas.Certificate)),
                body=_json(schemas.IssueJson),
            ),
        },
        "/v1/certificates/{serial}/revoke": {
            "post": _op(
                "Revoke one certificate",
                "operator",
                "api",
                _ok("200", "revoked", _json(schemas.Certificate)),
                body=_json(schemas.Revocation),
                body_required=False,
                params=[_path_param("serial", _SERIAL)],
            )
        },
        "/v1/api-tokens": {
            "get": _op(
                "API tokens with role, status, expiry and last use (operator token)",
                "operator",
                "api",
                _ok("200", "tokens", _list(schemas.ApiToken)),
            ),
            "post": _op(
                "Create an API token (the secret is shown once; operator token)",
                "operator",
                "api",
                _ok("201", "created", _json(schemas.ApiToken)),
                body=_json(schemas.NewApiToken),
            ),
        },
        "/v1/api-tokens/{name}/revoke": {
            "post": _op(
                "Revoke an API token at once (operator token)",
                "operator",
                "api",
                _ok("200", "revoked", _json(schemas.ApiToken)),
                params=[_path_param("name")],
            )
        },
        "/v1/revocations": {
            "post": _op(
                "Bulk revocation by model digest, prompt digest, officer or agent",
                "operator",
                "api",
                _ok("200", "revoked", _json(schemas.BulkRevoked)),
                body=_json(schemas.BulkRevocation),
            )
        },
    }
