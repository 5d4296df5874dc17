"""Certificate lookups and the mapping of ``certificates`` rows to :class:`CertificateRecord`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from ca.arcs import ArcState, decode_previous
from ca.errors import CAError, ErrorCode
from ca.oids import OidArc
from ca.records import ISSUING_ROLE, ROOT_ROLE, CertificateRecord
from ca.requests import CertificateFilter
from ca.serials import parse_serial, serial_to_hex
from ca.store.certificate_rows import list_records, record_of
from ca.store.db import lock_for_write
from ca.store.models import Certificate, Issuer


class CertificateQueries:
    """Reads certificate records; never writes."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get(self, serial_hex: str, issuer_name: str | None = None) -> CertificateRecord:
        """One certificate record by serial (hex), optionally within one issuer."""
        with self.sessions() as s:
            return to_record(find(s, serial_hex, issuer_name))

    def list(self, flt: CertificateFilter) -> Sequence[CertificateRecord]:
        """Certificate records matching ``flt``, newest first (an unknown status matches none)."""
        with self.sessions() as s:
            return list_records(s.connection(), flt)


def find(
    s: Session, serial_hex: str, issuer_name: str | None, for_update: bool = False
) -> Certificate:
    """The row for ``serial_hex`` (any case, leading zeros allowed), with its issuer loaded.

    ``for_update`` locks the certificate row only: locking its issuer would serialise all (on
    SQLite, which has no row locks, it takes the database write lock: ``lock_for_write``).
    """
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
    if for_update:
        lock_for_write(s)
        query = query.with_for_update(of=Certificate)
    rows = s.scalars(query).all()
    if not rows:
        raise CAError(ErrorCode.NOT_FOUND, f"no certificate with serial {canonical}")
    if len(rows) > 1:
        raise CAError(ErrorCode.CONFLICT, f"serial {canonical} exists under several issuers")
    return rows[0]


def to_record(row: Certificate, issuer_name: str | None = None) -> CertificateRecord:
    """The value object for a row (``issuer_name`` saves loading the issuer when known)."""
    return record_of(row, issuer_name if issuer_name is not None else row.issuer.name)


NOT_INITIALISED = "the CA is not initialised; run 'agentca init'"


def read_arc_state(session: Session) -> ArcState:
    """The active issuing CA's current and previous OID arcs (``issuers`` only: no HSM)."""
    row = session.execute(
        select(Issuer.oid_arc, Issuer.previous_oid_arcs).where(
            Issuer.role == ISSUING_ROLE, Issuer.active
        )
    ).first()
    if row is None:
        raise CAError(ErrorCode.NOT_INITIALISED, NOT_INITIALISED)
    return ArcState(OidArc(row.oid_arc), decode_previous(row.previous_oid_arcs))


def issuer_chain_pem(
    sessions: sessionmaker[Session], root_only: bool = False, all_issuing: bool = False
) -> str:
    """The active issuing CA certificate then the root, in PEM (or the root only; or with
    ``all_issuing`` every unexpired issuing CA, the active one first, then the root)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca.clock import utcnow

    with sessions() as s:
        found = s.execute(
            select(Issuer.role, Issuer.active, Issuer.not_after, Issuer.certificate_der).order_by(
                Issuer.id.desc()
            )
        ).all()
    now = utcnow()
    active = [r.certificate_der for r in found if r.role == ISSUING_ROLE and r.active]
    roots = [r.certificate_der for r in found if r.role == ROOT_ROLE]
    if not active or not roots:
        raise CAError(ErrorCode.NOT_INITIALISED, NOT_INITIALISED)
    if root_only:
        ders = roots[:1]
    elif all_issuing:
        retired = [
            r.certificate_der
            for r in found
            if r.role == ISSUING_ROLE and not r.active and r.not_after > now
        ]
        ders = [active[0], *retired, roots[0]]
    else:
        ders = [active[0], roots[0]]
    pems = (x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in ders)
    return "".join(p.decode() for p in pems)
