"""The CA hierarchy: create the root and issuing CA, list them, and load the issuing CA.

The keys are generated in the key store (``hsm.KeyManager``) and never leave it; the
certificates are immutable ``issuers`` rows, so the loaded issuing CA and the chain are cached;
only a rollover (``ca.rollover``, decision 0033) makes another issuing CA the active one, and
each process notices it within :data:`ACTIVE_ISSUER_TTL`. The OID arc recorded with
the issuers (``ca.arcs``) is not: ``agentca oid-arc set`` may move it while the CA runs, so
issuance reads it in the reservation's transaction.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable
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
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca.arcs import ArcState, arc_setting, encode_previous
from ca.clock import Clock, utcnow
from ca.config import Settings
from ca.crl_publisher import delta_crl_url, full_crl_url
from ca.errors import CAError, ErrorCode
from ca.journal import Journal
from ca.lint import lint_freshest_crl, sign_ca_linted
from ca.oids import OidArc, arc_warnings
from ca.profile import (
    BACKDATE,
    CertificateUrls,
    build_root_certificate,
    issuing_certificate_builder,
    signature_hash,
)
from ca.queries import NOT_INITIALISED, read_arc_state
from ca.records import ISSUING_ROLE, ROOT_ROLE, CertStatus, IssuerRecord
from ca.serials import new_serial, serial_to_hex
from ca.store.models import Certificate, Issuer
from hsm.keymanager import KeyManager
from hsm.keytypes import KeyType

ROOT = ROOT_ROLE
ISSUING = ISSUING_ROLE
#: How long a process reuses the accepted arcs it read (CSR attributes, renewals): a move
#: (``agentca oid-arc set``) keeps the old arc accepted; a CSR under no cached arc is read
#: again under fresh arcs (the new arc of a move made in another process).
ACCEPTED_ARCS_TTL = 5.0
#: How long a process issues under the issuing CA it loaded before checking that it is still
#: the active one: after ``agentca ca rollover`` every process issues under the new one
#: within this many seconds.
ACTIVE_ISSUER_TTL = 5.0

log = logging.getLogger("agentca.hierarchy")


CA_KEY_TYPES = tuple(t for t in KeyType if t is not KeyType.ED25519)
"""Key types a root or issuing CA may have (agent keys may also be Ed25519)."""


@dataclass
class SigningIssuer:
    """The issuing CA as issuance uses it: its row id, certificate, key and published URLs."""

    id: int
    name: str
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    urls: CertificateUrls


class Hierarchy:
    """Creates and reads the root and issuing CA."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        keys: KeyManager,
        journal: Journal,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.keys = keys
        self.journal = journal
        self.clock = clock
        self._issuing: SigningIssuer | None = None
        self._chain: list[x509.Certificate] | None = None
        self._active_id: int | None = None
        self._active_checked_until = 0.0
        self._lock = threading.Lock()
        self._accepted: tuple[float, tuple[OidArc, ...]] | None = None

    def is_initialised(self) -> bool:
        with self.sessions() as s:
            return s.scalar(select(Issuer.id).where(Issuer.role == ISSUING).limit(1)) is not None

    def initialise(
        self,
        root_key_type: str,
        issuing_key_type: str,
        actor: str = "system",
        root_keys: KeyManager | None = None,
    ) -> list[IssuerRecord]:
        """Create the root and issuing CA: keys generated in the key store (the root's in
        ``root_keys``, its own token, when given), certificates recorded, one ledger entry."""
        if self.is_initialised():
            raise CAError(ErrorCode.CONFLICT, "the CA hierarchy already exists")
        try:
            root_type, issuing_type = KeyType.parse(root_key_type), KeyType.parse(issuing_key_type)
        except ValueError as exc:
            raise CAError(ErrorCode.UNSUPPORTED_KEY, str(exc)) from exc
        for role, key_type in (("root", root_type), ("issuing", issuing_type)):
            if key_type not in CA_KEY_TYPES:
                # Before any key is generated: WebPKI-profile verifiers (cryptography's, the
                # gateway's) refuse every chain under an Ed25519 CA key.
                raise CAError(
                    ErrorCode.UNSUPPORTED_KEY,
                    f"a {role} CA key cannot be {key_type}: verifiers refuse chains under it; "
                    f"choose one of {', '.join(str(t) for t in CA_KEY_TYPES)}",
                )
        s = self.settings
        arc = arc_setting(s.oid_arc)
        for warning in arc_warnings(arc):
            log.warning("%s", warning)
        now = self.clock()
        suffix = secrets.token_hex(4)
        root_label, issuing_label = f"agentca-root-{suffix}", f"agentca-issuing-{suffix}"
        root_key = (root_keys or self.keys).generate(root_label, root_type)
        root_cert = build_root_certificate(
            root_key,
            s.root_common_name,
            s.organization,
            new_serial(),
            now - BACKDATE,
            now + timedelta(days=s.root_validity_days),
        )
        issuing_key = self.keys.generate(issuing_label, issuing_type)
        issuing_cert = sign_issuing_certificate(
            s, issuing_key.public_key(), s.issuing_common_name, root_cert, root_key, now
        )
        with self.sessions.begin() as session:
            root = issuer_row(ROOT, ROOT, None, root_label, root_type.value, root_cert, now, arc)
            session.add(root)
            session.flush()
            issuing = issuer_row(
                ISSUING, ISSUING, root.id, issuing_label, issuing_type.value, issuing_cert, now, arc
            )
            session.add(issuing)
            self.journal.write(
                session,
                actor,
                "ca.initialised",
                {
                    "root": issuer_summary(root_cert, root_type.value),
                    "issuing": issuer_summary(issuing_cert, issuing_type.value),
                    "oid_arc": arc.dotted,
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
                    id=r.id,
                    active=bool(r.active),
                )
                for r in rows
            ]

    def issuer(self, name: str) -> IssuerRecord:
        for record in self.issuers():
            if record.name == name:
                return record
        raise CAError(ErrorCode.NOT_FOUND, f"no issuer named '{name}'")

    # -- the OID arc (ca.arcs, decision 0022) ---------------------------------------------------
    def arc_state(self, session: Session | None = None) -> ArcState:
        """The active issuing CA's current and previous arcs, read now."""
        if session is None:
            with self.sessions() as s:
                return read_arc_state(s)
        return read_arc_state(session)

    def issuer_arcs(self) -> dict[str, OidArc]:
        """Every issuer's recorded arc, by issuer name."""
        with self.sessions() as s:
            return {n: OidArc(a) for n, a in s.execute(select(Issuer.name, Issuer.oid_arc))}

    def accepted_arcs(self, fresh: bool = False) -> tuple[OidArc, ...]:
        """The arcs this CA accepts now: current, then previous ones still valid (cached for
        :data:`ACCEPTED_ARCS_TTL` seconds; ``fresh``: read now)."""
        cached = self._accepted
        if not fresh and cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        arcs = self.arc_state().accepted(self.clock())
        self._accepted = (time.monotonic() + ACCEPTED_ARCS_TTL, arcs)
        return arcs

    def set_oid_arc(self, arc: OidArc, actor: str = "system") -> ArcState:
        """Move the CA to ``arc``: new certificates are issued under it; the current arc stays
        accepted for ``max_validity_hours`` (the longest an agent certificate issued under it
        can still be valid), or until the last unexpired certificate expires if that is later
        (issued while ``max_validity_hours`` was higher). Recorded on every issuer row, with
        one ledger entry."""
        now = self.clock()
        with self.sessions.begin() as session:
            rows = session.scalars(select(Issuer).with_for_update()).all()
            before = self.arc_state(session)
            if before.current == arc:  # decided under the lock: two concurrent moves to one arc
                raise CAError(ErrorCode.CONFLICT, f"the CA already issues under the OID arc {arc}")
            last = session.scalar(
                select(func.max(Certificate.not_after)).where(
                    Certificate.status != CertStatus.FAILED, Certificate.not_after > now
                )
            )
            keep = max(self.settings.max_validity, (last - now) if last else timedelta(0))
            after = before.moved_to(arc, now, keep)
            for row in rows:
                row.oid_arc = after.current.dotted
                row.previous_oid_arcs = encode_previous(after.previous)
            self.journal.write(
                session,
                actor,
                "ca.oid_arc_changed",
                {
                    "from": before.current.dotted,
                    "to": after.current.dotted,
                    "accepted": [a.dotted for a in after.accepted(now)],
                },
                now,
            )
        self._accepted = None
        return after

    def chain(self) -> list[x509.Certificate]:
        """The active issuing CA certificate followed by the root (cached, see
        :meth:`signing_issuer`)."""
        self._follow_rollover()
        cached = self._chain
        if cached is not None:
            return cached
        records = self.issuers()
        by_name = {r.name: r for r in records}
        active = [r for r in records if r.role == ISSUING and r.active]
        if not active:
            raise CAError(ErrorCode.NOT_INITIALISED, NOT_INITIALISED)
        issuing = active[-1]
        parent = by_name[issuing.parent_name or ROOT]
        self._chain = [issuing.certificate, parent.certificate]
        return self._chain

    def issuing_certificates(self) -> list[x509.Certificate]:
        """Every issuing CA certificate, the active one first, then retired ones newest first
        (after a rollover, certificates of a retired one still verify under it)."""
        records = [r for r in self.issuers() if r.role == ISSUING]
        records.sort(key=lambda r: (not r.active, -r.id))
        return [r.certificate for r in records]

    def signing_issuer(self) -> SigningIssuer:
        """The active issuing CA with its key (loaded once, then cached; every
        :data:`ACTIVE_ISSUER_TTL` seconds the process checks whether a rollover made another
        issuing CA active, and then loads that one)."""
        self._follow_rollover()
        issuing = self._issuing
        if issuing is None:
            with self._lock:
                issuing = self._issuing
                if issuing is None:
                    issuing = self._issuing = self._load_issuing()
        return issuing

    def forget_issuing(self) -> None:
        """Drop the cached issuing CA and chain (this process just rolled the issuing CA)."""
        self._issuing = None
        self._chain = None
        self._active_checked_until = 0.0

    def _follow_rollover(self) -> None:
        if time.monotonic() < self._active_checked_until:
            return
        with self.sessions() as s:
            active = s.scalar(
                select(func.max(Issuer.id)).where(Issuer.role == ISSUING, Issuer.active)
            )
        if active != self._active_id:
            self._issuing = None
            self._chain = None
            self._active_id = active
        self._active_checked_until = time.monotonic() + ACTIVE_ISSUER_TTL

    def _load_issuing(self) -> SigningIssuer:
        with self.sessions() as s:
            row = s.scalar(
                select(Issuer)
                .where(Issuer.role == ISSUING, Issuer.active)
                .order_by(Issuer.id.desc())
                .limit(1)
            )
            if row is None:
                raise CAError(ErrorCode.NOT_INITIALISED, NOT_INITIALISED)
            parent = s.scalar(select(Issuer.name).where(Issuer.id == row.parent_id))
            if parent is not None:
                for warning in baked_crl_url_warnings(
                    x509.load_der_x509_certificate(row.certificate_der),
                    parent,
                    self.settings.effective_crl_base_url,
                ):
                    log.warning("%s", warning)
            base = self.settings.effective_public_base_url
            return SigningIssuer(
                id=row.id,
                name=row.name,
                certificate=x509.load_der_x509_certificate(row.certificate_der),
                key=self.keys.get(row.key_label),
                urls=CertificateUrls(
                    ocsp_url=self.settings.effective_ocsp_url,
                    ca_issuers_url=f"{base}/ca/{row.name}.der",
                    crl_url=full_crl_url(self.settings.effective_crl_base_url, row.name),
                    delta_crl_url=delta_crl_url(self.settings.effective_crl_base_url, row.name),
                ),
            )


def sign_issuing_certificate(
    settings: Settings,
    public_key: CertificatePublicKeyTypes,
    common_name: str,
    root_cert: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
) -> x509.Certificate:
    """An issuing CA certificate for ``public_key`` in the one issuing profile, signed by the
    root key once linted (decision 0023); ``agentca init`` and the rollover both use it."""
    root_delta = delta_crl_url(settings.effective_crl_base_url, ROOT)
    return sign_ca_linted(
        issuing_certificate_builder(
            public_key,
            common_name,
            settings.organization,
            new_serial(),
            now - BACKDATE,
            now + timedelta(days=settings.issuing_validity_days),
            root_cert,
            issuer_crl_url=full_crl_url(settings.effective_crl_base_url, ROOT),
            issuer_delta_crl_url=root_delta,
        ),
        root_key,
        signature_hash(root_key),
        lambda linted: lint_freshest_crl(linted, root_delta),
    )


def baked_crl_url_warnings(cert: x509.Certificate, parent: str, crl_base_url: str) -> list[str]:
    """Where an issuing CA certificate's CRL URLs (fixed at ``agentca init``) are not those of
    ``crl_base_url`` now: the publisher's complete CRL of ``parent`` names its delta under the
    new base, while validators fetch what the certificate names (decision 0023)."""
    out = []
    wanted: tuple[tuple[type[x509.CRLDistributionPoints | x509.FreshestCRL], str, str], ...] = (
        (x509.CRLDistributionPoints, full_crl_url(crl_base_url, parent), "CRL distribution point"),
        (x509.FreshestCRL, delta_crl_url(crl_base_url, parent), "Freshest CRL"),
    )
    for kind, url, what in wanted:
        try:
            points: Iterable[x509.DistributionPoint] = cert.extensions.get_extension_for_class(
                kind
            ).value
        except x509.ExtensionNotFound:
            continue  # a hierarchy created before Freshest CRL (decision 0023)
        except ValueError as exc:  # malformed extensions: say so, do not stop the CA loading
            out.append(f"the issuing CA certificate's extensions are malformed: {exc}")
            break
        names = [
            n.value
            for p in points
            for n in (p.full_name or [])
            if isinstance(n, x509.UniformResourceIdentifier)
        ]
        if url not in names:
            out.append(
                f"crl_base_url changed since agentca init: the issuing CA certificate's {what} "
                f"is {', '.join(names) or 'empty'}, crl_base_url now gives {url}; keep serving "
                f"the {parent} CRLs at the old URL too, or strict validators refuse the chain"
            )
    return out


def issuer_row(
    name: str,
    role: str,
    parent_id: int | None,
    key_label: str,
    key_type: str,
    cert: x509.Certificate,
    now: datetime,
    arc: OidArc,
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
        oid_arc=arc.dotted,
        previous_oid_arcs="",
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate, lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def issuer_summary(cert: x509.Certificate, key_type: str) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": serial_to_hex(cert.serial_number),
        "key_type": key_type,
        "certificate_sha256": fingerprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
