"""Value types the issuance core is asked with: pure data, no database, no key store.

``ca.policy`` answers with an :class:`IssuanceRequest`; ``ca.issuance`` turns one into a
certificate; ``ca.queries`` and ``ca.revoking`` take the filters and criteria below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ca.records import CertStatus

if TYPE_CHECKING:  # annotations only: `agentca list` loads neither
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

    from ca.extensions import AgentExtensions


@dataclass(frozen=True)
class IssuanceRequest:
    """A request to certify ``public_key`` for an agent, with its decoded extensions.

    ``ledger_note`` is what the issuance entries record about how the request was decided
    (``outside_policy`` and, for verbatim issuance, the ``policy_reasons``). The issuance core
    itself decides no policy, so a request without a note is recorded as outside policy.
    """

    public_key: CertificatePublicKeyTypes
    agent_name: str
    extensions: AgentExtensions
    validity: timedelta | None = None
    ledger_note: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RenewalLink:
    """Ties a renewal to the certificate it replaces (``parent``) and to its one-time proof.

    ``proof_sha256`` is the SHA-256 (hex) of the signed renewal statement: unique among
    certificates, so a proof yields at most one certificate.
    """

    parent_serial_hex: str
    parent_issuer: str
    proof_sha256: str


@dataclass(frozen=True)
class TokenClaim:
    """The enrollment token a reservation takes, and the registration it was decided on."""

    token_digest: str  # the token's SHA-256 (hex), as stored
    agent_id: int
    agent_name: str
    #: the registration's policy columns the decision was made on (``Registration.version``)
    agent_version: tuple[object, ...] | None = None

    def used_body(self) -> dict[str, str]:
        """The body of the token's ``enrollment_token.used`` ledger entry."""
        return {"agent": self.agent_name, "token_sha256": self.token_digest}


@dataclass(frozen=True)
class CertificateFilter:
    """Filters for listing certificates; ``None`` means "any"."""

    agent_name: str | None = None
    status: CertStatus | str | None = None
    officer: str | None = None
    model_digest: str | None = None
    prompt_digest: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class RevocationCriteria:
    """Criteria for bulk revocation; every given criterion must match."""

    model_digest: str | None = None
    prompt_digest: str | None = None
    officer: str | None = None
    agent_name: str | None = None
    environment: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def is_empty(self) -> bool:
        return not self.to_json()
