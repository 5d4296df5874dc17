"""The console's read queries: certificate search and the agents list with keyset
pagination, and the counts of the dashboard. Reads only, on the read sessions the API's list
endpoints use; pages follow a unique key (``id < cursor``, ``name > after``), never OFFSET,
so page N costs what page 1 does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from ca.errors import CAError, ErrorCode
from ca.policy import Registration
from ca.records import CertificateRecord, CertStatus
from ca.registry import registration_of
from ca.serials import parse_serial, serial_to_hex
from ca.store.certificate_rows import CertificateRow, record_of
from ca.store.models import AgentRegistration, CrlState
from ca.store.tables import certificates, issuers

PAGE_SIZE = 50


@dataclass(frozen=True)
class CertificateSearch:
    """What the certificates page searches by; ``None`` or empty means any."""

    serial: str | None = None
    agent: str | None = None
    officer: str | None = None
    model_type: str | None = None
    status: str | None = None

    def canonical_serial(self) -> str | None:
        if not self.serial:
            return None
        try:
            return serial_to_hex(parse_serial(self.serial))
        except ValueError as exc:
            raise CAError(ErrorCode.BAD_REQUEST, str(exc)) from exc


@dataclass(frozen=True)
class CertificatePage:
    """One page of records, newest first, and the cursor of the next page (or None)."""

    records: Sequence[CertificateRecord]
    next_cursor: int | None


def search_certificates(
    conn: Connection, search: CertificateSearch, before: int | None, limit: int = PAGE_SIZE
) -> CertificatePage:
    """Records matching ``search`` with ``id < before``, newest first (keyset pagination)."""
    c = certificates.c
    query = (
        select(certificates, issuers.c.name.label("issuer_name"))
        .join(issuers, issuers.c.id == c.issuer_id)
        .order_by(c.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(c.id < before)
    if search.status:
        try:
            query = query.where(c.status == CertStatus(search.status))
        except ValueError as exc:
            raise CAError(
                ErrorCode.BAD_REQUEST,
                f"status must be one of {', '.join(s.value for s in CertStatus)}",
            ) from exc
    serial = search.canonical_serial()
    for column, value in (
        (c.serial_hex, serial),
        (c.agent_name, search.agent),
        (c.officer, search.officer),
        (c.model_type, search.model_type),
    ):
        if value:
            query = query.where(column == value)
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    records = [record_of(cast(CertificateRow, r), r.issuer_name) for r in rows]
    return CertificatePage(records, rows[-1].id if more and rows else None)


@dataclass(frozen=True)
class Counts:
    """The dashboard's certificate counts at one instant."""

    live: int
    expiring: int
    revoked: int
    issued_last_hour: int
    issued_last_day: int
    last_crl: datetime | None


def dashboard_counts(conn: Connection, now: datetime, horizon: timedelta) -> Counts:
    """Live (issued, unexpired), expiring within ``horizon`` and revoked certificates (counts
    on the ``(status, not_after)`` index), enrollments in the last hour and day, and the
    newest full CRL time."""
    c = certificates.c
    issued = c.status == CertStatus.ISSUED

    def count(*where: object) -> int:
        query = select(func.count()).select_from(certificates).where(*where)  # type: ignore[arg-type]
        return int(conn.execute(query).scalar_one())

    return Counts(
        live=count(issued, c.not_after > now),
        expiring=count(issued, c.not_after > now, c.not_after <= now + horizon),
        revoked=count(c.status == CertStatus.REVOKED),
        issued_last_hour=count(c.issued_at > now - timedelta(hours=1)),
        issued_last_day=count(c.issued_at > now - timedelta(days=1)),
        last_crl=conn.execute(select(func.max(CrlState.last_full_at))).scalar(),
    )


@dataclass(frozen=True)
class AgentPage:
    """One page of registrations by name, and the name the next page starts after."""

    agents: Sequence[Registration]
    next_after: str | None


def agents_page(s: Session, after: str | None, limit: int = PAGE_SIZE) -> AgentPage:
    """Registrations with ``name > after`` in name order (keyset on the unique name)."""
    query = select(AgentRegistration).order_by(AgentRegistration.name).limit(limit + 1)
    if after is not None:
        query = query.where(AgentRegistration.name > after)
    rows = s.scalars(query).all()
    more = len(rows) > limit
    shown = [registration_of(r) for r in rows[:limit]]
    return AgentPage(shown, shown[-1].name if more and shown else None)
