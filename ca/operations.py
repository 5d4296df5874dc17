"""Operations that change several stores at once, as one service call in one transaction.

The API and the CLI both call these, so an operation is written once and is atomic: a
failure part-way leaves nothing changed. (Direct issuance is such a call as well:
:meth:`ca.enrollment.EnrollmentService.issue_direct`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ca.authority import CertificateAuthority
from ca.names import parse_sha256_hex
from ca.policy import InventoryModel
from ca.records import CertificateRecord
from ca.registry import retire_models
from ca.requests import RevocationCriteria
from ca.revocation import RevocationReason
from ca.revoking import revoke_matching


@dataclass(frozen=True)
class ModelRetirement:
    """What retiring a model changed: the inventory entries retired, the certificates revoked."""

    retired: list[InventoryModel]
    revoked: list[CertificateRecord]


class Operations:
    """Multi-store operations over the CA service's session factory, journal and clock."""

    def __init__(self, authority: CertificateAuthority) -> None:
        self.authority = authority

    def retire_model(
        self,
        digest: str,
        environment: str | None = None,
        *,
        revoke: bool = False,
        reason: RevocationReason = RevocationReason.PRIVILEGE_WITHDRAWN,
        actor: str,
    ) -> ModelRetirement:
        """Retire model ``digest`` (in ``environment``, or all) so new issuance for it stops;
        with ``revoke``, also revoke every live certificate bound to it, in the same
        transaction: either both happen or neither does. With ``revoke``, a model that is
        already retired there is no error: its live certificates are revoked."""
        hex_digest = parse_sha256_hex(digest).hex()
        now = self.authority.clock()
        with self.authority.sessions.begin() as s:
            # a model retired earlier without --revoke: its live certificates are still
            # revoked (the operator who comes back for them must not get "not found")
            retired = retire_models(
                s, hex_digest, environment, actor, now, already_retired_ok=revoke
            )
            revoked = (
                revoke_matching(
                    s,
                    self.authority.journal,
                    RevocationCriteria(model_digest=hex_digest, environment=environment),
                    reason,
                    actor,
                    now,
                )
                if revoke
                else []
            )
        return ModelRetirement(retired, revoked)
