"""The gateway's checks: stable problem type URIs, HTTP status and title for each."""

from __future__ import annotations

import enum
from typing import Final

PROBLEM_BASE: Final = "https://agentca.dev/problems/gateway/"


class Check(enum.Enum):
    """One verification step that can refuse a request (value = problem type suffix)."""

    CREDENTIALS_MISSING = "credentials-missing"
    MALFORMED = "malformed-credentials"
    CHAIN = "chain-invalid"
    EXPIRED = "certificate-expired"
    REVOKED = "certificate-revoked"
    STATUS_UNKNOWN = "status-unknown"
    COVERED_COMPONENTS = "covered-components"
    AUDIENCE = "audience-mismatch"
    SIGNATURE_EXPIRED = "signature-expired"
    CONTENT_DIGEST = "content-digest-mismatch"
    SIGNATURE = "signature-invalid"
    REPLAY = "nonce-replayed"
    MODEL_NOT_AUTHORISED = "model-not-authorised"
    PROVENANCE = "provenance-mismatch"
    NOT_ATTESTED = "provenance-not-attested"
    SCOPE = "scope-denied"
    PATH = "path-not-normal"
    TLS_CLIENT_CERT_MISSING = "tls-client-cert-missing"
    TLS_CLIENT_CERT_MISMATCH = "tls-client-cert-mismatch"
    REPLAY_UNAVAILABLE = "replay-cache-unavailable"
    BODY_TOO_LARGE = "body-too-large"
    BODY_TIMEOUT = "body-timeout"
    ACTION_LOG_UNAVAILABLE = "action-log-unavailable"
    ERROR = "verification-error"

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.value

    @property
    def status(self) -> int:
        if self is Check.PATH:
            return 400
        if self is Check.REPLAY_UNAVAILABLE or self is Check.ACTION_LOG_UNAVAILABLE:
            return 503
        if self is Check.BODY_TOO_LARGE:
            return 413
        if self is Check.BODY_TIMEOUT:
            return 408
        return 403 if self in _FORBIDDEN else 401

    @property
    def title(self) -> str:
        return _TITLES[self]


_FORBIDDEN: Final = frozenset(
    {Check.MODEL_NOT_AUTHORISED, Check.PROVENANCE, Check.NOT_ATTESTED, Check.SCOPE}
)

_TITLES: Final = {
    Check.CREDENTIALS_MISSING: "Request is not signed",
    Check.MALFORMED: "Signature or certificate headers are malformed",
    Check.CHAIN: "Certificate does not chain to a trusted agentca CA",
    Check.EXPIRED: "Certificate is expired or not yet valid",
    Check.REVOKED: "Certificate is revoked",
    Check.STATUS_UNKNOWN: "Certificate status cannot be established",
    Check.COVERED_COMPONENTS: "Signature does not cover the required components",
    Check.AUDIENCE: "Request is signed for another audience",
    Check.SIGNATURE_EXPIRED: "Signature is outside its validity window",
    Check.CONTENT_DIGEST: "Body does not match Content-Digest",
    Check.SIGNATURE: "Signature does not verify",
    Check.REPLAY: "Nonce was already used",
    Check.MODEL_NOT_AUTHORISED: "Model is not in the authorised inventory",
    Check.PROVENANCE: "Running provenance differs from the certificate",
    Check.NOT_ATTESTED: "Provenance is self-declared, not attested",
    Check.SCOPE: "Scope not granted",
    Check.PATH: "Request path is not in normal form",
    Check.TLS_CLIENT_CERT_MISSING: "Route requires the agent certificate in mutual TLS",
    Check.TLS_CLIENT_CERT_MISMATCH: "Request is signed by another certificate than TLS presented",
    Check.REPLAY_UNAVAILABLE: "Replay cache is unavailable",
    Check.BODY_TOO_LARGE: "Request body is too large",
    Check.BODY_TIMEOUT: "Request body did not arrive in time",
    Check.ACTION_LOG_UNAVAILABLE: "Action log cannot record this request",
    Check.ERROR: "Verification failed",
}


class Denied(Exception):
    """A request refused by ``check`` (``detail`` says why, for the problem document)."""

    def __init__(self, check: Check, detail: str) -> None:
        super().__init__(f"{check.value}: {detail}")
        self.check = check
        self.detail = detail

    def problem(self) -> dict[str, object]:
        """The RFC 9457 problem document."""
        return {
            "type": self.check.type_uri,
            "title": self.check.title,
            "status": self.check.status,
            "detail": self.detail,
            "check": self.check.value,
        }
