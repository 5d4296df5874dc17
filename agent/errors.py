"""Errors raised by the agent SDK (one family, each with a short machine-readable code)."""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base error of the agent SDK: ``code`` names the failure, ``detail`` explains it."""

    code = "agent-error"

    def __init__(self, detail: str, **info: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.info = info

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class DigestError(AgentError):
    """A model, prompt or configuration digest cannot be computed."""

    code = "invalid-digest"


class ProvenanceDrift(AgentError):
    """The running model/prompt/config digests differ from the certificate: signing refused."""

    code = "provenance-drift"


class NotEnrolled(AgentError):
    """The agent has no certificate yet (enroll first)."""

    code = "not-enrolled"


class CertificateExpired(AgentError):
    """The agent's certificate has expired (renew or enroll again)."""

    code = "certificate-expired"


class CertificateRevoked(AgentError):
    """The OCSP responder says the agent's certificate is revoked: signing refused."""

    code = "certificate-revoked"


class CAResponseError(AgentError):
    """The CA (or OCSP responder) refused a request or answered something unusable."""

    code = "ca-error"

    def __init__(self, detail: str, status: int = 0, problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail, status=status, problem=problem or {})
        self.status = status
        self.problem = problem or {}


class StapleError(AgentError):
    """No usable OCSP response could be fetched for the agent's certificate."""

    code = "staple-unavailable"


class BodyTooLarge(AgentError):
    """A streamed request body is larger than the signer reads to hash it: not sent."""

    code = "body-too-large"
