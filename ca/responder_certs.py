"""Delegated OCSP responder certificates, issued and rotated on the CA side (decision 0018).

The only writer of ``ocsp_signers``. The key is generated in the responder's own token
(``ca.responder_token``), the certificate is signed with the issuing CA's key from the CA
token, and a ledger entry records it. Rotation runs ahead of expiry with overlap: a new signer
is published once less than ``renew_fraction`` of the newest one's lifetime remains, while
that one is still valid, and the responder switches to the newest valid signer it can load.
Responders keep serving pre-signed answers of the older, still valid ones (decision 0047)
unless a rotation retires them (``retire_previous``: a key suspected, a certificate wrong).

Concurrent rotators (``agentca run``, the CLI, first-run setup) are serialised per issuer by a
transaction-scoped advisory lock on PostgreSQL; on SQLite a duplicate is possible and harmless
because the responder uses the newest signer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import utcnow
from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append as ledger_append
from ca.profile import BACKDATE, signature_hash, signing_only_key_usage
from ca.serials import new_serial
from ca.store.models import Issuer, OcspSigner
from hsm import KeyManager, KeyStore, KeyType, SigningKey

_LOCK_CLASS = 0x0C5B  # first key of pg_advisory_xact_lock(int, int): "OCSP signer"


# ---- the certificate --------------------------------------------------------------------------
def responder_name(issuer: x509.Certificate, serial: int) -> x509.Name:
    """``O`` of the issuer, ``CN=<issuer CN> OCSP Responder <serial tail>``."""
    cns = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = issuer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    cn = f"{str(cns[0].value) if cns else 'agentca'} OCSP Responder {serial & 0xFFFFFFFF:08x}"
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(orgs[0].value))] if orgs else []
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])


def build_responder_certificate(
    public_key: CertificatePublicKeyTypes,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    issuer_certificate: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    """A short-lived delegated responder certificate (RFC 6960 4.2.2.2) issued by its CA.

    KeyUsage digitalSignature (critical), EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck (so
    clients do not ask for the responder's own status), SKI/AKI; not a CA. The validity is
    clipped to the issuer's.
    """
    ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(responder_name(issuer_certificate, serial))
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(signing_only_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
            critical=False,
        )
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def needs_rotation(
    not_before: datetime, not_after: datetime, now: datetime, renew_fraction: float
) -> bool:
    """True once less than ``renew_fraction`` of the signer's lifetime remains."""
    lifetime = (not_after - not_before).total_seconds()
    return (not_after - now).total_seconds() < lifetime * renew_fraction


# ---- rotation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponderCertPolicy:
    """Lifetime, overlap and key type of responder certificates."""

    validity: timedelta = timedelta(hours=48)
    renew_fraction: float = 0.5  # publish a new one when less than this share remains
    key_type: str = "ec-p256"


@dataclass(frozen=True)
class RotationResult:
    """The newest signer of one issuer after ``ensure``, and whether it was just created."""

    issuer_name: str
    signer_id: int
    key_label: str
    not_after: datetime
    created: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "issuer": self.issuer_name,
            "signer_id": self.signer_id,
            "key_label": self.key_label,
            "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "created": self.created,
        }


class ResponderCertRotator:
    """Keeps a current delegated responder certificate for every issuer.

    ``ca_keys`` holds the issuers' keys; ``responder_keys`` is the responder's token, where
    the new keys are generated (never the CA token).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ca_keys: KeyManager,
        responder_keys: KeyManager,
        policy: ResponderCertPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.ca_keys = ca_keys
        self.responder_keys = responder_keys
        self.policy = policy or ResponderCertPolicy()
        self.clock = clock

    def ensure_all(
        self, force: bool = False, skip_root: bool = False, retire_previous: bool = False
    ) -> list[RotationResult]:
        """``ensure`` for every issuer, root first (``skip_root``: the root's key is offline,
        its responder certificate is made at the root key ceremony, ``ca.ceremony``)."""
        with self.sessions() as s:
            rows = list(s.execute(select(Issuer.id, Issuer.parent_id).order_by(Issuer.id)))
        if not rows:
            raise CAError(
                ErrorCode.NOT_INITIALISED, "the CA is not initialised; run 'agentca init'"
            )
        ids = [i for i, parent in rows if not (skip_root and parent is None)]
        return [self.ensure(i, force, retire_previous) for i in ids]

    def _current(self, newest: OcspSigner | None, now: datetime) -> bool:
        if newest is None:
            return False
        if needs_rotation(newest.not_before, newest.not_after, now, self.policy.renew_fraction):
            return False
        # A signer whose key is not in the responder token (one made before decision 0018,
        # in the CA token) cannot be used by the responder: replace it.
        return self.responder_keys.exists(newest.key_label)

    def ensure(
        self, issuer_id: int, force: bool = False, retire_previous: bool = False
    ) -> RotationResult:
        """Publish a signer for ``issuer_id`` if it has none, its newest is due (or its key is
        not in the responder token), or ``force``. ``retire_previous`` (implies ``force``):
        in the same transaction, retire every older signer of the issuer, so that no
        responder signs with it or serves an answer it signed (decision 0047)."""
        force = force or retire_previous
        with self.sessions.begin() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(
                    text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK_CLASS, "b": issuer_id}
                )
            issuer = s.get(Issuer, issuer_id)
            if issuer is None:
                raise CAError(ErrorCode.NOT_FOUND, f"no issuer with id {issuer_id}")
            now = self.clock()
            newest_id = s.scalar(
                select(func.max(OcspSigner.id)).where(OcspSigner.issuer_id == issuer_id)
            )
            newest = s.get(OcspSigner, newest_id) if newest_id is not None else None
            if newest is not None and not force and self._current(newest, now):
                return RotationResult(
                    issuer.name, newest.id, newest.key_label, newest.not_after, False
                )
            label = f"agentca-ocsp-{issuer.name}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
            key = self.responder_keys.generate(label, KeyType.parse(self.policy.key_type))
            issuer_cert = x509.load_der_x509_certificate(issuer.certificate_der)
            cert = build_responder_certificate(
                key.public_key(),
                new_serial(),
                now - BACKDATE,
                now + self.policy.validity,
                issuer_cert,
                self.ca_keys.get(issuer.key_label),
            )
            _refuse_unverifiable(cert, issuer_cert, self.responder_keys.get(label), issuer.name)
            row = OcspSigner(
                issuer_id=issuer_id,
                key_label=label,
                certificate_der=cert.public_bytes(serialization.Encoding.DER),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                created_at=now,
            )
            s.add(row)
            s.flush()
            retired: list[str] = []
            if retire_previous:
                retired = list(
                    s.scalars(
                        update(OcspSigner)
                        .where(
                            OcspSigner.issuer_id == issuer_id,
                            OcspSigner.id < row.id,
                            OcspSigner.retired_at.is_(None),
                        )
                        .values(retired_at=now)
                        .returning(OcspSigner.key_label),
                        execution_options={"synchronize_session": False},
                    )
                )
            ledger_append(
                s,
                "system",
                "ocsp.signer.rotated",
                {
                    "issuer": issuer.name,
                    "key_label": label,
                    "serial": format(cert.serial_number, "x"),
                    "certificate_sha256": cert.fingerprint(hashes.SHA256()).hex(),
                    "not_after": row.not_after.isoformat(),
                    "forced": force,
                    **({"retired": sorted(retired)} if retire_previous else {}),
                },
                now,
            )
            return RotationResult(issuer.name, row.id, label, row.not_after, True)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _refuse_unverifiable(
    cert: x509.Certificate, issuer_cert: x509.Certificate, key: SigningKey, issuer_name: str
) -> None:
    """Before publishing: the certificate verifies under its issuer, and the key the responder
    token holds under the new label is the certificate's key. A key store that hands out a
    stale handle (the module re-initialisation of decision 0018) would otherwise publish a
    certificate no client can verify, or one for another key than the responder signs with;
    refused, nothing is written (the orphan responder key is harmless)."""
    try:
        cert.verify_directly_issued_by(issuer_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CAError(
            ErrorCode.HSM_FAILURE,
            f"the responder certificate for {issuer_name} does not verify under its issuer's "
            "certificate (the CA token signed with another key); nothing was published",
        ) from None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CAError(
            ErrorCode.HSM_FAILURE,
            f"the responder token's new key for {issuer_name} is not the one certified; "
            "nothing was published",
        )


def open_responder_key_store(settings: Settings) -> KeyStore:
    """The responder's token as the CA side uses it (a managed token is created if missing).

    Call it before this process first uses PKCS#11: a token created by another process
    while the module is loaded is only seen after re-initialising the module, which other
    open key stores of the process do not survive cleanly.
    """
    from ca.responder_token import responder_token_config

    return KeyStore(responder_token_config(settings, create=True))


def ensure_responder_certs(
    settings: Settings,
    sessions: sessionmaker[Session],
    ca_keys: KeyManager,
    force: bool = False,
    policy: ResponderCertPolicy | None = None,
    responder_keys: KeyStore | None = None,
    retire_previous: bool = False,
) -> list[RotationResult]:
    """Rotate (or with ``force`` replace) every issuer's responder certificate where due
    (``responder_keys``: the responder token already opened, see below; closed at the end;
    ``retire_previous``: see ``ResponderCertRotator.ensure``).
    The root's is left to the ceremony while its key is offline (``root_token_label``)."""
    if responder_keys is None:
        responder_keys = open_responder_key_store(settings)
    try:
        rotator = ResponderCertRotator(sessions, ca_keys, responder_keys, policy)
        return rotator.ensure_all(force, settings.root_offline, retire_previous)
    finally:
        responder_keys.close()


def rotate_responder_certs(
    settings: Settings,
    force: bool = False,
    policy: ResponderCertPolicy | None = None,
    retire_previous: bool = False,
) -> list[RotationResult]:
    """``ensure_responder_certs`` on this deployment's database and CA token, then close."""
    from ca.keysetup import guard_signing, open_key_store
    from ca.store.db import make_engine, make_session_factory, require_schema

    engine = make_engine(settings.effective_database_url)
    try:
        require_schema(engine)
        responder_keys = open_responder_key_store(settings)  # first: see its docstring
        keys = open_key_store(settings)
        guard_signing(keys, engine, settings)  # no certificate while the clock is off
        try:
            return ensure_responder_certs(
                settings,
                make_session_factory(engine),
                keys,
                force,
                policy,
                responder_keys,
                retire_previous,
            )
        finally:
            keys.close()
    finally:
        engine.dispose()


class FirstResponderCerts:
    """First-run setup's part (``ca.wiring.ensure_initialised``): ``prepare`` opens (and for a
    managed SoftHSM2 creates) the responder token before the hierarchy's keys are made, see
    :func:`open_responder_key_store`; ``publish`` then issues the first responder
    certificates. Nothing in dev mode (``key_store = "software"``): the OCSP responder, its
    own process, cannot use in-memory CA keys and is not part of it."""

    def __init__(self, settings: Settings, responder_keys: KeyStore | None) -> None:
        self.settings = settings
        self.responder_keys = responder_keys

    @classmethod
    def prepare(cls, settings: Settings) -> FirstResponderCerts:
        if settings.key_store == "software":
            return cls(settings, None)
        return cls(settings, open_responder_key_store(settings))

    def publish(self, sessions: sessionmaker[Session], ca_keys: KeyManager) -> None:
        if self.responder_keys is not None:
            ensure_responder_certs(
                self.settings, sessions, ca_keys, responder_keys=self.responder_keys
            )
