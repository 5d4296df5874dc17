"""API roles and principals, and the hash under which every secret token is stored.

Pure: the API's authorisation checks and the token stores (ca/apitokens.py, ca/tokens.py)
share these without importing each other.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from ca.errors import CAError, ErrorCode


class Role(enum.StrEnum):
    """API token roles: operators write; auditors and read-only tokens only read.

    ``issuer-verbatim`` may only issue, and is the one role that may issue outside policy
    (``POST /v1/certificates`` with ``outside_policy: true``, like Vault's separately
    permissioned sign-verbatim). Such tokens are created only by the local CLI, never
    through the API, so an operator token cannot mint its own escape hatch.
    """

    OPERATOR = "operator"
    AUDITOR = "auditor"
    READ_ONLY = "read-only"
    ISSUER_VERBATIM = "issuer-verbatim"
    GATEWAY = "gateway"
    """A gateway shipping its decisions: ``POST /v1/actions`` for its own name only (its
    token's name is the gateway's registered name, decision 0056); created only by the CLI."""


@dataclass(frozen=True)
class ApiPrincipal:
    """An authenticated API caller."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def token_hash(token: str) -> str:
    """The stored form of a secret token."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(role: str) -> Role:
    """A role from its name, or ``BAD_REQUEST`` naming the valid ones."""
    try:
        return Role(role)
    except ValueError as exc:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            f"unknown role '{role[:32]}' (one of: {', '.join(r.value for r in Role)})",
        ) from exc
