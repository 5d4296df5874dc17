"""Certificate rows to :class:`CertificateRecord`, and the certificate list, in Core only.

One mapping serves the ORM (``ca.queries``) and Core rows alike, and the list query runs on a
plain connection, so ``agentca list`` starts without importing ``sqlalchemy.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, cast

from sqlalchemy import select

from ca.records import CertificateRecord, CertStatus
from ca.revocation import RevocationReason
from ca.store.tables import certificates, issuers

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ca.requests import CertificateFilter


class CertificateRow(Protocol):
    """What a ``certificates`` row offers, as an ORM object or a Core row."""

    @property
    def serial_hex(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def agent_name(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def model_digest(self) -> str: ...
    @property
    def prompt_digest(self) -> str: ...
    @property
    def config_digest(self) -> str | None: ...
    @property
    def scopes(self) -> str: ...
    @property
    def officer(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def issued_at(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def revocation_reason(self) -> int | None: ...
    @property
    def requested_by(self) -> str: ...
    @property
    def fingerprint_sha256(self) -> str | None: ...
    @property
    def certificate_der(self) -> bytes | None: ...


def record_of(row: CertificateRow, issuer_name: str) -> CertificateRecord:
    """The value object for one ``certificates`` row issued by ``issuer_name``."""
    return CertificateRecord(
        issuer_name=issuer_name,
        serial_hex=row.serial_hex,
        status=CertStatus(row.status),
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


def list_records(conn: Connection, flt: CertificateFilter) -> Sequence[CertificateRecord]:
    """Certificate records matching ``flt``, newest first (an unknown status matches none)."""
    c = certificates.c
    query = (
        select(certificates, issuers.c.name.label("issuer_name"))
        .join(issuers, issuers.c.id == c.issuer_id)
        .order_by(c.id.desc())
        .limit(max(1, flt.limit))
    )
    if flt.status is not None:
        try:
            query = query.where(c.status == CertStatus(flt.status))
        except ValueError:
            return []
    for column, value in (
        (c.agent_name, flt.agent_name),
        (c.officer, flt.officer),
        (c.model_digest, flt.model_digest),
        (c.prompt_digest, flt.prompt_digest),
    ):
        if value is not None:
            query = query.where(column == value)
    return [
        record_of(cast(CertificateRow, row), row.issuer_name) for row in conn.execute(query).all()
    ]
