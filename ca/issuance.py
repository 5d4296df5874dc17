"""Issuance: reserve -> sign -> commit (docs/architecture.md, the issuance cycle).

1. **Reserve.** The record is written ``pending`` and committed before anything is signed, so
   no certificate can exist without a record. The caller's ``in_reservation`` step (consume
   an enrollment token, confirm the registration is active) and a renewal's claim on its
   parent run in that same transaction.
2. **Sign.** :meth:`Issuance.sign` is the one place an agent certificate is signed with the
   issuing CA's key.
3. **Commit.** ``pending`` -> ``issued`` by compare-and-set, in one transaction with the
   ledger entry and, for a renewal, the parent's supersession. A signing or storing failure
   fails the reservation (releasing its token); a crash leaves it ``pending`` until
   reconciliation (ca/reconciliation.py) fails it. Status services never answer "good" for
   a row that is not ``issued``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ca import enroll_pg
from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.extensions import AgentExtensions
from ca.hierarchy import Hierarchy, SigningIssuer
from ca.journal import Journal
from ca.ledger.store import batched
from ca.lint import sign_agent_certificate
from ca.names import validate_agent_name
from ca.oids import OidArc, large_arc_warning
from ca.profile import BACKDATE, AgentCertificateSpec, key_type_of
from ca.queries import find, to_record
from ca.reconciliation import fail_reservation
from ca.records import CertificateRecord, CertStatus
from ca.requests import IssuanceRequest, RenewalLink, TokenClaim
from ca.revocation import RevocationReason
from ca.revoking import revoked_body
from ca.serials import new_serial, serial_to_hex
from ca.store.models import Certificate, Issuer, StatusChange

log = logging.getLogger("agentca.issuance")

InReservation = Callable[[Session], Mapping[str, Any] | None]

# built once: the hot path only binds values (decision 0039)
_RESERVED_COLUMNS = tuple(c.key for c in Certificate.__table__.columns if c.key != "id")
_INSERT_RESERVED = insert(Certificate).returning(Certificate.id)
_STORE_ISSUED = (
    update(Certificate)
    .where(Certificate.id == bindparam("row_id"), Certificate.status == CertStatus.PENDING)
    .values(status=CertStatus.ISSUED)
)
_ARC = select(Issuer.oid_arc).where(Issuer.id == bindparam("issuer_id"))


class Issuance:
    """Issues agent certificates from :class:`IssuanceRequest` values (decided elsewhere)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        hierarchy: Hierarchy,
        journal: Journal,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.hierarchy = hierarchy
        self.journal = journal
        self.clock = clock

    def issue(
        self,
        request: IssuanceRequest,
        actor: str,
        agent_id: int | None = None,
        in_reservation: InReservation | None = None,
        session: Session | None = None,
        renewal: RenewalLink | None = None,
    ) -> CertificateRecord:
        """Reserve, sign and store one agent certificate.

        ``session``, when given, must not be inside a transaction; the caller's request-scoped
        session is then reused for both transactions (one connection for the whole request).

        ``in_reservation`` runs inside the transaction that reserves the serial (e.g. to consume
        a one-time enrollment token): if it raises, nothing at all is written. What it returns
        (column values, e.g. ``enrollment_token_id``) is recorded on the reservation.

        ``renewal`` makes this a renewal: the reservation claims the parent (it must be issued,
        unexpired, not already renewed, and the proof unused) and records the lineage; the
        transaction that stores the new certificate revokes the parent as superseded.
        """
        issuing, now, not_after = self._checked(request)
        with self._unit_of_work(session) as s:
            row, arc = self._reserve(
                s, issuing, request, now, not_after, actor, agent_id, in_reservation, renewal
            )
            der = self._signed(row, arc, request, issuing, now, not_after, actor)
            self._store(s, row, der, request, actor, now, renewal)
        return self._issued(row, der, now, issuing)

    def issue_claimed(
        self, request: IssuanceRequest, actor: str, claim: TokenClaim, raw: Any
    ) -> CertificateRecord | None:
        """:meth:`issue` for an enrollment on PostgreSQL, one statement per step on the
        autocommit psycopg connection ``raw`` (``ca.enroll_pg``): the reservation takes the
        token ``claim`` names and confirms the agent and model are still active. None when
        nothing was reserved (a check failed): the caller then runs :meth:`issue`, which
        names the reason."""
        if not self.journal.enabled:  # only the ledger-cost benchmark switches it off
            return None
        issuing, now, not_after = self._checked(request)
        ext = request.extensions
        for _attempt in range(5):
            row = self._pending_row(issuing, request, now, not_after, actor, claim.agent_id)
            values = {c: getattr(row, c) for c in enroll_pg.RESERVED_COLUMNS}
            values["status"] = str(row.status)
            entries: list[enroll_pg.Entry] = [
                (actor, "enrollment_token.used", claim.used_body(), now),
                (
                    actor,
                    "certificate.reserved",
                    {
                        "issuer": issuing.name,
                        "serial": row.serial_hex,
                        "agent": row.agent_name,
                        "officer": ext.accountability.officer,
                        **decision_note(request.ledger_note),
                    },
                    now,
                ),
            ]
            try:
                if claim.agent_version is None:
                    return None  # the general path, which confirms what it can
                got = enroll_pg.reserve(
                    raw,
                    values,
                    claim.token_digest,
                    claim.agent_id,
                    entries,
                    now,
                    claim.agent_version,
                )
            except enroll_pg.SerialTaken:  # a collision (astronomically rare): a new serial
                continue
            if got is None:
                return None
            row.id, row.enrollment_token_id, dotted = got
            break
        else:
            raise CAError(ErrorCode.INTERNAL, "could not reserve a unique serial number")
        der = self._signed(row, _arc(dotted), request, issuing, now, not_after, actor)
        fingerprint = hashlib.sha256(der).hexdigest()
        try:
            body = issued_body(row, ext, fingerprint, request.ledger_note)
            stored = enroll_pg.store(
                raw, row.id, der, fingerprint, now, (actor, "certificate.issued", body, now)
            )
        except Exception as exc:  # as in _store: never handed to anyone, safe to fail
            self._mark_failed(row, f"storing failed: {type(exc).__name__}", actor)
            raise
        if not stored:
            why = (
                f"the request for {row.serial_hex} was cancelled while it was signed "
                "(its lineage was revoked or the reservation was reconciled)"
            )
            self._mark_failed(row, why, actor)
            raise CAError(ErrorCode.CONFLICT, why)
        return self._issued(row, der, now, issuing)

    def _checked(self, request: IssuanceRequest) -> tuple[SigningIssuer, datetime, datetime]:
        """The checks before any reservation: name, key type, validity within the issuer's."""
        validate_agent_name(request.agent_name)
        validity = self._validity(request)
        issuing = self.hierarchy.signing_issuer()
        now = self.clock()
        not_after = now + validity
        if not_after > issuing.certificate.not_valid_after_utc:
            raise CAError(
                ErrorCode.INVALID_VALIDITY, "validity ends after the issuing CA certificate expires"
            )
        return issuing, now, not_after

    def _signed(
        self,
        row: Certificate,
        arc: OidArc,
        request: IssuanceRequest,
        issuing: SigningIssuer,
        now: datetime,
        not_after: datetime,
        actor: str,
    ) -> bytes:
        """Step 2 for the reserved ``row``: the signed certificate's DER; a failure to sign
        fails the reservation (releasing its token) and is raised."""
        spec = AgentCertificateSpec(
            serial=int(row.serial_hex, 16),
            agent_name=request.agent_name,
            organization=self.settings.organization,
            trust_domain=self.settings.trust_domain,
            public_key=request.public_key,
            extensions=request.extensions,
            not_before=now - BACKDATE,
            not_after=not_after,
            oid_arc=arc,
        )
        try:
            cert = self.sign(spec, issuing)
        except BaseException as exc:
            self._mark_failed(row, f"{type(exc).__name__}: {exc}", actor)
            raise
        return cert.public_bytes(serialization.Encoding.DER)

    @staticmethod
    def _issued(
        row: Certificate, der: bytes, now: datetime, issuing: SigningIssuer
    ) -> CertificateRecord:
        row.status = CertStatus.ISSUED
        row.certificate_der = der
        row.fingerprint_sha256 = hashlib.sha256(der).hexdigest()
        row.issued_at = now
        return to_record(row, issuing.name)

    def sign(self, spec: AgentCertificateSpec, issuing: SigningIssuer) -> x509.Certificate:
        """Build, lint and sign the certificate: the one place the issuing CA's key signs an
        agent certificate. The exact to-be-signed certificate is first checked by the strict
        decoder the gateway uses (``ca.lint``); a certificate that fails is never signed."""
        return sign_agent_certificate(spec, issuing.certificate, issuing.key, issuing.urls)

    def _validity(self, request: IssuanceRequest) -> timedelta:
        key_type = key_type_of(request.public_key)
        if key_type not in self.settings.allowed_agent_key_types:
            raise CAError(
                ErrorCode.UNSUPPORTED_KEY, f"agent keys of type {key_type} are not allowed"
            )
        validity = request.validity or self.settings.default_validity
        if validity <= timedelta(0):
            raise CAError(ErrorCode.INVALID_VALIDITY, "validity must be positive")
        if validity > self.settings.max_validity:
            raise CAError(
                ErrorCode.INVALID_VALIDITY,
                f"validity {validity} exceeds the maximum of {self.settings.max_validity}",
            )
        return validity

    @contextmanager
    def _unit_of_work(self, session: Session | None) -> Iterator[Session]:
        """The caller's session, or a session pinned to one connection for this call."""
        if session is not None:
            yield session
            return
        engine = self.sessions.kw["bind"]
        with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
            yield s

    # -- 1. reserve ---------------------------------------------------------------------------
    def _reserve(
        self,
        s: Session,
        issuing: SigningIssuer,
        request: IssuanceRequest,
        now: datetime,
        not_after: datetime,
        actor: str,
        agent_id: int | None,
        in_reservation: InReservation | None,
        renewal: RenewalLink | None,
    ) -> tuple[Certificate, OidArc]:
        """Commit the pending record (and what ``in_reservation`` writes); return it detached,
        with the issuing CA's OID arc read in the same transaction (``ca.arcs``)."""
        acc = request.extensions.accountability
        for _attempt in range(5):
            row = self._pending_row(issuing, request, now, not_after, actor, agent_id)
            try:
                with s.begin(), batched(s):
                    arc = issuing_arc(s, issuing.id)
                    if in_reservation is not None:
                        for key, value in (in_reservation(s) or {}).items():
                            setattr(row, key, value)
                    if row.attestation_sha256 is not None:
                        _statement_unspent(s, row.attestation_sha256)
                    if renewal is not None:
                        parent = _claim_parent(s, renewal, now)
                        row.renewed_from_id = parent.id
                        row.lineage_id = parent.lineage_id or parent.id
                        row.renewal_proof_sha256 = renewal.proof_sha256
                    values = {c: getattr(row, c) for c in _RESERVED_COLUMNS}
                    row.id = s.connection().execute(_INSERT_RESERVED, values).scalar_one()
                    reserved: dict[str, Any] = {
                        "issuer": issuing.name,
                        "serial": row.serial_hex,
                        "agent": row.agent_name,
                        "officer": acc.officer,
                        **decision_note(request.ledger_note),
                    }
                    if renewal is not None:
                        reserved["renewed_from"] = renewal.parent_serial_hex
                    self.journal.write(s, actor, "certificate.reserved", reserved, now)
                return row, arc
            except IntegrityError:  # a serial collision (astronomically rare), or a proof or
                continue  # statement used concurrently: the retry's checks refuse those
        raise CAError(ErrorCode.INTERNAL, "could not reserve a unique serial number")

    def _pending_row(
        self,
        issuing: SigningIssuer,
        request: IssuanceRequest,
        now: datetime,
        not_after: datetime,
        actor: str,
        agent_id: int | None,
    ) -> Certificate:
        """The ``pending`` record of ``request`` with a fresh random serial (not yet added)."""
        ext = request.extensions
        prov, acc = ext.provenance, ext.accountability
        spki = request.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Certificate(
            issuer_id=issuing.id,
            serial_hex=serial_to_hex(new_serial()),
            status=CertStatus.PENDING,
            agent_name=request.agent_name,
            subject=f"O={self.settings.organization},CN={request.agent_name}",
            public_key_sha256=hashlib.sha256(spki).digest(),
            model_type=prov.model_type,
            model_digest=prov.model_digest.hex,
            prompt_digest=prov.prompt_digest.hex,
            config_digest=prov.config_digest.hex if prov.config_digest else None,
            scopes=" ".join(ext.authorization.scopes),
            officer=acc.officer,
            environment=acc.environment,
            not_before=now - BACKDATE,
            not_after=not_after,
            requested_by=actor,
            created_at=now,
            agent_id=agent_id,
            attestation_sha256=(
                None if ext.attestation is None else ext.attestation.statement_digest.value.hex()
            ),
        )

    # -- 3. commit ----------------------------------------------------------------------------
    def _store(
        self,
        s: Session,
        row: Certificate,
        der: bytes,
        request: IssuanceRequest,
        actor: str,
        now: datetime,
        renewal: RenewalLink | None,
    ) -> None:
        """``pending`` -> ``issued`` with its ledger entry (and the parent's supersession)."""
        fingerprint = hashlib.sha256(der).hexdigest()
        try:
            with s.begin(), batched(s):
                # compare-and-set first: on SQLite the write lock is taken here, with the
                # condition, so a revocation, hold or second renewal committed while this
                # one was signed makes it fail instead of leaving two live credentials
                parent = _supersede(s, row, renewal, actor, now) if renewal else None
                result = s.connection().execute(
                    _STORE_ISSUED,
                    {
                        "row_id": row.id,
                        "certificate_der": der,
                        "fingerprint_sha256": fingerprint,
                        "issued_at": now,
                    },
                )
                if getattr(result, "rowcount", 1) != 1:
                    raise CAError(
                        ErrorCode.CONFLICT,
                        f"the request for {row.serial_hex} was cancelled while it was signed "
                        "(its lineage was revoked or the reservation was reconciled)",
                    )
                body = issued_body(row, request.extensions, fingerprint, request.ledger_note)
                if renewal is not None:
                    body["renewed_from"] = renewal.parent_serial_hex
                    body["lineage_root"] = _lineage_root_serial(s, row)
                self.journal.write(s, actor, "certificate.issued", body, now)
                if parent is not None:
                    superseded = revoked_body(parent, RevocationReason.SUPERSEDED)
                    superseded["superseded_by"] = row.serial_hex
                    self.journal.write(s, actor, "certificate.revoked", superseded, now)
                    s.flush()
        except CAError as exc:
            if exc.code == ErrorCode.CONFLICT:
                self._mark_failed(row, exc.detail, actor)
            raise
        except Exception as exc:
            # storing failed (database outage, deadlock): the certificate was signed but
            # never handed to anyone, so failing the reservation is safe and frees the
            # token at once; if the database is still away, reconciliation does it later
            self._mark_failed(row, f"storing failed: {type(exc).__name__}", actor)
            raise

    def _mark_failed(self, row: Certificate, why: str, actor: str) -> None:
        """Fail a reservation after signing or storing failed; never raises (a database that
        is away leaves the row pending, and reconciliation fails it later)."""
        try:
            with self.sessions.begin() as s:
                fail_reservation(s, self.journal, row.id, why[:500], actor, self.clock())
        except Exception as exc:  # the original error is what the caller reports
            log.warning(
                "reservation %s left pending for reconciliation: %s: %s",
                row.serial_hex,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )


# -- renewal lineage ----------------------------------------------------------------------------
_warned_arcs: set[OidArc] = set()


def issuing_arc(s: Session, issuer_id: int) -> OidArc:
    """The OID arc recorded with issuer ``issuer_id``; a component >= 2**31 is logged as a
    warning, once per arc and process (Go and GnuTLS refuse such certificates)."""
    dotted = s.connection().execute(_ARC, {"issuer_id": issuer_id}).scalar()
    if dotted is None:
        raise CAError(ErrorCode.NOT_INITIALISED, "the issuing CA is not on record")
    return _arc(dotted)


def _arc(dotted: str) -> OidArc:
    arc = OidArc(dotted)
    if arc not in _warned_arcs:
        _warned_arcs.add(arc)
        warning = large_arc_warning(arc)
        if warning:
            log.warning("issuing under %s", warning)
    return arc


def _statement_unspent(s: Session, statement_sha256: str) -> None:
    """In the reservation: no certificate that has not failed was issued on this attestation
    statement (``uq_certificates_attestation_live`` refuses a concurrent one; the retry then
    comes here and names the reason)."""
    used = s.execute(
        select(Certificate.id)
        .where(Certificate.attestation_sha256 == statement_sha256)
        .where(Certificate.status != CertStatus.FAILED)
        .limit(1)
    ).first()
    if used is not None:
        reason = (
            "attestation-reused: a certificate was already issued on this attestation "
            "statement; a statement yields one certificate, ask the launcher for a fresh one"
        )
        raise CAError(ErrorCode.POLICY_REFUSED, f"enrollment refused: {reason}", reasons=[reason])


def _claim_parent(s: Session, renewal: RenewalLink, now: datetime) -> Certificate:
    """In the reservation: lock the certificate being renewed and check it may be renewed.

    Refused with ``conflict`` (409) when the proof was already used or the parent was
    already renewed (a renewal of it is pending or issued, or it is revoked as
    superseded); with ``unauthenticated`` (401) when the parent is otherwise not good.
    """
    used = s.scalar(
        select(Certificate.serial_hex).where(
            Certificate.renewal_proof_sha256 == renewal.proof_sha256
        )
    )
    if used is not None:
        raise CAError(
            ErrorCode.CONFLICT,
            f"this renewal proof was already used (certificate {used}); sign a new one",
        )
    parent = find(s, renewal.parent_serial_hex, renewal.parent_issuer, for_update=True)
    child = s.scalar(
        select(Certificate.serial_hex).where(
            Certificate.renewed_from_id == parent.id,
            Certificate.status.in_([CertStatus.PENDING, CertStatus.ISSUED]),
        )
    )
    if child is not None or (
        parent.status == CertStatus.REVOKED
        and parent.revocation_reason == RevocationReason.SUPERSEDED
    ):
        raise CAError(
            ErrorCode.CONFLICT,
            f"certificate {parent.serial_hex} was already renewed"
            + (f" (by {child})" if child else ""),
        )
    if parent.status != CertStatus.ISSUED:
        raise CAError(
            ErrorCode.UNAUTHENTICATED,
            f"certificate {parent.serial_hex} is {parent.status} and cannot be renewed",
        )
    if parent.not_after <= now:
        raise CAError(ErrorCode.UNAUTHENTICATED, "the current certificate has expired")
    return parent


def _supersede(
    s: Session, row: Certificate, renewal: RenewalLink, actor: str, now: datetime
) -> Certificate:
    """In the transaction storing renewal ``row``: revoke its parent as superseded (4),
    only if the parent is still issued; otherwise refuse the renewal (409)."""
    result = s.connection().execute(
        update(Certificate)
        .where(Certificate.id == row.renewed_from_id, Certificate.status == CertStatus.ISSUED)
        .values(
            status=CertStatus.REVOKED,
            revoked_at=now,
            revocation_reason=int(RevocationReason.SUPERSEDED),
            revoked_by=actor,
        )
    )
    if getattr(result, "rowcount", 1) != 1:
        raise CAError(
            ErrorCode.CONFLICT,
            f"certificate {renewal.parent_serial_hex} was revoked, put on hold or renewed "
            "while this renewal was signed; nothing was issued",
        )
    parent = s.scalars(
        select(Certificate)
        .where(Certificate.id == row.renewed_from_id)
        .execution_options(populate_existing=True)
    ).one()
    s.add(StatusChange(issuer_id=parent.issuer_id, serial_hex=parent.serial_hex, changed_at=now))
    return parent


def _lineage_root_serial(s: Session, row: Certificate) -> str:
    if row.lineage_id is None:
        return row.serial_hex
    return str(s.scalar(select(Certificate.serial_hex).where(Certificate.id == row.lineage_id)))


# -- ledger bodies ------------------------------------------------------------------------------
def decision_note(note: Mapping[str, Any] | None) -> dict[str, Any]:
    """The issuance entries' record of the decision: outside policy unless a note says not."""
    return {"outside_policy": True, **(note or {})}


def issued_body(
    row: Certificate,
    ext: AgentExtensions,
    fingerprint_hex: str,
    note: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The issuance entry: fingerprint, the decoded provenance, scopes and officer, and how
    the request was decided (see :attr:`IssuanceRequest.ledger_note`)."""
    return {
        "serial": row.serial_hex,
        "agent": row.agent_name,
        "officer": ext.accountability.officer,
        "fingerprint_sha256": fingerprint_hex,
        "not_before": row.not_before.isoformat(),
        "not_after": row.not_after.isoformat(),
        "requested_by": row.requested_by,
        "extensions": ext.to_dict(),
        **decision_note(note),
    }
