"""The CA service as one object: the hierarchy, issuance, revocation, queries and
reconciliation, composed over one session factory, key store, ledger journal and clock.

Each job lives in its own module (docs/architecture.md); this facade only delegates, so the
edges (API, CLI, CRL publisher, benchmarks) hold one handle. Code that needs a single job
may take that piece (``authority.issuance``, ``authority.revocations`` ...) instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.hierarchy import Hierarchy
from ca.issuance import InReservation, Issuance
from ca.journal import Journal
from ca.queries import CertificateQueries
from ca.reconciliation import Reconciler
from ca.records import CertificateRecord, IssuerRecord
from ca.requests import (
    CertificateFilter,
    IssuanceRequest,
    RenewalLink,
    RevocationCriteria,
    TokenClaim,
)
from ca.revocation import RevocationReason
from ca.revoking import Revocations
from hsm.keymanager import KeyManager


class CertificateAuthority:
    """Creates the hierarchy, issues, revokes and looks up agent certificates."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        keys: KeyManager,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.keys = keys
        self.journal = Journal()
        self.hierarchy = Hierarchy(settings, sessions, keys, self.journal, clock)
        self.queries = CertificateQueries(sessions)
        self.issuance = Issuance(settings, sessions, self.hierarchy, self.journal, clock)
        self.revocations = Revocations(sessions, self.journal, self.queries, clock)
        self.reconciler = Reconciler(sessions, self.journal, settings.pending_bound, clock)
        self._clock = clock

    @property
    def clock(self) -> Clock:
        """The clock every piece reads; setting it (tests) sets it for all of them."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        for piece in (self.hierarchy, self.issuance, self.revocations, self.reconciler):
            piece.clock = clock

    @property
    def ledger_enabled(self) -> bool:
        """Whether changes are recorded in the ledger (off only in the ledger-cost benchmark)."""
        return self.journal.enabled

    @ledger_enabled.setter
    def ledger_enabled(self, value: bool) -> None:
        self.journal.enabled = value

    # -- hierarchy (ca.hierarchy) -------------------------------------------------------------
    def is_initialised(self) -> bool:
        return self.hierarchy.is_initialised()

    def initialise(
        self,
        root_key_type: str,
        issuing_key_type: str,
        actor: str = "system",
        root_keys: KeyManager | None = None,
    ) -> list[IssuerRecord]:
        return self.hierarchy.initialise(root_key_type, issuing_key_type, actor, root_keys)

    def issuers(self) -> list[IssuerRecord]:
        return self.hierarchy.issuers()

    def issuer(self, name: str) -> IssuerRecord:
        return self.hierarchy.issuer(name)

    def chain(self) -> list[x509.Certificate]:
        return self.hierarchy.chain()

    # -- issuance (ca.issuance) ---------------------------------------------------------------
    def issue(
        self,
        request: IssuanceRequest,
        actor: str,
        agent_id: int | None = None,
        in_reservation: InReservation | None = None,
        session: Session | None = None,
        renewal: RenewalLink | None = None,
    ) -> CertificateRecord:
        return self.issuance.issue(request, actor, agent_id, in_reservation, session, renewal)

    def issue_claimed(
        self, request: IssuanceRequest, actor: str, claim: TokenClaim, raw: Any
    ) -> CertificateRecord | None:
        return self.issuance.issue_claimed(request, actor, claim, raw)

    def reconcile(self, older_than: timedelta | None = None, actor: str = "system") -> list[str]:
        return self.reconciler.reconcile(older_than, actor)

    def reconcile_pending(self, older_than: timedelta | None = None) -> int:
        """Mark reservations abandoned by a crash as failed; returns how many."""
        return len(self.reconcile(older_than))

    # -- revocation (ca.revoking) -------------------------------------------------------------
    def revoke(
        self,
        serial_hex: str,
        reason: RevocationReason,
        actor: str,
        issuer_name: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> CertificateRecord:
        return self.revocations.revoke(serial_hex, reason, actor, issuer_name, evidence)

    def revoke_where(
        self, criteria: RevocationCriteria, reason: RevocationReason, actor: str
    ) -> list[CertificateRecord]:
        return self.revocations.revoke_where(criteria, reason, actor)

    def matching_live(self, criteria: RevocationCriteria) -> list[CertificateRecord]:
        return self.revocations.matching_live(criteria)

    def release_hold(
        self,
        serial_hex: str,
        actor: str,
        issuer_name: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> CertificateRecord:
        return self.revocations.release_hold(serial_hex, actor, issuer_name, evidence)

    # -- lookup (ca.queries) ------------------------------------------------------------------
    def get(self, serial_hex: str, issuer_name: str | None = None) -> CertificateRecord:
        return self.queries.get(serial_hex, issuer_name)

    def list(self, flt: CertificateFilter) -> Sequence[CertificateRecord]:
        return self.queries.list(flt)
