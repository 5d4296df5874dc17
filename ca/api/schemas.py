"""The CA API's request and response bodies, declared once as pydantic models.

Request models validate bodies (after the strict JSON parser in :mod:`ca.api.bodies`), and
both kinds are rendered into the OpenAPI document by :mod:`ca.api.openapi`. Request models
are strict (no coercion: ``"1"`` is not an integer, ``1`` is not a boolean), refuse unknown
members (a misspelt ``environment`` or ``status`` must not silently widen or skip what the
caller asked for), and treat ``null`` as absent.

Imported only by the API app: the CLI must not pay for pydantic (see decision 0020).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from ca.errors import CAError, ErrorCode
from ca.names import parse_sha256_hex

MAX_SECONDS = 10 * 365 * 86400
SHA256_PATTERN = "^([Ss][Hh][Aa]256:)?[0-9A-Fa-f]{64}$"  # what ca.names.parse_sha256_hex takes
REASON_HELP = "RFC 5280 reason name (keyCompromise, superseded, certificateHold, ...)"
CONFIG_DIGESTS_HELP = (
    "Allowed config digests. Empty (the default): a CSR declaring a config digest is "
    "refused. Non-empty: the CSR must declare one of them."
)
REQUIRE_ATTESTATION_HELP = (
    "Certificates only for a CSR sent with a valid runtime attestation of its key and "
    "provenance from a configured attestor (decision 0051); renewals need a fresh one."
)
ATTESTATION_HELP = (
    "Runtime attestation from the agent's launcher: a compact JWS (typ "
    "agentca-attestation+jwt), or an AMD SEV-SNP envelope (JSON, type agentca-sev-snp-v1), "
    "binding the CSR's key to its provenance (docs/agents.md)."
)


def _seconds(value: int, info: ValidationInfo) -> int:
    if value <= 0 or value > MAX_SECONDS:
        raise CAError(
            ErrorCode.INVALID_VALIDITY, f"'{info.field_name}' must be a positive number of seconds"
        )
    return value


def _digest(value: str) -> str:
    parse_sha256_hex(value)  # INVALID_DIGEST with the same message as everywhere else
    return value


Seconds = Annotated[
    int,
    AfterValidator(_seconds),
    Field(json_schema_extra={"minimum": 1, "maximum": MAX_SECONDS}),
]
"""A positive number of seconds (at most ten years); out of range is ``invalid-validity``."""

TokenSeconds = Annotated[
    int,
    AfterValidator(_seconds),
    Field(json_schema_extra={"minimum": 60, "maximum": MAX_SECONDS}),
]
"""An API token's lifetime: documented from 60 s (``ca.apitokens.MIN_TTL``; shorter is
``invalid-validity`` there)."""

Sha256Hex = Annotated[
    str, AfterValidator(_digest), Field(json_schema_extra={"pattern": SHA256_PATTERN})
]
"""A SHA-256 digest, 64 hex digits, optionally ``sha256:``-prefixed (``invalid-digest``)."""

Reason = Annotated[str, Field(description=REASON_HELP)]
RoleName = Literal[
    "operator", "auditor", "read-only", "issuer-verbatim", "gateway"
]  # = ca.apitokens.Role


class RequestBody(BaseModel):
    """A JSON request body: strict types, unknown members refused, ``null`` means absent.

    Unknown members are refused, not ignored: ``{"agent": "a", "model_digst": ...}`` on a bulk
    revocation would otherwise revoke every certificate of ``a``, a retirement with a misspelt
    ``environment`` would retire the model everywhere, and ``{"satus": "disabled"}`` would
    answer 200 and disable nothing.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# -- requests ---------------------------------------------------------------------------------
class Scope(RequestBody):
    """A scope of the catalogue (request and answer)."""

    name: str
    description: str | None = None


class NewModel(RequestBody):
    digest: Sha256Hex
    model_type: str
    environment: str
    description: str | None = None
    digest_scheme: Literal["agentca-manifest-v1", "oms-v1"] = Field(
        default="agentca-manifest-v1",
        description="how the digest was computed; oms-v1 (OpenSSF Model Signing) for new models",
    )
    signature: str | None = Field(
        default=None,
        description="an OMS signature bundle (the JSON text model_signing wrote), verified "
        "against the configured model_producers; its signed digest must be `digest` and "
        "`digest_scheme` oms-v1 (decision 0052)",
    )


class Retirement(RequestBody):
    """Optional body of a model retirement (empty: every environment, nothing revoked)."""

    environment: str | None = None
    revoke: bool = False
    reason: Reason | None = Field(
        default=None, description=REASON_HELP + "; default privilegeWithdrawn"
    )


class NewRegistration(RequestBody):
    name: str
    officer: str
    environment: str
    model_type: str
    scopes: list[str]
    model_digests: list[Sha256Hex]
    prompt_digests: list[Sha256Hex]
    config_digests: list[Sha256Hex] | None = Field(default=None, description=CONFIG_DIGESTS_HELP)
    key_types: list[str] | None = None
    organization: str | None = None
    max_validity_seconds: Seconds | None = None
    require_attestation: bool = Field(default=False, description=REQUIRE_ATTESTATION_HELP)


class RegistrationUpdate(RequestBody):
    """Only the members given change."""

    officer: str | None = None
    scopes: list[str] | None = None
    model_digests: list[Sha256Hex] | None = None
    prompt_digests: list[Sha256Hex] | None = None
    config_digests: list[Sha256Hex] | None = Field(default=None, description=CONFIG_DIGESTS_HELP)
    key_types: list[str] | None = None
    max_validity_seconds: Seconds | None = None
    status: Literal["active", "disabled"] | None = None
    require_attestation: bool | None = Field(default=None, description=REQUIRE_ATTESTATION_HELP)


class EnrollmentTokenRequest(RequestBody):
    """Optional body: without ttl_seconds the token lives the enrollment_ttl setting."""

    ttl_seconds: Seconds | None = None


class EnrollJson(RequestBody):
    csr: str = Field(description="PKCS#10 in PEM")
    scopes: list[str] | None = None
    validity_seconds: Seconds | None = None
    attestation: str | None = Field(default=None, description=ATTESTATION_HELP)


class RenewJson(RequestBody):
    certificate: str = Field(description="current certificate, PEM")
    csr: str = Field(description="new CSR with provenance, PEM")
    created: int = Field(
        description="Unix time of the proof: at most 30 s ahead of the CA's clock, "
        "at most 300 s behind"
    )
    proof: str = Field(
        description="base64 signature by the current key over the agentca-renew-v2 statement "
        "(docs/agents.md): context, created, SHA-256 of the CSR DER, SHA-256 of the current "
        "certificate DER, scopes (or absent), validity_seconds (or absent). Accepted once."
    )
    scopes: list[str] | None = Field(default=None, description="covered by the proof, in order")
    validity_seconds: Seconds | None = Field(default=None, description="covered by the proof")
    attestation: str | None = Field(default=None, description=ATTESTATION_HELP)


class WitJson(RequestBody):
    """A Workload Identity Token request (docs/wimse.md): the certificate and a proof by its key."""

    certificate: str = Field(description="the agent's current certificate, PEM")
    created: int = Field(
        description="Unix time of the proof: at most 30 s ahead of the CA's clock, "
        "at most 300 s behind"
    )
    proof: str = Field(
        description="base64 signature by the certificate key over the agentca-renew-v2 "
        "statement format with SHA-256('agentca-wit-request-v1') in the CSR slot, no scopes "
        "and lifetime_seconds (or absent) in the validity slot"
    )
    lifetime_seconds: int | None = Field(
        default=None, ge=60, le=3600, description="covered by the proof; default 600"
    )


class IssueJson(RequestBody):
    """Direct issuance for a registered agent, through the enrollment policy: provenance comes
    from the CSR's attribute (or from model_type and both digests, which must then equal it);
    scopes default to the registration's and may only narrow them; officer, environment and
    organization, when given, must be the registration's. Otherwise 403 policy-refused with
    every reason in 'reasons', and nothing is written. outside_policy: true signs the contents
    given verbatim (csr, agent, provenance, scopes, officer and environment then required);
    only an issuer-verbatim token may ask for it (others get 403 forbidden), and the ledger
    records outside_policy with the reasons policy gave."""

    csr: str
    agent: str
    scopes: list[str] | None = None
    model_type: str | None = None
    model_digest: Sha256Hex | None = None
    prompt_digest: Sha256Hex | None = None
    config_digest: Sha256Hex | None = None
    officer: str | None = None
    environment: str | None = None
    organization: str | None = None
    validity_seconds: Seconds | None = None
    outside_policy: bool = False
    model_digest_scheme: Literal["agentca-manifest-v1", "oms-v1"] = Field(
        default="agentca-manifest-v1", description="the scheme of model_digest, when given"
    )


class Revocation(RequestBody):
    """Optional body of a revocation (empty: reason unspecified)."""

    reason: Reason | None = None


class BulkRevocation(RequestBody):
    """At least one criterion: model digest, prompt digest, officer or agent."""

    model_digest: Sha256Hex | None = None
    prompt_digest: Sha256Hex | None = None
    officer: str | None = None
    agent: str | None = None
    reason: Reason | None = None


class NewApiToken(RequestBody):
    name: str
    role: RoleName = Field(
        description="issuer-verbatim and gateway tokens are created only with the local CLI"
        " (403 here)"
    )
    ttl_seconds: TokenSeconds | None = Field(
        default=None,
        description="between 60 s and api_token_max_ttl_days; default api_token_default_ttl_days",
    )


# -- answers ----------------------------------------------------------------------------------
class ResponseBody(BaseModel):
    """A JSON answer, documented; the handlers build it (the tests check answers against it)."""


Nullable = str | None


class Problem(ResponseBody):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    reasons: list[str] | None = None
    request_id: str | None = None  # the answer's X-Request-ID, to quote when reporting it


class Certificate(ResponseBody):
    serial: str
    status: Literal["pending", "issued", "revoked", "failed"]
    issuer: str
    agent_name: str
    subject: str
    model_type: str
    model_digest: str
    prompt_digest: str
    config_digest: Nullable
    scopes: list[str]
    officer: str
    environment: str
    not_before: str
    not_after: str
    issued_at: Nullable
    revoked_at: Nullable
    revocation_reason: Nullable
    requested_by: str
    fingerprint_sha256: Nullable
    certificate_pem: Nullable = Field(default=None, description="in single-record answers")
    chain_pem: list[str] | None = Field(default=None, description="in enrollment answers")


class Registration(ResponseBody):
    name: str
    organization: Nullable
    officer: str
    environment: str
    model_type: str
    scopes: list[str]
    model_digests: list[str]
    prompt_digests: list[str]
    config_digests: list[str] = Field(description=CONFIG_DIGESTS_HELP)
    key_types: list[str]
    max_validity_seconds: int
    status: Literal["active", "disabled"]
    require_attestation: bool = Field(description=REQUIRE_ATTESTATION_HELP)


class Model(ResponseBody):
    digest: str
    model_type: str
    environment: str
    status: Literal["active", "retired"]
    digest_scheme: Literal["agentca-manifest-v1", "oms-v1"]
    signed: bool = Field(description="admitted with a verified OMS signature (decision 0052)")
    signed_by: str | None = Field(description="the configured producer that signed it")
    signature_method: Literal["key", "certificate"] | None
    signer: str | None = Field(description="the signing key's SHA-256 or certificate subject")
    signature_sha256: str | None = Field(description="SHA-256 of the signature bundle")


class Retired(ResponseBody):
    retired: list[Model]
    revoked: list[str] = Field(description="serials revoked (empty unless revoke: true)")


class ApiToken(ResponseBody):
    name: str
    role: RoleName
    status: Literal["active", "expired", "revoked"]
    created_at: str
    created_by: str
    expires_at: str
    revoked_at: Nullable
    revoked_by: Nullable
    last_used_at: Nullable = Field(description="recorded at most once a minute")
    token: str | None = Field(default=None, description="the secret: only when created")


class EnrollmentToken(ResponseBody):
    token: str = Field(description="the secret, shown only in this answer")
    agent: str
    expires_at: str


class BulkRevoked(ResponseBody):
    revoked: list[str]
    count: int


class Checkpoint(ResponseBody):
    """A signed tree head of the ledger and the certificate that verifies it."""

    ledger: str
    tree_size: int
    root_hash: str
    timestamp: str
    signature: str = Field(description="base64")
    certificate_pem: str


class ConsistencyProof(ResponseBody):
    from_size: int
    to_size: int
    proof: list[str] = Field(description="RFC 9162 node hashes, hex")


class Wit(ResponseBody):
    """A Workload Identity Token (JWT, typ wit+jwt) for the certificate's SPIFFE ID and key."""

    token: str
    token_type: Literal["wit+jwt"]
    sub: str
    jti: str
    expires_at: str
    expires_at_unix: int


class Health(ResponseBody):
    status: Literal["ok"]
    initialised: bool
    hsm: str


class Readiness(ResponseBody):
    status: Literal["ready", "not-ready"]
    database: dict[str, Any]
    hsm: dict[str, Any]
    clock: dict[str, Any]


class SpiffeBundleKey(ResponseBody):
    """One X.509 authority of a SPIFFE bundle: a JWK (RFC 7517) of a root CA certificate."""

    kty: Literal["EC", "RSA"]
    use: Literal["x509-svid"]
    x5c: list[str] = Field(min_length=1, max_length=1, description="base64 DER, the root CA")
    crv: str | None = Field(default=None, description="EC keys")
    x: str | None = Field(default=None, description="EC keys, base64url")
    y: str | None = Field(default=None, description="EC keys, base64url")
    n: str | None = Field(default=None, description="RSA keys, base64url")
    e: str | None = Field(default=None, description="RSA keys, base64url")


class SpiffeBundle(ResponseBody):
    """The SPIFFE trust bundle of the CA's trust domain (a JWK Set)."""

    keys: list[SpiffeBundleKey]
    spiffe_refresh_hint: int = Field(description="seconds between polls")
    spiffe_sequence: int = Field(description="grows when the bundle changes")


class CAIssuer(ResponseBody):
    name: str
    role: Literal["root", "issuing"]
    subject: str = Field(description="RFC 4514")
    oid_arc: str = Field(description="the arc recorded with this issuer (dotted)")
    not_after: str = Field(description="RFC 3339, UTC")
    certificate_url: str
    crl_url: str


class PreviousOidArc(ResponseBody):
    oid_arc: str
    accepted_until: str = Field(description="RFC 3339, UTC: max_validity_hours after the move")


class CAMetadata(ResponseBody):
    """What verifiers and agents configure from: trust domain, issuers, OID arcs, status URLs."""

    trust_domain: str
    issuers: list[CAIssuer]
    oid_arc: str = Field(description="the arc new certificates are issued under")
    accepted_oid_arcs: list[str] = Field(
        description="oid_arc first, then previous arcs certificates may still be valid under"
    )
    previous_oid_arcs: list[PreviousOidArc]
    ocsp_url: str
    chain_url: str


REQUEST_MODELS: tuple[type[RequestBody], ...] = (
    Scope,
    NewModel,
    Retirement,
    NewRegistration,
    RegistrationUpdate,
    EnrollmentTokenRequest,
    EnrollJson,
    RenewJson,
    WitJson,
    IssueJson,
    Revocation,
    BulkRevocation,
    NewApiToken,
)
RESPONSE_MODELS: tuple[type[ResponseBody], ...] = (
    Problem,
    Certificate,
    Registration,
    Model,
    Retired,
    ApiToken,
    EnrollmentToken,
    BulkRevoked,
    Checkpoint,
    ConsistencyProof,
    Wit,
    Health,
    Readiness,
    SpiffeBundleKey,
    SpiffeBundle,
    CAIssuer,
    PreviousOidArc,
    CAMetadata,
)
