"""The root key ceremony and the root's revocation of an issuing CA (decision 0034).

With ``root_token_label`` set the root key is on its own token, attached only for a
ceremony. In one sitting the ceremony signs what the root owes until the next one: a
complete root CRL (and its delta) whose nextUpdate is ``root_crl_validity_days`` away, and
a delegated OCSP responder certificate for the root valid as long. ``revoke_issuer`` records
the revocation of an issuing CA certificate under the root (a ``certificates`` row of the
root, which its CRLs and its OCSP answers read like any other) and publishes a fresh root CRL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.crl_publisher import CrlPublisher, PublishedCrl
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append as ledger_append
from ca.records import ROOT_ROLE, CertStatus
from ca.responder_certs import ResponderCertPolicy, ResponderCertRotator, RotationResult
from ca.revocation import RevocationReason
from ca.store.db import lock_for_write
from ca.store.models import Certificate, Issuer, StatusChange
from hsm import KeyManager

CEREMONY = "ca.root_ceremony"
ISSUER_REVOKED = "ca.issuer_revoked"
#: The next ceremony is due this long before the root CRL's nextUpdate or the root
#: responder certificate's notAfter; ``agentca doctor`` warns from then on.
CEREMONY_AHEAD = timedelta(days=14)


@dataclass(frozen=True)
class RootDuties:
    """What one sitting signed: the root CRLs, the root's responder certificate, and when
    the next ceremony is due."""

    root: str
    crls: list[PublishedCrl]
    signer: RotationResult | None
    next_due: datetime

    @property
    def next_update(self) -> datetime:
        """The complete root CRL's nextUpdate."""
        return next(c.next_update for c in self.crls if c.kind == "full")


@dataclass(frozen=True)
class IssuerRevocation:
    """An issuing CA certificate revoked under the root (``changed``: by this call)."""

    issuer: str
    serial_hex: str
    reason: RevocationReason
    revoked_at: datetime
    changed: bool
    duties: RootDuties | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "reason": self.reason.text,
            "revoked_at": self.revoked_at,
            "changed": self.changed,
        }


def root_row(session: Session, now: datetime) -> Issuer:
    """The root CA (the newest unexpired one)."""
    row = session.scalar(
        select(Issuer)
        .where(Issuer.parent_id.is_(None), Issuer.not_after > now)
        .order_by(Issuer.id.desc())
        .limit(1)
    )
    if row is None:
        raise CAError(ErrorCode.NOT_INITIALISED, "no unexpired root CA; run 'agentca init'")
    return row


def next_due(crl_next_update: datetime, signer_not_after: datetime | None) -> datetime:
    """When the next ceremony is due: :data:`CEREMONY_AHEAD` before the first of the root
    CRL's nextUpdate and the root responder certificate's notAfter."""
    ends = [crl_next_update] + ([signer_not_after] if signer_not_after else [])
    return min(ends) - CEREMONY_AHEAD


def publish_root_crls(
    settings: Settings, sessions: sessionmaker[Session], root_keys: KeyManager, clock: Clock
) -> list[PublishedCrl]:
    """A complete root CRL and its delta, nextUpdate ``root_crl_validity_days`` away."""
    validity = timedelta(days=settings.root_crl_validity_days)
    with sessions() as s:
        name = root_row(s, clock()).name
    publisher = CrlPublisher(
        sessions,
        root_keys,
        settings.effective_crl_publish_dir,
        settings.effective_crl_base_url,
        validity / 2,  # the publisher's nextUpdate is twice its interval
        clock,
    )
    return publisher.publish(name, "full")


def sign_root_duties(
    settings: Settings,
    sessions: sessionmaker[Session],
    root_keys: KeyManager,
    responder_keys: KeyManager | None,
    actor: str = "system",
    clock: Clock = utcnow,
) -> RootDuties:
    """The ceremony's signatures: root CRLs and (``responder_keys`` given) a new responder
    certificate for the root, both valid ``root_crl_validity_days``; one ledger entry."""
    with sessions() as s:
        root = root_row(s, clock())
        root_id, name, label = root.id, root.name, root.key_label
    root_keys.get(label)  # the root key is here before anything is signed
    crls = publish_root_crls(settings, sessions, root_keys, clock)
    signer = None
    if responder_keys is not None:
        policy = ResponderCertPolicy(validity=timedelta(days=settings.root_crl_validity_days))
        rotator = ResponderCertRotator(sessions, root_keys, responder_keys, policy, clock)
        signer = rotator.ensure(root_id, force=True)
    full = next(c for c in crls if c.kind == "full")
    due = next_due(full.next_update, signer.not_after if signer else None)
    now = clock()
    with sessions.begin() as s:
        ledger_append(
            s,
            actor,
            CEREMONY,
            {
                "root": name,
                "crl_number": full.number,
                "crl_next_update": full.next_update.isoformat(),
                "responder_key_label": signer.key_label if signer else None,
                "responder_not_after": signer.not_after.isoformat() if signer else None,
                "next_ceremony_due": due.isoformat(),
            },
            now,
        )
    return RootDuties(name, crls, signer, due)


def revoke_issuer(
    settings: Settings,
    sessions: sessionmaker[Session],
    root_keys: KeyManager,
    name: str,
    reason: RevocationReason,
    actor: str,
    clock: Clock = utcnow,
) -> IssuerRevocation:
    """Revoke the issuing CA ``name`` under the root and publish a fresh root CRL listing
    it; the root's OCSP answers for its certificate say revoked from then on.

    Refused for the root itself and for the active issuing CA (roll over first, or new
    certificates would be issued under a revoked CA). The same revocation again changes
    nothing; another reason for one already revoked is ``already-revoked``.
    """
    if reason in (RevocationReason.REMOVE_FROM_CRL, RevocationReason.CERTIFICATE_HOLD):
        raise CAError(ErrorCode.BAD_REQUEST, f"an issuing CA cannot be revoked with {reason.text}")
    now = clock()
    with sessions() as s:
        root = root_row(s, now)
        root_name, root_label = root.name, root.key_label
    root_keys.get(root_label)  # no record is written while the root key is away
    with sessions.begin() as s:
        lock_for_write(s)
        row = s.scalar(select(Issuer).where(Issuer.name == name))
        if row is None:
            raise CAError(ErrorCode.NOT_FOUND, f"no issuer named '{name}'")
        if row.role == ROOT_ROLE or row.parent_id is None:
            raise CAError(
                ErrorCode.BAD_REQUEST,
                f"'{name}' is the root: it cannot revoke itself; relying parties must remove "
                "it from their trust stores",
            )
        if row.active:
            raise CAError(
                ErrorCode.CONFLICT,
                f"'{name}' is the active issuing CA: run 'agentca ca rollover' first, so that "
                "new certificates are issued under another one, then revoke it",
            )
        existing = s.scalar(
            select(Certificate).where(
                Certificate.issuer_id == row.parent_id, Certificate.serial_hex == row.serial_hex
            )
        )
        if existing is not None and existing.status == CertStatus.REVOKED:
            if existing.revocation_reason == int(reason):
                at = existing.revoked_at or now
                return IssuerRevocation(name, row.serial_hex, reason, at, False, None)
            previous = RevocationReason(existing.revocation_reason or 0).text
            raise CAError(
                ErrorCode.ALREADY_REVOKED, f"issuing CA '{name}' is already revoked ({previous})"
            )
        cert = x509.load_der_x509_certificate(row.certificate_der)
        s.add(_revoked_row(row, cert, reason, actor, now))
        s.add(StatusChange(issuer_id=row.parent_id, serial_hex=row.serial_hex, changed_at=now))
        ledger_append(
            s,
            actor,
            ISSUER_REVOKED,
            {"issuer": name, "serial": row.serial_hex, "reason": reason.text},
            now,
        )
        serial = row.serial_hex
    crls = publish_root_crls(settings, sessions, root_keys, clock)
    full = next(c for c in crls if c.kind == "full")
    duties = RootDuties(root_name, crls, None, next_due(full.next_update, None))
    return IssuerRevocation(name, serial, reason, now, True, duties)


def _revoked_row(
    row: Issuer, cert: x509.Certificate, reason: RevocationReason, actor: str, now: datetime
) -> Certificate:
    """The root's record of the issuing CA certificate, revoked."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Certificate(
        issuer_id=row.parent_id,
        serial_hex=row.serial_hex,
        status=CertStatus.REVOKED,
        agent_name=row.name,
        subject=row.subject,
        public_key_sha256=hashlib.sha256(spki).digest(),
        model_type="",
        model_digest="",
        prompt_digest="",
        config_digest=None,
        scopes="",
        officer=actor,
        environment="",
        not_before=row.not_before,
        not_after=row.not_after,
        certificate_der=row.certificate_der,
        fingerprint_sha256=hashlib.sha256(row.certificate_der).hexdigest(),
        requested_by=actor,
        created_at=now,
        issued_at=row.created_at,
        revoked_at=now,
        revocation_reason=int(reason),
        revoked_by=actor,
    )
