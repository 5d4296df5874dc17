"""The CA service: the shell that joins the pure builders, the HSM key seam and the store.

Issuance follows DESIGN.md section 6: the record is written (``pending``) and committed before
anything is signed, so no certificate can exist without a record; a crash between the two
leaves a ``pending`` row that :meth:`CertificateAuthority.reconcile` marks ``failed`` once it
is older than ``Settings.pending_reconcile_seconds`` (each CA API worker runs it on a schedule;
``agentca reconcile`` runs it once), and that status services never answer "good" for. A
reservation that fails, explicitly or by reconciliation, releases the enrollment token it
consumed in the same transaction (docs/decisions/0014-crash-safe-enrollment.md).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.extensions import AgentExtensions
from ca.ledger.store import append as ledger_append
from ca.names import validate_agent_name
from ca.profile import (
    BACKDATE,
    AgentCertificateSpec,
    CertificateUrls,
    build_agent_certificate,
    build_issuing_certificate,
    build_root_certificate,
    key_type_of,
)
from ca.records import CertificateRecord, IssuerRecord
from ca.revocation import RevocationReason
from ca.serials import new_serial, serial_to_hex
from ca.store.models import Certificate, CertStatus, EnrollmentToken, Issuer, StatusChange
from hsm import KeyManager

ROOT = "root"
ISSUING = "issuing"
RECONCILE_BATCH = 500  # reservations failed per reconciliation pass (the next pass goes on)
log = logging.getLogger("agentca.authority")


@dataclass(frozen=True)
class IssuanceRequest:
    """A request to certify ``public_key`` for an agent, with its decoded extensions.

    ``ledger_note`` is what the issuance entries record about how the request was decided
    (``outside_policy`` and, for verbatim issuance, the ``policy_reasons``). The authority
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
class CertificateFilter:
    """Filters for listing certificates; ``None`` means "any"."""

    agent_name: str | None = None
    status: str | None = None
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
        return all(
            v is None
            for v in (
                self.model_digest,
                self.prompt_digest,
                self.officer,
                self.agent_name,
                self.environment,
            )
        )


@dataclass
class _LoadedIssuer:
    id: int
    name: str
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    urls: CertificateUrls


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
        self.clock = clock
        self._issuing: _LoadedIssuer | None = None
        self._chain: list[x509.Certificate] | None = None
        self.ledger_enabled = True  # switched off only by the ledger-cost benchmark
        self._lock = threading.Lock()

    # -- hierarchy ----------------------------------------------------------------------------
    def is_initialised(self) -> bool:
        with self.sessions() as s:
            return s.scalar(select(Issuer.id).where(Issuer.role == ISSUING).limit(1)) is not None

    def initialise(
        self, root_key_type: str, issuing_key_type: str, actor: str = "system"
    ) -> list[IssuerRecord]:
        """Create the root and issuing CA: keys generated in the HSM, certificates recorded."""
        from hsm import KeyType

        if self.is_initialised():
            raise CAError(ErrorCode.CONFLICT, "the CA hierarchy already exists")
        try:
            root_type, issuing_type = KeyType.parse(root_key_type), KeyType.parse(issuing_key_type)
        except ValueError as exc:
            raise CAError(ErrorCode.UNSUPPORTED_KEY, str(exc)) from exc
        s = self.settings
        now = self.clock()
        suffix = secrets.token_hex(4)
        root_label, issuing_label = f"agentca-root-{suffix}", f"agentca-issuing-{suffix}"
        root_key = self.keys.generate(root_label, root_type)
        root_cert = build_root_certificate(
            root_key,
            s.root_common_name,
            s.organization,
            new_serial(),
            now - BACKDATE,
            now + timedelta(days=s.root_validity_days),
        )
        issuing_key = self.keys.generate(issuing_label, issuing_type)
        issuing_cert = build_issuing_certificate(
            issuing_key.public_key(),
            s.issuing_common_name,
            s.organization,
            new_serial(),
            now - BACKDATE,
            now + timedelta(days=s.issuing_validity_days),
            root_cert,
            root_key,
            issuer_crl_url=f"{s.effective_crl_base_url}/{ROOT}.crl",
        )
        with self.sessions.begin() as session:
            root = _issuer_row(ROOT, ROOT, None, root_label, root_type.value, root_cert, now)
            session.add(root)
            session.flush()
            issuing = _issuer_row(
                ISSUING, ISSUING, root.id, issuing_label, issuing_type.value, issuing_cert, now
            )
            session.add(issuing)
            self._log(
                session,
                actor,
                "ca.initialised",
                {
                    "root": _issuer_summary(root_cert, root_type.value),
                    "issuing": _issuer_summary(issuing_cert, issuing_type.value),
                },
                now,
            )
        return self.issuers()

    def issuers(self) -> list[IssuerRecord]:
        """Every CA certificate, root first."""
        with self.sessions() as s:
            rows = s.scalars(select(Issuer).order_by(Issuer.id)).all()
            names = {r.id: r.name for r in rows}
            return [
                IssuerRecord(
                    name=r.name,
                    role=r.role,
                    key_label=r.key_label,
                    key_type=r.key_type,
                    certificate_der=r.certificate_der,
                    parent_name=names.get(r.parent_id) if r.parent_id else None,
                )
                for r in rows
            ]

    def issuer(self, name: str) -> IssuerRecord:
        for record in self.issuers():
            if record.name == name:
                return record
        raise CAError(ErrorCode.NOT_FOUND, f"no issuer named '{name}'")

    def chain(self) -> list[x509.Certificate]:
        """The issuing CA certificate followed by the root (cached: CA certificates are
        immutable rows; a new hierarchy means a new process)."""
        if self._chain is not None:
            return self._chain
        by_name = {r.name: r for r in self.issuers()}
        if ISSUING not in by_name:
            raise CAError(
                ErrorCode.NOT_INITIALISED, "the CA is not initialised; run 'agentca init'"
            )
        return [by_name[ISSUING].certificate, by_name[ROOT].certificate]

    def _issuing_ca(self) -> _LoadedIssuer:
        if self._issuing is None:
            with self._lock:
                if self._issuing is None:
                    with self.sessions() as s:
                        row = s.scalar(select(Issuer).where(Issuer.role == ISSUING, Issuer.active))
                        if row is None:
                            raise CAError(
                                ErrorCode.NOT_INITIALISED,
                                "the CA is not initialised; run 'agentca init'",
                            )
                        base = self.settings.public_base_url.rstrip("/")
                        self._issuing = _LoadedIssuer(
                            id=row.id,
                            name=row.name,
                            certificate=x509.load_der_x509_certificate(row.certificate_der),
                            key=self.keys.get(row.key_label),
                            urls=CertificateUrls(
                                ocsp_url=self.settings.effective_ocsp_url,
                                ca_issuers_url=f"{base}/ca/{row.name}.der",
                                crl_url=f"{self.settings.effective_crl_base_url}/{row.name}.crl",
                            ),
                        )
        return self._issuing

    # -- issuance -----------------------------------------------------------------------------
    def issue(
        self,
        request: IssuanceRequest,
        actor: str,
        agent_id: int | None = None,
        in_reservation: Callable[[Session], Mapping[str, Any] | None] | None = None,
        session: Session | None = None,
        renewal: RenewalLink | None = None,
    ) -> CertificateRecord:
        """Record, sign and store one agent certificate (DESIGN.md section 6).

        ``session``, when given, must not be inside a transaction; the caller's request-scoped
        session is then reused for both transactions (one connection for the whole request).

        ``in_reservation`` runs inside the transaction that reserves the serial (e.g. to consume
        a one-time enrollment token): if it raises, nothing at all is written. What it returns
        (column values, e.g. ``enrollment_token_id``) is recorded on the reservation.

        ``renewal`` makes this a renewal: the reservation claims the parent (it must be issued,
        unexpired, not already renewed, and the proof unused) and records the lineage; the
        transaction that stores the new certificate revokes the parent as superseded.
        """
        validate_agent_name(request.agent_name)
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
        issuing = self._issuing_ca()
        now = self.clock()
        not_after = now + validity
        if not_after > issuing.certificate.not_valid_after_utc:
            raise CAError(
                ErrorCode.INVALID_VALIDITY, "validity ends after the issuing CA certificate expires"
            )
        ext = request.extensions
        spki = request.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with self._unit_of_work(session) as s:
            row = self._reserve(
                s,
                issuing,
                request,
                ext,
                spki,
                now,
                not_after,
                actor,
                agent_id,
                in_reservation,
                renewal,
            )
            serial = int(row.serial_hex, 16)
            spec = AgentCertificateSpec(
                serial=serial,
                agent_name=request.agent_name,
                organization=self.settings.organization,
                trust_domain=self.settings.trust_domain,
                public_key=request.public_key,
                extensions=ext,
                not_before=now - BACKDATE,
                not_after=not_after,
            )
            try:
                cert = build_agent_certificate(spec, issuing.certificate, issuing.key, issuing.urls)
            except BaseException as exc:
                self._mark_failed(row, f"{type(exc).__name__}: {exc}", actor)
                raise
            der = cert.public_bytes(serialization.Encoding.DER)
            fingerprint = hashlib.sha256(der).hexdigest()
            try:
                with s.begin():
                    # compare-and-set first: on SQLite the write lock is taken here, with the
                    # condition, so a revocation, hold or second renewal committed while this
                    # one was signed makes it fail instead of leaving two live credentials
                    parent = self._supersede(s, row, renewal, actor, now) if renewal else None
                    result = s.connection().execute(
                        update(Certificate)
                        .where(
                            Certificate.id == row.id,
                            Certificate.status == CertStatus.PENDING.value,
                        )
                        .values(
                            status=CertStatus.ISSUED.value,
                            certificate_der=der,
                            fingerprint_sha256=fingerprint,
                            issued_at=now,
                        )
                    )
                    if getattr(result, "rowcount", 1) != 1:
                        raise CAError(
                            ErrorCode.CONFLICT,
                            f"the request for {row.serial_hex} was cancelled while it was signed "
                            "(its lineage was revoked or the reservation was reconciled)",
                        )
                    body = _issued_body(row, ext, fingerprint, request.ledger_note)
                    if renewal is not None:
                        body["renewed_from"] = renewal.parent_serial_hex
                        body["lineage_root"] = self._lineage_root_serial(s, row)
                    self._log(s, actor, "certificate.issued", body, now)
                    if parent is not None:
                        self._log_superseded(s, parent, row, actor, now)
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
        row.status = CertStatus.ISSUED.value
        row.certificate_der = der
        row.fingerprint_sha256 = fingerprint
        row.issued_at = now
        return _record(row, issuing.name)

    @contextmanager
    def _unit_of_work(self, session: Session | None) -> Iterator[Session]:
        """The caller's session, or a session pinned to one connection for this call."""
        if session is not None:
            yield session
            return
        engine = self.sessions.kw["bind"]
        with engine.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
            yield s

    def _reserve(
        self,
        s: Session,
        issuing: _LoadedIssuer,
        request: IssuanceRequest,
        ext: AgentExtensions,
        spki: bytes,
        now: datetime,
        not_after: datetime,
        actor: str,
        agent_id: int | None = None,
        in_reservation: Callable[[Session], Mapping[str, Any] | None] | None = None,
        renewal: RenewalLink | None = None,
    ) -> Certificate:
        """Commit the pending record (and what ``in_reservation`` writes); return it detached."""
        prov, acc = ext.provenance, ext.accountability
        for _attempt in range(5):
            row = Certificate(
                issuer_id=issuing.id,
                serial_hex=serial_to_hex(new_serial()),
                status=CertStatus.PENDING.value,
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
            )
            try:
                with s.begin():
                    if in_reservation is not None:
                        for key, value in (in_reservation(s) or {}).items():
                            setattr(row, key, value)
                    if renewal is not None:
                        parent = self._claim_parent(s, renewal, now)
                        row.renewed_from_id = parent.id
                        row.lineage_id = parent.lineage_id or parent.id
                        row.renewal_proof_sha256 = renewal.proof_sha256
                    values = {
                        c.key: getattr(row, c.key)
                        for c in Certificate.__table__.columns
                        if c.key != "id"
                    }
                    row.id = (
                        s.connection()
                        .execute(insert(Certificate).values(values).returning(Certificate.id))
                        .scalar_one()
                    )
                    reserved: dict[str, Any] = {
                        "issuer": issuing.name,
                        "serial": row.serial_hex,
                        "agent": row.agent_name,
                        "officer": acc.officer,
                        **_note(request.ledger_note),
                    }
                    if renewal is not None:
                        reserved["renewed_from"] = renewal.parent_serial_hex
                    self._log(s, actor, "certificate.reserved", reserved, now)
                return row
            except IntegrityError:  # a serial collision (astronomically rare) or a proof replayed
                continue  # concurrently: the retry's _claim_parent refuses the latter
        raise CAError(ErrorCode.INTERNAL, "could not reserve a unique serial number")

    # -- renewal lineage -------------------------------------------------------------------------
    def _claim_parent(self, s: Session, renewal: RenewalLink, now: datetime) -> Certificate:
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
        parent = self._find(s, renewal.parent_serial_hex, renewal.parent_issuer, for_update=True)
        child = s.scalar(
            select(Certificate.serial_hex).where(
                Certificate.renewed_from_id == parent.id,
                Certificate.status.in_([CertStatus.PENDING.value, CertStatus.ISSUED.value]),
            )
        )
        if child is not None or (
            parent.status == CertStatus.REVOKED.value
            and parent.revocation_reason == RevocationReason.SUPERSEDED
        ):
            raise CAError(
                ErrorCode.CONFLICT,
                f"certificate {parent.serial_hex} was already renewed"
                + (f" (by {child})" if child else ""),
            )
        if parent.status != CertStatus.ISSUED.value:
            raise CAError(
                ErrorCode.UNAUTHENTICATED,
                f"certificate {parent.serial_hex} is {parent.status} and cannot be renewed",
            )
        if parent.not_after <= now:
            raise CAError(ErrorCode.UNAUTHENTICATED, "the current certificate has expired")
        return parent

    @staticmethod
    def _lineage_root_serial(s: Session, row: Certificate) -> str:
        if row.lineage_id is None:
            return row.serial_hex
        return str(s.scalar(select(Certificate.serial_hex).where(Certificate.id == row.lineage_id)))

    def _supersede(
        self, s: Session, row: Certificate, renewal: RenewalLink, actor: str, now: datetime
    ) -> Certificate:
        """In the transaction storing renewal ``row``: revoke its parent as superseded (4),
        only if the parent is still issued; otherwise refuse the renewal (409)."""
        result = s.connection().execute(
            update(Certificate)
            .where(
                Certificate.id == row.renewed_from_id,
                Certificate.status == CertStatus.ISSUED.value,
            )
            .values(
                status=CertStatus.REVOKED.value,
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
        s.add(
            StatusChange(issuer_id=parent.issuer_id, serial_hex=parent.serial_hex, changed_at=now)
        )
        return parent

    def _log_superseded(
        self, s: Session, parent: Certificate, row: Certificate, actor: str, now: datetime
    ) -> None:
        body = _revoked_body(parent, RevocationReason.SUPERSEDED)
        body["superseded_by"] = row.serial_hex
        self._log(s, actor, "certificate.revoked", body, now)
        s.flush()

    def _revoke_lineage(self, s: Session, row: Certificate, actor: str, now: datetime) -> None:
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
                    Certificate.status.in_([CertStatus.ISSUED.value, CertStatus.PENDING.value]),
                    Certificate.revocation_reason == int(RevocationReason.CERTIFICATE_HOLD),
                ),
            )
            .order_by(Certificate.id)
            .with_for_update()
        ).all()
        for member in members:
            if member.status == CertStatus.PENDING.value:
                member.status = CertStatus.FAILED.value
                member.failure = f"lineage revoked for keyCompromise of {row.serial_hex}"
                self._log(
                    s,
                    actor,
                    "certificate.failed",
                    {
                        "serial": member.serial_hex,
                        "agent": member.agent_name,
                        "why": member.failure,
                    },
                    now,
                )
                continue
            if member.status == CertStatus.ISSUED.value and member.not_after <= now:
                continue  # expired: no longer valid, nothing to revoke
            if member.status == CertStatus.ISSUED.value:
                member.status = CertStatus.REVOKED.value
                member.revoked_at = now
            member.revocation_reason = int(RevocationReason.KEY_COMPROMISE)
            member.revoked_by = actor
            s.add(
                StatusChange(
                    issuer_id=member.issuer_id, serial_hex=member.serial_hex, changed_at=now
                )
            )
            body = _revoked_body(member, RevocationReason.KEY_COMPROMISE)
            body["lineage_of"] = row.serial_hex
            self._log(s, actor, "certificate.revoked", body, now)
        s.flush()

    def _mark_failed(self, row: Certificate, why: str, actor: str) -> None:
        """Fail a reservation after signing or storing failed; never raises (a database that
        is away leaves the row pending, and reconciliation fails it later)."""
        try:
            with self.sessions.begin() as s:
                self._fail_reservation(s, row.id, why[:500], actor, self.clock())
        except Exception as exc:  # the original error is what the caller reports
            log.warning(
                "reservation %s left pending for reconciliation: %s: %s",
                row.serial_hex,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )

    def _fail_reservation(
        self,
        s: Session,
        cert_id: int,
        why: str,
        actor: str,
        now: datetime,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """In ``s``: ``pending`` -> ``failed`` by compare-and-set, its ledger entry, and the
        release of the enrollment token it consumed. False when it was no longer pending
        (issued meanwhile, or failed by someone else: one ledger entry per reservation)."""
        failed = s.execute(
            update(Certificate)
            .where(Certificate.id == cert_id, Certificate.status == CertStatus.PENDING.value)
            .values(status=CertStatus.FAILED.value, failure=why)
            .returning(
                Certificate.serial_hex, Certificate.agent_name, Certificate.enrollment_token_id
            )
        ).first()
        if failed is None:
            return False
        serial_hex, agent, token_id = failed
        self._log(
            s,
            actor,
            "certificate.failed",
            {"serial": serial_hex, "agent": agent, "why": why, **(extra or {})},
            now,
        )
        if token_id is not None:
            released = s.execute(
                update(EnrollmentToken)
                .where(EnrollmentToken.id == token_id, EnrollmentToken.used_at.is_not(None))
                .values(used_at=None)
                .returning(EnrollmentToken.token_hash)
            ).first()
            if released is not None:
                self._log(
                    s,
                    actor,
                    "enrollment_token.released",
                    {"agent": agent, "token_sha256": released[0], "serial": serial_hex},
                    now,
                )
        return True

    def reconcile(self, older_than: timedelta | None = None, actor: str = "system") -> list[str]:
        """Fail every reservation pending for longer than ``older_than`` (default: the
        reconciliation bound, ``Settings.pending_reconcile_seconds``); returns their serials.

        Such a reservation was abandoned by a crash or an outage between reserving and storing:
        no request takes that long, and a certificate signed for it can no longer be stored
        (storing is a compare-and-set on ``pending``), so it was never handed to anyone. Each
        row is failed in its own short transaction by compare-and-set, so reconcilers running
        at once (one per CA API worker) write one ledger entry per reservation.
        """
        bound = older_than if older_than is not None else self.settings.pending_bound
        now = self.clock()
        with self.sessions() as s:
            candidates = s.execute(
                select(Certificate.id, Certificate.created_at)
                .where(Certificate.status == CertStatus.PENDING.value)
                .where(Certificate.created_at < now - bound)
                .order_by(Certificate.id)
                .limit(RECONCILE_BATCH)
            ).all()
        failed: list[str] = []
        for cert_id, created_at in candidates:
            age = int((now - created_at).total_seconds())
            why = f"reconciled: still pending after {age} s (abandoned by a crash or an outage)"
            with self.sessions.begin() as s:
                serial = s.scalar(select(Certificate.serial_hex).where(Certificate.id == cert_id))
                extra = {"reconciled": True, "pending_seconds": age}
                if self._fail_reservation(s, cert_id, why, actor, now, extra):
                    failed.append(str(serial))
        return failed

    def reconcile_pending(self, older_than: timedelta | None = None) -> int:
        """Mark reservations abandoned by a crash as failed; returns how many."""
        return len(self.reconcile(older_than))

    # -- revocation ---------------------------------------------------------------------------
    def revoke(
        self,
        serial_hex: str,
        reason: RevocationReason,
        actor: str,
        issuer_name: str | None = None,
    ) -> CertificateRecord:
        """Revoke an issued certificate with an RFC 5280 reason code."""
        if reason is RevocationReason.REMOVE_FROM_CRL:
            raise CAError(ErrorCode.BAD_REQUEST, "removeFromCRL is not a revocation reason")
        now = self.clock()
        with self.sessions.begin() as s:
            row = self._find(s, serial_hex, issuer_name, for_update=True)
            escalated_from: RevocationReason | None = None
            if row.status == CertStatus.REVOKED.value:
                previous = RevocationReason(row.revocation_reason or 0)
                if previous is RevocationReason.CERTIFICATE_HOLD and (
                    reason is not RevocationReason.CERTIFICATE_HOLD
                ):
                    # RFC 5280 5.3.1: a held certificate may be revoked for good.
                    row.revocation_reason = int(reason)
                    row.revoked_by = actor
                elif reason is RevocationReason.KEY_COMPROMISE and (
                    previous is not RevocationReason.KEY_COMPROMISE
                ):
                    # escalation to keyCompromise (e.g. of a superseded certificate): the
                    # revocation time stays, the reason becomes keyCompromise (docs 0008)
                    escalated_from = previous
                    row.revocation_reason = int(reason)
                    row.revoked_by = actor
                else:
                    raise CAError(
                        ErrorCode.ALREADY_REVOKED, f"certificate {serial_hex} is already revoked"
                    )
            elif row.status != CertStatus.ISSUED.value:
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"certificate {serial_hex} is {row.status} and cannot be revoked",
                )
            else:
                row.status = CertStatus.REVOKED.value
                row.revoked_at = now
                row.revocation_reason = int(reason)
                row.revoked_by = actor
            s.add(StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now))
            body = _revoked_body(row, reason)
            if escalated_from is not None:
                body["previous_reason"] = escalated_from.text
            self._log(s, actor, "certificate.revoked", body, now)
            if reason is RevocationReason.KEY_COMPROMISE:
                self._revoke_lineage(s, row, actor, now)
            issuer = row.issuer.name
        return self.get(serial_hex, issuer)

    def revoke_where(
        self, criteria: RevocationCriteria, reason: RevocationReason, actor: str
    ) -> list[CertificateRecord]:
        """Revoke every *live* certificate (issued, unexpired) matching all given criteria.

        One transaction: either all matching certificates are revoked or none is.
        """
        if reason is RevocationReason.REMOVE_FROM_CRL:
            raise CAError(ErrorCode.BAD_REQUEST, "removeFromCRL is not a revocation reason")
        if criteria.is_empty():
            raise CAError(ErrorCode.BAD_REQUEST, "bulk revocation needs at least one criterion")
        now = self.clock()
        query = (
            select(Certificate)
            .where(Certificate.status == CertStatus.ISSUED.value, Certificate.not_after > now)
            .order_by(Certificate.id)
        )
        for column, value in (
            (Certificate.model_digest, criteria.model_digest),
            (Certificate.prompt_digest, criteria.prompt_digest),
            (Certificate.officer, criteria.officer),
            (Certificate.agent_name, criteria.agent_name),
            (Certificate.environment, criteria.environment),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.sessions.begin() as s:
            rows = s.scalars(query.with_for_update()).all()
            for row in rows:
                row.status = CertStatus.REVOKED.value
                row.revoked_at = now
                row.revocation_reason = int(reason)
                row.revoked_by = actor
                s.add(
                    StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now)
                )
                body = _revoked_body(row, reason)
                body["bulk"] = criteria.to_json()
                self._log(s, actor, "certificate.revoked", body, now)
            if reason is RevocationReason.KEY_COMPROMISE:
                for row in rows:
                    self._revoke_lineage(s, row, actor, now)
            s.flush()
            return [_record(r) for r in rows]

    def release_hold(
        self, serial_hex: str, actor: str, issuer_name: str | None = None
    ) -> CertificateRecord:
        """Lift a certificateHold: the certificate is good again (removeFromCRL in delta CRLs)."""
        now = self.clock()
        with self.sessions.begin() as s:
            row = self._find(s, serial_hex, issuer_name, for_update=True)
            if row.revocation_reason != RevocationReason.CERTIFICATE_HOLD:
                raise CAError(ErrorCode.CONFLICT, f"certificate {serial_hex} is not on hold")
            row.status = CertStatus.ISSUED.value
            row.revoked_at = None
            row.revocation_reason = None
            row.revoked_by = actor
            s.add(StatusChange(issuer_id=row.issuer_id, serial_hex=row.serial_hex, changed_at=now))
            self._log(
                s,
                actor,
                "certificate.hold_released",
                {"serial": row.serial_hex, "agent": row.agent_name, "officer": row.officer},
                now,
            )
            issuer = row.issuer.name
        return self.get(serial_hex, issuer)

    # -- ledger -------------------------------------------------------------------------------
    def _log(self, s: Session, actor: str, event: str, body: dict[str, Any], now: datetime) -> None:
        """Record a change in the ledger, in the transaction that makes it."""
        if self.ledger_enabled:
            ledger_append(s, actor, event, body, now)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, serial_hex: str, issuer_name: str | None = None) -> CertificateRecord:
        """One certificate record by serial (hex), optionally within one issuer."""
        with self.sessions() as s:
            return _record(self._find(s, serial_hex, issuer_name))

    def list(self, flt: CertificateFilter) -> Sequence[CertificateRecord]:
        """Certificate records matching ``flt``, newest first."""
        query = select(Certificate).order_by(Certificate.id.desc()).limit(max(1, flt.limit))
        for column, value in (
            (Certificate.agent_name, flt.agent_name),
            (Certificate.status, flt.status),
            (Certificate.officer, flt.officer),
            (Certificate.model_digest, flt.model_digest),
            (Certificate.prompt_digest, flt.prompt_digest),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.sessions() as s:
            return [_record(r) for r in s.scalars(query).all()]

    @staticmethod
    def _find(
        s: Session, serial_hex: str, issuer_name: str | None, for_update: bool = False
    ) -> Certificate:
        from ca.serials import parse_serial

        try:
            canonical = serial_to_hex(parse_serial(serial_hex))
        except ValueError as exc:
            raise CAError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        query = (
            select(Certificate)
            .options(joinedload(Certificate.issuer, innerjoin=True))
            .where(Certificate.serial_hex == canonical)
        )
        if issuer_name is not None:
            query = query.join(Issuer).where(Issuer.name == issuer_name)
        if for_update:  # the certificate row only: locking its issuer would serialise all
            query = query.with_for_update(of=Certificate)
        rows = s.scalars(query).all()
        if not rows:
            raise CAError(ErrorCode.NOT_FOUND, f"no certificate with serial {canonical}")
        if len(rows) > 1:
            raise CAError(ErrorCode.CONFLICT, f"serial {canonical} exists under several issuers")
        return rows[0]


def _issuer_row(
    name: str,
    role: str,
    parent_id: int | None,
    key_label: str,
    key_type: str,
    cert: x509.Certificate,
    now: datetime,
) -> Issuer:
    der = cert.public_bytes(serialization.Encoding.DER)
    parsed = asn1_x509.Certificate.load(der)
    return Issuer(
        name=name,
        role=role,
        parent_id=parent_id,
        subject=cert.subject.rfc4514_string(),
        key_label=key_label,
        key_type=key_type,
        serial_hex=serial_to_hex(cert.serial_number),
        certificate_der=der,
        name_hash_sha1=parsed.subject.sha1,
        key_hash_sha1=parsed.public_key.sha1,
        name_hash_sha256=parsed.subject.sha256,
        key_hash_sha256=parsed.public_key.sha256,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        active=True,
        created_at=now,
    )


def _record(row: Certificate, issuer_name: str | None = None) -> CertificateRecord:
    return CertificateRecord(
        issuer_name=issuer_name if issuer_name is not None else row.issuer.name,
        serial_hex=row.serial_hex,
        status=row.status,
        agent_name=row.agent_name,
        subject=row.subject,
        model_type=row.model_type,
        model_digest=row.model_digest,
        prompt_digest=row.prompt_digest,
        config_digest=row.config_digest,
        scopes=tuple(row.scopes.split()),
        officer=row.officer,
        environment=row.environment,
        not_before=row.not_before,
        not_after=row.not_after,
        created_at=row.created_at,
        issued_at=row.issued_at,
        revoked_at=row.revoked_at,
        revocation_reason=(
            RevocationReason(row.revocation_reason) if row.revocation_reason is not None else None
        ),
        requested_by=row.requested_by,
        fingerprint_sha256=row.fingerprint_sha256,
        certificate_der=row.certificate_der,
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate, lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _issuer_summary(cert: x509.Certificate, key_type: str) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": serial_to_hex(cert.serial_number),
        "key_type": key_type,
        "certificate_sha256": fingerprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def _note(note: Mapping[str, Any] | None) -> dict[str, Any]:
    """The issuance entries' record of the decision: outside policy unless a note says not."""
    return {"outside_policy": True, **(note or {})}


def _issued_body(
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
        **_note(note),
    }


def _revoked_body(row: Certificate, reason: RevocationReason) -> dict[str, Any]:
    return {
        "serial": row.serial_hex,
        "agent": row.agent_name,
        "officer": row.officer,
        "reason": reason.text,
    }
