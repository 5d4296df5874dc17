"""Create and rotate delegated responder certificates (their keys generated in the HSM).

The only writer of ``ocsp_signers``. Concurrent rotators (serve masters, workers, the CLI) are
serialised per issuer by a transaction-scoped advisory lock on PostgreSQL; on SQLite a
duplicate is possible and harmless because every reader uses the newest signer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ca.errors import CAError, ErrorCode
from ca.ledger.store import append as ledger_append
from ca.profile import BACKDATE
from ca.serials import new_serial
from ca.store.models import Issuer, OcspSigner
from ocsp.options import OcspOptions
from ocsp.signer import build_responder_certificate, needs_rotation

_LOCK_CLASS = 0x0C5B  # first key of pg_advisory_xact_lock(int, int): "OCSP signer"


class KeySource(Protocol):
    """What rotation needs from ``hsm.KeyStore``."""

    def generate(self, label: str, key_type: Any) -> Any: ...
    def get(self, label: str) -> Any: ...


@dataclass(frozen=True)
class RotationResult:
    """The newest signer of one issuer after ``ensure``, and whether it was just created."""

    issuer_name: str
    signer_id: int
    key_label: str
    not_after: datetime
    created: bool


class SignerRotator:
    """Makes sure every issuer has a delegated responder certificate that is not expiring."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        keys: KeySource,
        options: OcspOptions,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.keys = keys
        self.options = options
        self.clock = clock

    def ensure_all(self, force: bool = False) -> list[RotationResult]:
        """``ensure`` for every issuer, root first."""
        with self.sessions() as s:
            ids = list(s.scalars(select(Issuer.id).order_by(Issuer.id)))
        if not ids:
            raise CAError(
                ErrorCode.NOT_INITIALISED, "the CA is not initialised; run 'agentca init'"
            )
        return [self.ensure(i, force) for i in ids]

    def ensure(self, issuer_id: int, force: bool = False) -> RotationResult:
        """Create a signer for ``issuer_id`` if it has none, it is expiring, or ``force``."""
        from hsm import KeyType

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
            if (
                newest is not None
                and not force
                and not needs_rotation(
                    newest.not_before, newest.not_after, now, self.options.signer_renew_fraction
                )
            ):
                return RotationResult(
                    issuer.name, newest.id, newest.key_label, newest.not_after, False
                )
            label = f"agentca-ocsp-{issuer.name}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
            key = self.keys.generate(label, KeyType.parse(self.options.signer_key_type))
            issuer_cert = x509.load_der_x509_certificate(issuer.certificate_der)
            cert = build_responder_certificate(
                key.public_key(),
                new_serial(),
                now - BACKDATE,
                now + self.options.signer_validity,
                issuer_cert,
                self.keys.get(issuer.key_label),
            )
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
                },
                now,
            )
            return RotationResult(issuer.name, row.id, label, row.not_after, True)
