"""Revocation: one certificate, every live certificate matching criteria, and holds.

Each change writes the row, a ``status_changes`` entry (the feed the OCSP tier and the delta
CRLs follow) and a ledger entry in one transaction. keyCompromise of a certificate also
revokes the rest of its renewal lineage (docs/decisions/0008-renewal-proofs-and-lineage.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.errors import CAError, ErrorCode
from ca.journal import Journal
from ca.queries import CertificateQueries, find, to_record
from ca.reconciliation import fail_reservation
from ca.records import CertificateRecord, CertStatus
from ca.requests import RevocationCriteria
from ca.revocation import RevocationReason
from ca.store.db import lock_for_write
from ca.store.models import Certificate, StatusChange


class Revocations:
    """Revokes certificates and releases holds."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        journal: Journal,
        queries: CertificateQueries,
        clock: Clock = utcnow,
    ) -> None:
        self.sessions = sessions
        self.journal = journal
        self.queries = queries
        self.clock = clock

    def revoke(
        self,
        serial_hex: str,
        reason: RevocationReason,
        actor: str,
        issuer_name: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> CertificateRecord:
        """Revoke an issued certificate with an RFC 5280 reason code.

        A certificate on hold may be revoked for good, and any revoked certificate may be
        escalated to keyCompromise (its revocation time stays); anything else already revoked
        is ``already-revoked``. ``evidence`` (canonical-JSON values: no floats) goes into the
        ledger entry, e.g. the drift score that made it a remediation (decision 0057).
        """
        _refuse_remove_from_crl(reason)
        now = self.clock()
        with self.sessions.begin() as s:
            row = find(s, serial_hex, issuer_name, for_update=True)
            escalated_from: RevocationReason | None = None
            if row.status == CertStatus.REVOKED:
                previous = RevocationReason(row.revocation_reason or 0)
                if previous is RevocationReason.CERTIFICATE_HOLD and (
                    reason is not RevocationReason.CERTIFICATE_HOLD
                ):
                    pass  # RFC 5280 5.3.1: a held certificate may be revoked for good
                elif reason is RevocationReason.KEY_COMPROMISE and (
                    previous is not RevocationReason.KEY_COMPROMISE
                ):
                    # escalation to keyCompromise (e.g. of a superseded certificate): the
                    # revocation time stays, the reason becomes keyCompromise (docs 0008)
                    escalated_from = previous
                else:
                    raise CAError(
                        ErrorCode.ALREADY_REVOKED, f"certificate {serial_hex} is already revoked"
                    )
                row.revocation_reason = int(reason)
                row.revoked_by = actor
            elif row.status != CertStatus.ISSUED:
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"certificate {serial_hex} is {row.status} and cannot be revoked",
                )
            else:
                _mark_revoked(row, reason, actor, now)
            s.add(StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now))
            body = revoked_body(row, reason)
            if escalated_from is not None:
                body["previous_reason"] = escalated_from.text
            if evidence is not None:
                body["evidence"] = dict(evidence)
            self.journal.write(s, actor, "certificate.revoked", body, now)
            if reason is RevocationReason.KEY_COMPROMISE:
                revoke_lineage(s, self.journal, row, actor, now)
            issuer = row.issuer.name
        return self.queries.get(serial_hex, issuer)

    def revoke_where(
        self, criteria: RevocationCriteria, reason: RevocationReason, actor: str
    ) -> list[CertificateRecord]:
        """Revoke every *live* certificate (issued, unexpired) matching all given criteria.

        One transaction: either all matching certificates are revoked or none is.
        """
        with self.sessions.begin() as s:
            return revoke_matching(s, self.journal, criteria, reason, actor, self.clock())

    def matching_live(self, criteria: RevocationCriteria) -> list[CertificateRecord]:
        """What :meth:`revoke_where` would revoke now (a preview: nothing changes)."""
        if criteria.is_empty():
            raise CAError(ErrorCode.BAD_REQUEST, "bulk revocation needs at least one criterion")
        with self.sessions() as s:
            return [to_record(r) for r in s.scalars(_live_matching(criteria, self.clock()))]

    def release_hold(
        self,
        serial_hex: str,
        actor: str,
        issuer_name: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> CertificateRecord:
        """Lift a certificateHold: the certificate is good again (removeFromCRL in delta CRLs).
        ``evidence`` goes into the ledger entry (e.g. the drift review it concludes)."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = find(s, serial_hex, issuer_name, for_update=True)
            if row.revocation_reason != RevocationReason.CERTIFICATE_HOLD:
                raise CAError(ErrorCode.CONFLICT, f"certificate {serial_hex} is not on hold")
            row.status = CertStatus.ISSUED
            row.revoked_at = None
            row.revocation_reason = None
            row.revoked_by = actor
            s.add(StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now))
            released: dict[str, Any] = {
                "serial": row.serial_hex,
                "agent": row.agent_name,
                "officer": row.officer,
            }
            if evidence is not None:
                released["evidence"] = dict(evidence)
            self.journal.write(s, actor, "certificate.hold_released", released, now)
            issuer = row.issuer.name
        return self.queries.get(serial_hex, issuer)


def revoke_matching(
    s: Session,
    journal: Journal,
    criteria: RevocationCriteria,
    reason: RevocationReason,
    actor: str,
    now: datetime,
) -> list[CertificateRecord]:
    """In the caller's transaction: revoke the live certificates matching ``criteria``."""
    _refuse_remove_from_crl(reason)
    if criteria.is_empty():
        raise CAError(ErrorCode.BAD_REQUEST, "bulk revocation needs at least one criterion")
    lock_for_write(s)
    rows = s.scalars(_live_matching(criteria, now).with_for_update()).all()
    _fail_matching_reservations(s, journal, criteria, actor, now)
    for row in rows:
        _mark_revoked(row, reason, actor, now)
        s.add(StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now))
        body = revoked_body(row, reason)
        body["bulk"] = criteria.to_json()
        journal.write(s, actor, "certificate.revoked", body, now)
    if reason is RevocationReason.KEY_COMPROMISE:
        for row in rows:
            revoke_lineage(s, journal, row, actor, now)
    s.flush()
    return [to_record(r) for r in rows]


def _live_matching(criteria: RevocationCriteria, now: datetime) -> Select[Certificate]:
    """The live (issued, unexpired) certificates matching every criterion, oldest first."""
    query = (
        select(Certificate)
        .where(Certificate.status == CertStatus.ISSUED, Certificate.not_after > now)
        .order_by(Certificate.id)
    )
    for column, value in _criteria_columns(criteria):
        query = query.where(column == value)
    return query


def _fail_matching_reservations(
    s: Session, journal: Journal, criteria: RevocationCriteria, actor: str, now: datetime
) -> None:
    """Reservations matching ``criteria`` still being signed are failed, as in a lineage
    revocation: their issuance then fails instead of answering a certificate that the
    revocation (a model retired with --revoke, say) meant to leave no live one of."""
    query = select(Certificate.id).where(Certificate.status == CertStatus.PENDING)
    for column, value in _criteria_columns(criteria):
        query = query.where(column == value)
    why = "cancelled by a bulk revocation " + ", ".join(
        f"{k}={v}" for k, v in sorted(criteria.to_json().items())
    )
    for cert_id in s.scalars(query.order_by(Certificate.id).with_for_update()).all():
        fail_reservation(s, journal, cert_id, why[:500], actor, now)


def _criteria_columns(criteria: RevocationCriteria) -> list[tuple[Any, str]]:
    return [
        (column, value)
        for column, value in (
            (Certificate.model_digest, criteria.model_digest),
            (Certificate.prompt_digest, criteria.prompt_digest),
            (Certificate.officer, criteria.officer),
            (Certificate.agent_name, criteria.agent_name),
            (Certificate.environment, criteria.environment),
        )
        if value is not None
    ]


def revoke_lineage(
    s: Session, journal: Journal, row: Certificate, actor: str, now: datetime
) -> None:
    """keyCompromise of ``row``: revoke every other still-valid certificate of its lineage.

    Issued and unexpired members are revoked (keyCompromise), members on certificateHold
    are revoked for good, and reservations still being signed are marked failed (their
    issuance then fails instead of answering a certificate). Members already revoked for
    another reason (e.g. superseded) keep it: their own keys are not known compromised.
    """
    s.flush()
    root = row.lineage_id or row.id
    members = s.scalars(
        select(Certificate)
        .where(
            or_(Certificate.id == root, Certificate.lineage_id == root),
            Certificate.id != row.id,
            or_(
                Certificate.status.in_([CertStatus.ISSUED, CertStatus.PENDING]),
                Certificate.revocation_reason == int(RevocationReason.CERTIFICATE_HOLD),
            ),
        )
        .order_by(Certificate.id)
        .with_for_update()
    ).all()
    for member in members:
        if member.status == CertStatus.PENDING:
            member.status = CertStatus.FAILED
            member.failure = f"lineage revoked for keyCompromise of {row.serial_hex}"
            journal.write(
                s,
                actor,
                "certificate.failed",
                {"serial": member.serial_hex, "agent": member.agent_name, "why": member.failure},
                now,
            )
            continue
        if member.status == CertStatus.ISSUED and member.not_after <= now:
            continue  # expired: no longer valid, nothing to revoke
        if member.status == CertStatus.ISSUED:
            member.status = CertStatus.REVOKED
            member.revoked_at = now
        member.revocation_reason = int(RevocationReason.KEY_COMPROMISE)
        member.revoked_by = actor
        s.add(
            StatusChange(issuer_id=member.issuer_id, serial_hex=member.serial_hex, changed_at=now)
        )
        body = revoked_body(member, RevocationReason.KEY_COMPROMISE)
        body["lineage_of"] = row.serial_hex
        journal.write(s, actor, "certificate.revoked", body, now)
    s.flush()


def revoked_body(row: Certificate, reason: RevocationReason) -> dict[str, Any]:
    """The ``certificate.revoked`` ledger entry's body."""
    return {
        "serial": row.serial_hex,
        "agent": row.agent_name,
        "officer": row.officer,
        "reason": reason.text,
    }


def _mark_revoked(row: Certificate, reason: RevocationReason, actor: str, now: datetime) -> None:
    row.status = CertStatus.REVOKED
    row.revoked_at = now
    row.revocation_reason = int(reason)
    row.revoked_by = actor


def _refuse_remove_from_crl(reason: RevocationReason) -> None:
    if reason is RevocationReason.REMOVE_FROM_CRL:
        raise CAError(ErrorCode.BAD_REQUEST, "removeFromCRL is not a revocation reason")
