"""The responder's narrow, read-only view of the CA database.

``StatusSource`` is all the responder may ask; ``SqlStatusSource`` answers it with plain
SELECTs on ``issuers``, ``certificates``, ``status_changes`` and ``ocsp_signers`` (it never
touches the CA's write path). Any database failure surfaces as ``CAError(DB_UNAVAILABLE)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Engine, Integer, String, bindparam, column, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection

from ca.errors import CAError, ErrorCode
from ca.store.models import Issuer, OcspSigner, StatusChange
from ca.store.read_replica import replica_lag
from ca.store.tables import certificates as cert_table
from ca.store.tables import ocsp_responses
from ca.store.types import UTCDateTime
from ocsp.decision import SerialStatus, status_from_record

T = TypeVar("T")

_SNAPSHOT = text(
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
    " FROM pg_current_snapshot() AS s"
)

#: the status lookup of ``SqlStatusSource.statuses``: plain SQL, no ORM statement built per call
STATUS_QUERY = (
    text(
        "SELECT serial_hex, status, revoked_at, revocation_reason, 0 AS is_ca "
        "FROM certificates WHERE issuer_id = :issuer AND serial_hex IN :serials "
        "UNION ALL "
        "SELECT serial_hex, 'issued', NULL, NULL, 1 FROM issuers WHERE serial_hex IN :serials "
        "AND (parent_id = :issuer OR (id = :issuer AND parent_id IS NULL))"
    )
    .bindparams(bindparam("serials", expanding=True))
    .columns(
        column("serial_hex", String),
        column("status", String),
        column("revoked_at", UTCDateTime()),
        column("revocation_reason", Integer),
        column("is_ca", Integer),
    )
)


@dataclass(frozen=True)
class IssuerInfo:
    """One of our CAs, with the CertID hashes that name it."""

    id: int
    name: str
    certificate_der: bytes
    name_hash_sha1: bytes
    key_hash_sha1: bytes
    name_hash_sha256: bytes
    key_hash_sha256: bytes
    parent_id: int | None
    serial_hex: str


@dataclass(frozen=True)
class SignerInfo:
    """A delegated responder certificate row."""

    id: int
    issuer_id: int
    key_label: str
    certificate_der: bytes
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class FeedHead:
    """Highest ids of the tables whose changes invalidate worker state (0 when empty).

    ``lag`` bounds how far what was read may trail the primary, in seconds: 0 on a primary
    (or SQLite); on a streaming replica, the age of the last transaction it replayed (the CA
    side commits a heartbeat several times a second, ``agentca db heartbeat``); ``None`` on a
    replica that has replayed nothing since it started, whose data is of unknown age.
    """

    status_change: int
    signer: int
    issuer: int
    lag: float | None = 0.0


@dataclass(frozen=True)
class Change:
    """One ``status_changes`` row."""

    id: int
    issuer_id: int
    serial_hex: str


class StatusSource(Protocol):
    """What the responder reads; implementations raise CAError(DB_UNAVAILABLE) on outage."""

    def head(self) -> FeedHead: ...
    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]: ...
    def issuers(self) -> list[IssuerInfo]: ...
    def signers(self, valid_at: datetime) -> list[SignerInfo]: ...
    def snapshot(self) -> Snapshot | None: ...
    def statuses(self, issuer_id: int, serials: Sequence[str]) -> dict[str, SerialStatus]: ...


@dataclass(frozen=True)
class StoredAnswer:
    """A pre-signed answer (``ocsp_responses`` row) that still reflects the certificate."""

    serial_hex: str
    cert_id_der: bytes
    der: bytes
    cert_status: str
    this_update: int
    next_update: int
    refresh_at: int
    signer_id: int


class AnswerStore(Protocol):
    """Pre-signed answers shared by every responder (decision 0038)."""

    def stored(self, issuer_id: int, serials: Sequence[str], now: int) -> dict[str, StoredAnswer]:
        """The pre-signed answers among ``serials`` not due for refresh at ``now`` and signed
        for the status the certificate has now (whether their signer is one to trust is the
        responder's call, ``Responder._usable``)."""
        ...


_r, _c = ocsp_responses.c, cert_table.c
#: ``SqlStatusSource.stored``: a row counts only if the certificate's status, revocation time
#: and reason are still those it was signed for, in the same snapshot (so a revocation the
#: presigner has not caught up with makes its row unusable at once).
#: the columns of a stored answer, joined to its certificate
STORED_COLUMNS = (
    _r.serial_hex,
    _r.cert_id_der,
    _r.der,
    _r.cert_status,
    _r.this_update,
    _r.next_update,
    _r.refresh_at,
    _r.signer_id,
)
STORED_JOIN = (_c.issuer_id == _r.issuer_id) & (_c.serial_hex == _r.serial_hex)
#: a row that still reflects its certificate and is not due for refresh at ``now``
STILL_TRUE = (
    _r.refresh_at > bindparam("now"),
    _r.cert_status == _c.status,
    _r.revoked_at.is_not_distinct_from(_c.revoked_at),
    _r.revocation_reason.is_not_distinct_from(_c.revocation_reason),
)
STORED_QUERY = (
    select(*STORED_COLUMNS)
    .join(cert_table, STORED_JOIN)
    .where(
        _r.issuer_id == bindparam("issuer"),
        _r.serial_hex.in_(bindparam("serials", expanding=True)),
        *STILL_TRUE,
    )
)


#: ``STORED_QUERY`` as PostgreSQL SQL for the prepared statement of ``SqlStatusSource.stored``
_STORED_PG = (
    "SELECT r.serial_hex, r.cert_id_der, r.der, r.cert_status, r.this_update, r.next_update,"
    " r.refresh_at, r.signer_id FROM ocsp_responses r JOIN certificates c"
    " ON c.issuer_id = r.issuer_id AND c.serial_hex = r.serial_hex"
    " WHERE r.issuer_id = %s AND r.serial_hex = ANY(%s)"
    " AND r.refresh_at > %s AND r.cert_status = c.status"
    " AND r.revoked_at IS NOT DISTINCT FROM c.revoked_at"
    " AND r.revocation_reason IS NOT DISTINCT FROM c.revocation_reason"
)


class SqlStatusSource:
    """``StatusSource`` over SQLAlchemy Core SELECTs (use a read-only role in production)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._store_conn: PoolProxiedConnection | None = None  # for stored() on PostgreSQL

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SQLAlchemyError as exc:
            raise CAError(ErrorCode.DB_UNAVAILABLE, "the database cannot be reached") from exc

    def head(self) -> FeedHead:
        query = select(
            select(func.max(StatusChange.id)).scalar_subquery(),
            select(func.max(OcspSigner.id)).scalar_subquery(),
            select(func.max(Issuer.id)).scalar_subquery(),
        )

        postgresql = self.engine.dialect.name == "postgresql"

        def run() -> FeedHead:
            with self.engine.connect() as conn:
                # the lag first, in its own statement: the head's snapshot, taken after it,
                # is at least as fresh as the lag says (read committed: a snapshot per statement)
                lag = replica_lag(conn) if postgresql else 0.0
                row = conn.execute(query).one()
            return FeedHead(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), lag)

        return self._run(run)

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]:
        extra = list(also)
        cond = StatusChange.id > after
        if extra:
            cond = or_(cond, StatusChange.id.in_(extra))
        query = (
            select(StatusChange.id, StatusChange.issuer_id, StatusChange.serial_hex)
            .where(cond)
            .order_by(StatusChange.id)
            .limit(limit)
        )

        def run() -> list[Change]:
            with self.engine.connect() as conn:
                return [Change(r[0], r[1], r[2]) for r in conn.execute(query)]

        return self._run(run)

    def issuers(self) -> list[IssuerInfo]:
        query = select(
            Issuer.id,
            Issuer.name,
            Issuer.certificate_der,
            Issuer.name_hash_sha1,
            Issuer.key_hash_sha1,
            Issuer.name_hash_sha256,
            Issuer.key_hash_sha256,
            Issuer.parent_id,
            Issuer.serial_hex,
        ).order_by(Issuer.id)

        def run() -> list[IssuerInfo]:
            with self.engine.connect() as conn:
                return [IssuerInfo(*r) for r in conn.execute(query)]

        return self._run(run)

    def signers(self, valid_at: datetime) -> list[SignerInfo]:
        """Signers not expired at ``valid_at`` and not retired, newest first (the CA side
        publishes a new one while the previous one is still valid; the responder uses the
        newest it can load, and trusts stored answers of all of them, decision 0047)."""
        query = (
            select(
                OcspSigner.id,
                OcspSigner.issuer_id,
                OcspSigner.key_label,
                OcspSigner.certificate_der,
                OcspSigner.not_before,
                OcspSigner.not_after,
            )
            .where(OcspSigner.not_after > valid_at, OcspSigner.retired_at.is_(None))
            .order_by(OcspSigner.id.desc())
        )

        def run() -> list[SignerInfo]:
            with self.engine.connect() as conn:
                return [SignerInfo(*r) for r in conn.execute(query)]

        return self._run(run)

    def snapshot(self) -> Snapshot | None:
        """The transactions running now, as ``pg_current_snapshot()`` bounds them (None on
        SQLite, which has one writer at a time): ``ocsp.change_feed`` gives up a hole in the
        feed only once the writers that may still fill it have ended."""
        if self.engine.dialect.name != "postgresql":
            return None

        def run() -> Snapshot:
            with self.engine.connect() as conn:
                row = conn.execute(_SNAPSHOT).one()
            return Snapshot(int(row[0]), int(row[1]))

        return self._run(run)

    def statuses(self, issuer_id: int, serials: Sequence[str]) -> dict[str, SerialStatus]:
        """Status of each serial under ``issuer_id``; CA certificates it issued are good.

        One statement (``STATUS_QUERY``), compiled once per number of serials: the
        ``certificates`` row by the unique (issuer_id, serial_hex) index, and any CA
        certificate with that serial that ``issuer_id`` issued (a row wins over a CA)."""
        wanted = list(dict.fromkeys(serials))

        def run() -> dict[str, SerialStatus]:
            found: dict[str, SerialStatus] = {}
            cas: set[str] = set()
            with self.engine.connect() as conn:
                rows = conn.execute(STATUS_QUERY, {"issuer": issuer_id, "serials": wanted})
                for serial, status, revoked_at, reason, is_ca in rows:
                    if is_ca:
                        cas.add(serial)
                    else:
                        found[serial] = status_from_record(status, revoked_at, reason)
            for serial in cas:
                found.setdefault(serial, status_from_record("issued", None, None))
            return {s: found.get(s, status_from_record(None, None, None)) for s in wanted}

        return self._run(run)

    def stored(self, issuer_id: int, serials: Sequence[str], now: int) -> dict[str, StoredAnswer]:
        """:class:`AnswerStore` over ``ocsp_responses`` (``STORED_QUERY``: primary-key rows
        joined to their certificate by its unique index).

        On PostgreSQL this is the responder's hottest query, so it runs as a server-side
        prepared statement on one connection kept for it in autocommit mode: one round trip,
        no BEGIN/ROLLBACK around it, no SQLAlchemy statement handling (a profile showed the
        pooled Core path spending twice the query's time in checkout, rollback and compile)."""
        if self.engine.dialect.name == "postgresql":
            return self._stored_pg(issuer_id, list(serials), now)
        params = {"issuer": issuer_id, "serials": list(serials), "now": now}

        def run() -> dict[str, StoredAnswer]:
            with self.engine.connect() as conn:
                return {r[0]: StoredAnswer(*r) for r in conn.execute(STORED_QUERY, params)}

        return self._run(run)

    def _stored_pg(self, issuer_id: int, serials: list[str], now: int) -> dict[str, StoredAnswer]:
        try:
            raw = self._store_conn
            if raw is None:
                raw = self.engine.raw_connection()
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
                self._store_conn = raw
            with raw.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(_STORED_PG, (issuer_id, serials, now), prepare=True)
                rows = cur.fetchall()
        except Exception as exc:
            broken, self._store_conn = self._store_conn, None
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.invalidate()
            raise CAError(ErrorCode.DB_UNAVAILABLE, "the database cannot be reached") from exc
        return {r[0]: StoredAnswer(r[0], bytes(r[1]), bytes(r[2]), *r[3:]) for r in rows}


@dataclass(frozen=True)
class Snapshot:
    """``pg_current_snapshot()`` bounds: every transaction with an id below ``xmin`` has
    ended; every one running now has an id below ``xmax``."""

    xmin: int
    xmax: int
