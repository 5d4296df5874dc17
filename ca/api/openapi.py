"""The OpenAPI 3.1 document of the CA API, served at ``/openapi.json``.

The document is built here, next to the code, and a rendered copy is kept in the repository
at ``docs/openapi.json``; a test fails when the two drift apart or when a route is missing
from either side.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

openapi = Blueprint("openapi", __name__)

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_S = {"type": "string"}
_HEX = {"type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$"}
_STRLIST = {"type": "array", "items": _S}
_CONFIG_DIGESTS: dict[str, Any] = {
    "type": "array",
    "items": _S,
    "description": "Allowed config digests. Empty (the default): a CSR declaring a config "
    "digest is refused. Non-empty: the CSR must declare one of them.",
}


def _op(
    summary: str,
    tag: str,
    security: str | None,
    ok: dict[str, Any],
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("400", "401", "403", "404", "409", "413", "415", "429"),
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
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or _S}


def _query(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or _S}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(code: str, description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description}
    if content is not None:
        resp["content"] = content
    return {code: resp}


_REASON = {
    "type": "string",
    "description": "RFC 5280 reason name (keyCompromise, superseded, certificateHold, ...)",
}
_SERIAL = {"type": "string", "pattern": "^(0x)?[0-9a-fA-F:]{1,59}$"}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": _S,
            "title": _S,
            "status": {"type": "integer"},
            "detail": _S,
            "instance": _S,
            "reasons": _STRLIST,
        },
    },
    "ApiToken": {
        "type": "object",
        "properties": {
            "name": _S,
            "role": {"enum": ["operator", "auditor", "read-only", "issuer-verbatim"]},
            "status": {"enum": ["active", "expired", "revoked"]},
            "created_at": _S,
            "created_by": _S,
            "expires_at": _S,
            "revoked_at": {"type": ["string", "null"]},
            "revoked_by": {"type": ["string", "null"]},
            "last_used_at": {
                "type": ["string", "null"],
                "description": "recorded at most once a minute",
            },
            "token": {"type": "string", "description": "the secret: only when created"},
        },
    },
    "Certificate": {
        "type": "object",
        "properties": {
            "serial": _S,
            "status": {"enum": ["pending", "issued", "revoked", "failed"]},
            "issuer": _S,
            "agent_name": _S,
            "subject": _S,
            "model_type": _S,
            "model_digest": _S,
            "prompt_digest": _S,
            "config_digest": {"type": ["string", "null"]},
            "scopes": _STRLIST,
            "officer": _S,
            "environment": _S,
            "not_before": _S,
            "not_after": _S,
            "issued_at": {"type": ["string", "null"]},
            "revoked_at": {"type": ["string", "null"]},
            "revocation_reason": {"type": ["string", "null"]},
            "requested_by": _S,
            "fingerprint_sha256": {"type": ["string", "null"]},
            "certificate_pem": {"type": ["string", "null"]},
            "chain_pem": _STRLIST,
        },
    },
    "Registration": {
        "type": "object",
        "properties": {
            "name": _S,
            "organization": {"type": ["string", "null"]},
            "officer": _S,
            "environment": _S,
            "model_type": _S,
            "scopes": _STRLIST,
            "model_digests": _STRLIST,
            "prompt_digests": _STRLIST,
            "config_digests": _CONFIG_DIGESTS,
            "key_types": _STRLIST,
            "max_validity_seconds": {"type": "integer"},
            "status": {"enum": ["active", "disabled"]},
        },
    },
    "NewRegistration": {
        "type": "object",
        "required": [
            "name",
            "officer",
            "environment",
            "model_type",
            "scopes",
            "model_digests",
            "prompt_digests",
        ],
        "properties": {
            "name": _S,
            "organization": _S,
            "officer": _S,
            "environment": _S,
            "model_type": _S,
            "scopes": _STRLIST,
            "model_digests": {"type": "array", "items": _HEX},
            "prompt_digests": {"type": "array", "items": _HEX},
            "config_digests": {**_CONFIG_DIGESTS, "items": _HEX},
            "key_types": _STRLIST,
            "max_validity_seconds": {"type": "integer", "minimum": 1},
        },
    },
    "RegistrationUpdate": {
        "type": "object",
        "properties": {
            "officer": _S,
            "scopes": _STRLIST,
            "model_digests": {"type": "array", "items": _HEX},
            "prompt_digests": {"type": "array", "items": _HEX},
            "config_digests": {**_CONFIG_DIGESTS, "items": _HEX},
            "key_types": _STRLIST,
            "max_validity_seconds": {"type": "integer", "minimum": 1},
            "status": {"enum": ["active", "disabled"]},
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "digest": _S,
            "model_type": _S,
            "environment": _S,
            "status": {"enum": ["active", "retired"]},
        },
    },
    "NewModel": {
        "type": "object",
        "required": ["digest", "model_type", "environment"],
        "properties": {"digest": _HEX, "model_type": _S, "environment": _S, "description": _S},
    },
    "Scope": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _S, "description": {"type": ["string", "null"]}},
    },
    "EnrollJson": {
        "type": "object",
        "required": ["csr"],
        "properties": {
            "csr": {"type": "string", "description": "PKCS#10 in PEM"},
            "scopes": _STRLIST,
            "validity_seconds": {"type": "integer", "minimum": 1},
        },
    },
    "RenewJson": {
        "type": "object",
        "required": ["certificate", "csr", "created", "proof"],
        "properties": {
            "certificate": {"type": "string", "description": "current certificate, PEM"},
            "csr": {"type": "string", "description": "new CSR with provenance, PEM"},
            "created": {
                "type": "integer",
                "description": "Unix time of the proof: at most 30 s ahead of the CA's clock, "
                "at most 300 s behind",
            },
            "proof": {
                "type": "string",
                "description": "base64 signature by the current key over the agentca-renew-v2 "
                "statement (docs/agents.md): context, created, SHA-256 of the CSR DER, SHA-256 "
                "of the current certificate DER, scopes (or absent), validity_seconds (or "
                "absent). Accepted once.",
            },
            "scopes": {**_STRLIST, "description": "covered by the proof, in this order"},
            "validity_seconds": {
                "type": "integer",
                "minimum": 1,
                "description": "covered by the proof",
            },
        },
    },
    "IssueJson": {
        "type": "object",
        "description": "Direct issuance for a registered agent, through the enrollment policy: "
        "provenance comes from the CSR's attribute (or from model_type and both digests, which "
        "must then equal it); scopes default to the registration's and may only narrow them; "
        "officer, environment and organization, when given, must be the registration's. "
        "Otherwise 403 policy-refused with every reason in 'reasons', and nothing is written. "
        "outside_policy: true signs the contents given verbatim (csr, agent, provenance, scopes, "
        "officer and environment then required); only an issuer-verbatim token may ask for it "
        "(others get 403 forbidden), and the ledger records outside_policy with the reasons "
        "policy gave.",
        "required": ["csr", "agent"],
        "properties": {
            "csr": _S,
            "agent": _S,
            "scopes": _STRLIST,
            "model_type": _S,
            "model_digest": _HEX,
            "prompt_digest": _HEX,
            "config_digest": _HEX,
            "officer": _S,
            "environment": _S,
            "organization": _S,
            "validity_seconds": {"type": "integer", "minimum": 1},
            "outside_policy": {"type": "boolean", "default": False},
        },
    },
    "Revocation": {"type": "object", "properties": {"reason": _REASON}},
    "BulkRevocation": {
        "type": "object",
        "properties": {
            "model_digest": _HEX,
            "prompt_digest": _HEX,
            "officer": _S,
            "agent": _S,
            "reason": _REASON,
        },
    },
    "Retirement": {
        "type": "object",
        "properties": {"environment": _S, "revoke": {"type": "boolean"}, "reason": _REASON},
    },
}


def _cert_answers() -> dict[str, Any]:
    return {
        "application/json": {"schema": _ref("Certificate")},
        "application/pem-certificate-chain": {"schema": {"type": "string"}},
        "application/pkix-cert": {"schema": {"type": "string", "format": "binary"}},
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    cert_list = _json({"type": "array", "items": _ref("Certificate")})
    paths: dict[str, Any] = {
        "/health": {
            "get": _op(
                "Liveness (the database answers; the HSM state is reported, not required)",
                "public",
                None,
                _ok("200", "OK", _json({"type": "object"})),
                errors=(),
            )
        },
        "/ready": {
            "get": _op(
                "Readiness: database, HSM and clock skew (503 when not ready)",
                "public",
                None,
                _ok("200", "Ready", _json({"type": "object"}))
                | _ok("503", "Not ready (the body says why)", _json({"type": "object"})),
                errors=(),
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
                _ok("200", "checkpoint", _json({"type": "object"})),
                errors=("404",),
            )
        },
        "/v1/ledger/checkpoints": {
            "post": _op(
                "Sign a checkpoint now",
                "auditor",
                "api",
                _ok("201", "checkpoint", _json({"type": "object"})),
            )
        },
        "/v1/ledger/consistency": {
            "get": _op(
                "RFC 9162 consistency proof between two tree sizes (auditor or operator token)",
                "auditor",
                "api",
                _ok("200", "proof", _json({"type": "object"})),
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
        "/v1/enroll": {
            "post": _op(
                "Enroll with a one-time token and a CSR carrying provenance",
                "agent",
                "enroll",
                _ok("201", "issued", _cert_answers()),
                body={
                    "application/pkcs10": {"schema": {"type": "string", "format": "binary"}},
                    **_json(_ref("EnrollJson")),
                },
                params=[_query("scopes"), _query("validity_seconds", {"type": "integer"})],
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
                body=_json(_ref("RenewJson")),
            )
        },
        "/v1/scopes": {
            "get": _op(
                "The scope catalogue",
                "operator",
                "api",
                _ok("200", "scopes", _json({"type": "array", "items": _ref("Scope")})),
            ),
            "post": _op(
                "Add a scope",
                "operator",
                "api",
                _ok("201", "added", _json(_ref("Scope"))),
                body=_json(_ref("Scope")),
            ),
        },
        "/v1/models": {
            "get": _op(
                "The model inventory",
                "operator",
                "api",
                _ok("200", "models", _json({"type": "array", "items": _ref("Model")})),
                params=[_query("environment"), _query("status", {"enum": ["active", "retired"]})],
            ),
            "post": _op(
                "Authorise a model digest",
                "operator",
                "api",
                _ok("201", "added", _json(_ref("Model"))),
                body=_json(_ref("NewModel")),
            ),
        },
        "/v1/models/{digest}/retire": {
            "post": _op(
                "Retire a model (optionally revoking its live certificates)",
                "operator",
                "api",
                _ok("200", "retired", _json({"type": "object"})),
                body=_json(_ref("Retirement")),
                params=[_path_param("digest", _HEX)],
            )
        },
        "/v1/agents": {
            "get": _op(
                "Registrations",
                "operator",
                "api",
                _ok("200", "agents", _json({"type": "array", "items": _ref("Registration")})),
            ),
            "post": _op(
                "Register an agent",
                "operator",
                "api",
                _ok("201", "registered", _json(_ref("Registration"))),
                body=_json(_ref("NewRegistration")),
            ),
        },
        "/v1/agents/{name}": {
            "get": _op(
                "One registration",
                "operator",
                "api",
                _ok("200", "agent", _json(_ref("Registration"))),
                params=[_path_param("name")],
            ),
            "patch": _op(
                "Update a registration",
                "operator",
                "api",
                _ok("200", "agent", _json(_ref("Registration"))),
                body=_json(_ref("RegistrationUpdate")),
                params=[_path_param("name")],
            ),
        },
        "/v1/agents/{name}/disable": {
            "post": _op(
                "Disable a registration",
                "operator",
                "api",
                _ok("200", "agent", _json(_ref("Registration"))),
                params=[_path_param("name")],
            )
        },
        "/v1/agents/{name}/enrollment-tokens": {
            "post": _op(
                "Create a one-time enrollment token (shown once)",
                "operator",
                "api",
                _ok(
                    "201",
                    "token",
                    _json(
                        {
                            "type": "object",
                            "properties": {"token": _S, "agent": _S, "expires_at": _S},
                        }
                    ),
                ),
                body=_json(
                    {
                        "type": "object",
                        "properties": {"ttl_seconds": {"type": "integer", "minimum": 1}},
                    }
                ),
                params=[_path_param("name")],
            )
        },
        "/v1/certificates": {
            "get": _op(
                "Certificate records",
                "operator",
                "api",
                _ok("200", "records", cert_list),
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
                _ok("201", "issued", _json(_ref("Certificate"))),
                body=_json(_ref("IssueJson")),
            ),
        },
        "/v1/certificates/{serial}/revoke": {
            "post": _op(
                "Revoke one certificate",
                "operator",
                "api",
                _ok("200", "revoked", _json(_ref("Certificate"))),
                body=_json(_ref("Revocation")),
                params=[_path_param("serial", _SERIAL)],
            )
        },
        "/v1/api-tokens": {
            "get": _op(
                "API tokens with role, status, expiry and last use (operator token)",
                "operator",
                "api",
                _ok("200", "tokens", _json({"type": "array", "items": _ref("ApiToken")})),
            ),
            "post": _op(
                "Create an API token (the secret is shown once; operator token)",
                "operator",
                "api",
                _ok("201", "created", _json(_ref("ApiToken"))),
                body=_json(
                    {
                        "type": "object",
                        "required": ["name", "role"],
                        "properties": {
                            "name": _S,
                            "role": {
                                "enum": ["operator", "auditor", "read-only"],
                                "description": "issuer-verbatim tokens are created only with "
                                "the local CLI (403 here)",
                            },
                            "ttl_seconds": {"type": "integer", "minimum": 60},
                        },
                    }
                ),
            ),
        },
        "/v1/api-tokens/{name}/revoke": {
            "post": _op(
                "Revoke an API token at once (operator token)",
                "operator",
                "api",
                _ok("200", "revoked", _json(_ref("ApiToken"))),
                params=[_path_param("name")],
            )
        },
        "/v1/revocations": {
            "post": _op(
                "Bulk revocation by model digest, prompt digest, officer or agent",
                "operator",
                "api",
                _ok(
                    "200",
                    "revoked",
                    _json(
                        {
                            "type": "object",
                            "properties": {"revoked": _STRLIST, "count": {"type": "integer"}},
                        }
                    ),
                ),
                body=_json(_ref("BulkRevocation")),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentca CA API",
            "version": "1",
            "description": "Enrollment, renewal and operation of the agentca certificate "
            "authority. Errors are RFC 9457 application/problem+json.",
        },
        "servers": [{"url": "http://127.0.0.1:8400"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": _ref("Problem")}},
                }
            },
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "aca_api_... operator/auditor/read-only token",
                },
                "enrollmentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "aca_enroll_... one-time token",
                },
            },
        },
    }


@openapi.get("/openapi.json")
def document() -> Response:
    """Serve the OpenAPI document."""
    resp = jsonify(build_document())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
