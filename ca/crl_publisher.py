"""The CRL publisher: the shell around :mod:`ca.crl` (database, HSM keys, publish directory).

Per issuer it writes ``<issuer>.crl`` (complete CRL, DER) and ``<issuer>-delta.crl`` (delta CRL)
into the publish directory, atomically (temporary file, fsync, ``os.replace``), and never
replaces a file with one of a lower CRL number. See docs/decisions/0003-crl-publisher.md.

- Numbers: ``UPDATE crl_state SET crl_number = crl_number + 1 ... RETURNING`` in its own short
  transaction, so complete and delta CRLs share one strictly increasing sequence per issuer,
  unique across concurrent publishers. A number whose CRL could not be installed (full disk,
  HSM failure) is given back when no later one was taken, so a failing ``--loop`` does not
  spend numbers; a gap left otherwise is harmless (RFC 5280 5.2.3 asks only for a
  monotonically increasing sequence, and no relying party ever saw the lost number).
- Write failures are ``CAError``s naming the issuer, the file and what is full
  (``storage-full`` for ENOSPC); the installed CRL is never touched before the new one is
  complete, so it stays intact and served. ``run`` backs off exponentially on failures.
- Complete CRL: every revoked certificate (holds included) of the issuer that was still valid
  when the previous complete CRL was issued, streamed from the database with ``yield_per``.
- Delta CRL: every certificate whose status changed after the base CRL's change watermark
  (``status_changes`` ids): current revocations and holds, and ``removeFromCRL`` for releases.

Why one module of this size: one publish cycle (full and delta, CRL numbers and their give-back,
atomic install, the schedule) whose steps must happen in this order; it reads as one procedure.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from sqlalchemy import DateTime, and_, func, select, text, type_coerce, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.crl import BuiltCrl, CrlSpec, EntryLike, build_crl, read_crl_info
from ca.errors import CAError, ErrorCode, as_ca_error, is_storage_full, storage_full
from ca.revocation import RevocationReason
from ca.store.models import Certificate, CertStatus, CrlState, Issuer, StatusChange
from hsm import KeyManager

log = logging.getLogger(__name__)

PublishMode = Literal["auto", "full", "delta"]
YIELD_PER = 20_000


@dataclass(frozen=True)
class PublishedCrl:
    """One CRL written (or, when ``replaced`` is False, superseded by a newer file)."""

    issuer: str
    kind: Literal["full", "delta"]
    number: int
    base_number: int | None
    this_update: datetime
    next_update: datetime
    entries: int
    size: int
    path: Path
    replaced: bool

    def describe(self) -> str:
        base = f" (base #{self.base_number})" if self.base_number is not None else ""
        state = "" if self.replaced else " [not installed: a newer CRL is already published]"
        return (
            f"{self.issuer}: {self.kind} CRL #{self.number}{base}, {self.entries} entries, "
            f"{self.size} bytes -> {self.path}, next update {self.next_update.isoformat()}{state}"
        )


@dataclass
class _IssuerCA:
    id: int
    name: str
    certificate: x509.Certificate
    key_label: str
    key: CertificateIssuerPrivateKeyTypes | None = None


def full_name(issuer: str) -> str:
    """File name of an issuer's complete CRL (also the last segment of its CDP URL)."""
    return f"{issuer}.crl"


def delta_name(issuer: str) -> str:
    """File name of an issuer's delta CRL (the Freshest CRL URL's last segment)."""
    return f"{issuer}-delta.crl"


def full_crl_url(crl_base_url: str, issuer: str) -> str:
    """URL of an issuer's complete CRL: the CRL distribution point of what it signs."""
    return f"{crl_base_url.rstrip('/')}/{full_name(issuer)}"


def delta_crl_url(crl_base_url: str, issuer: str) -> str:
    """URL of an issuer's delta CRL: the Freshest CRL of its complete CRLs and of what it
    signs (one place names it for both; RFC 5280 4.2.1.15, 5.2.6)."""
    return f"{crl_base_url.rstrip('/')}/{delta_name(issuer)}"


class CrlPublisher:
    """Builds, signs and installs complete and delta CRLs for the CA's issuers."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        keys: KeyManager,
        publish_dir: Path,
        crl_base_url: str,
        interval: timedelta = timedelta(hours=1),
        clock: Clock = utcnow,
        yield_per: int = YIELD_PER,
    ) -> None:
        if interval <= timedelta(0):
            raise CAError(ErrorCode.BAD_REQUEST, "the CRL interval must be positive")
        self.sessions = sessions
        self.keys = keys
        self.publish_dir = Path(publish_dir)
        self.crl_base_url = crl_base_url.rstrip("/")
        self.interval = interval
        self.clock = clock
        self.yield_per = yield_per
        self._issuers: dict[str, _IssuerCA] = {}

    @classmethod
    def from_runtime(cls, rt: Any, interval: timedelta | None = None) -> CrlPublisher:
        """A publisher for a :class:`ca.wiring.Runtime` and its settings."""
        s = rt.settings
        return cls(
            rt.sessions,
            rt.keys,
            s.effective_crl_publish_dir,
            s.effective_crl_base_url,
            interval or timedelta(seconds=s.crl_interval_seconds),
            rt.authority.clock,
        )

    # -- issuers --------------------------------------------------------------------------------
    def issuer_names(self) -> list[str]:
        """Issuers whose certificate has not expired (they still need CRLs), root first."""
        now = self.clock()
        with self.sessions() as s:
            rows = s.execute(
                select(Issuer.name).where(Issuer.not_after > now).order_by(Issuer.id)
            ).all()
        names = [r[0] for r in rows]
        if not names:
            raise CAError(
                ErrorCode.NOT_INITIALISED, "the CA is not initialised; run 'agentca init'"
            )
        return names

    def _issuer(self, name: str) -> _IssuerCA:
        ca = self._issuers.get(name)
        if ca is None:
            with self.sessions() as s:
                row = s.scalar(select(Issuer).where(Issuer.name == name))
                if row is None:
                    raise CAError(ErrorCode.NOT_FOUND, f"no issuer named '{name}'")
                ca = _IssuerCA(
                    row.id,
                    row.name,
                    x509.load_der_x509_certificate(row.certificate_der),
                    row.key_label,
                )
            self._issuers[name] = ca
        if ca.key is None:
            ca.key = self.keys.get(ca.key_label)
        return ca

    # -- database -------------------------------------------------------------------------------
    def latest_change_id(self) -> int:
        """The highest ``status_changes`` id (0 when there is none)."""
        with self.sessions() as s:
            return int(s.scalar(select(func.coalesce(func.max(StatusChange.id), 0))) or 0)

    def _watermark(self) -> int:
        """A change id W such that every change with id <= W has committed.

        On PostgreSQL ids come from a sequence and may commit out of order: a brief SHARE lock
        waits for in-flight writers of ``status_changes`` (SQLite has one writer at a time).
        """
        with self.sessions.begin() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("LOCK TABLE status_changes IN SHARE MODE"))
            return int(s.scalar(select(func.coalesce(func.max(StatusChange.id), 0))) or 0)

    def _state(self, issuer_id: int) -> CrlState | None:
        with self.sessions() as s:
            return s.get(CrlState, issuer_id)

    def next_number(self, issuer_id: int) -> int:
        """Take the issuer's next CRL number (atomic; unique across concurrent publishers)."""
        with self.sessions.begin() as s:
            dialect = s.get_bind().dialect.name
            values = {"issuer_id": issuer_id, "crl_number": 0, "last_change_id": 0}
            if dialect == "postgresql":
                s.execute(pg_insert(CrlState).values(**values).on_conflict_do_nothing())
            elif dialect == "sqlite":
                s.execute(sqlite_insert(CrlState).values(**values).on_conflict_do_nothing())
            elif s.get(CrlState, issuer_id) is None:  # pragma: no cover - other databases
                s.add(CrlState(**values))
                s.flush()
            number = s.execute(
                update(CrlState)
                .where(CrlState.issuer_id == issuer_id)
                .values(crl_number=CrlState.crl_number + 1)
                .returning(CrlState.crl_number)
            ).scalar_one()
        return int(number)

    def give_back(self, issuer_id: int, number: int) -> bool:
        """Return ``number`` to the sequence when it is still the last one taken (its CRL was
        never installed, so no one has seen it). False when a later number was taken or the
        database cannot be reached; the gap is then harmless (module docstring)."""
        try:
            with self.sessions.begin() as s:
                result = s.execute(
                    update(CrlState)
                    .where(CrlState.issuer_id == issuer_id, CrlState.crl_number == number)
                    .values(crl_number=number - 1)
                )
            return bool(getattr(result, "rowcount", 0))
        except Exception as exc:  # already failing: report the first error, not this one
            log.warning("CRL number %d not given back: %s", number, as_ca_error(exc).detail)
            return False

    def _record_full(self, issuer_id: int, number: int, at: datetime, watermark: int) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(CrlState)
                .where(CrlState.issuer_id == issuer_id)
                .where((CrlState.last_full_number.is_(None)) | (CrlState.last_full_number < number))
                .values(last_full_number=number, last_full_at=at, last_change_id=watermark)
            )

    # -- publication ----------------------------------------------------------------------------
    def full_due(self, name: str) -> bool:
        """True when the issuer has no complete CRL yet, or its interval has passed."""
        ca = self._issuer(name)
        state = self._state(ca.id)
        if state is None or state.last_full_at is None or state.last_full_number is None:
            return True
        if not (self.publish_dir / full_name(name)).exists():
            return True
        return self.clock() >= state.last_full_at + self.interval

    def publish(self, name: str, mode: PublishMode = "auto") -> list[PublishedCrl]:
        """Publish for one issuer: ``full`` (complete CRL, then a fresh delta on it),
        ``delta`` (a delta on the last complete CRL), or ``auto`` (full when due)."""
        ca = self._issuer(name)
        state = self._state(ca.id)
        has_base = state is not None and state.last_full_number is not None
        if mode == "full" or not has_base or (mode == "auto" and self.full_due(name)):
            full, watermark = self._publish_full(ca, state)
            if not full.replaced:
                return [full]
            return [full, self._publish_delta(ca, full.number, watermark)]
        assert state is not None and state.last_full_number is not None
        return [self._publish_delta(ca, state.last_full_number, state.last_change_id)]

    def publish_all(
        self, names: list[str] | None = None, mode: PublishMode = "auto"
    ) -> list[PublishedCrl]:
        """:meth:`publish` for every issuer (or those named)."""
        out: list[PublishedCrl] = []
        for name in names or self.issuer_names():
            out.extend(self.publish(name, mode))
        return out

    def _publish_full(self, ca: _IssuerCA, state: CrlState | None) -> tuple[PublishedCrl, int]:
        watermark = self._watermark()
        number = self.next_number(ca.id)
        now = self.clock()
        spec = CrlSpec(
            this_update=now,
            next_update=now + 2 * self.interval,
            number=number,
            freshest_url=delta_crl_url(self.crl_base_url, ca.name),
        )
        # RFC 5280 3.3: an entry stays until it has appeared on one regularly scheduled CRL
        # issued after the certificate expired, i.e. on the first complete CRL whose
        # predecessor was issued after the expiry.
        cutoff = state.last_full_at if state is not None else None
        # A plain DateTime instead of UTCDateTime: no Python type decorator per row (1M rows).
        query = select(
            Certificate.serial_hex,
            type_coerce(Certificate.revoked_at, DateTime(timezone=True)),
            Certificate.revocation_reason,
        ).where(Certificate.issuer_id == ca.id, Certificate.status == CertStatus.REVOKED.value)
        if cutoff is not None:
            query = query.where(Certificate.not_after >= cutoff)
        try:
            with self.sessions() as s:  # Core rows through a server-side cursor on PostgreSQL
                rows = s.connection().execute(query.execution_options(yield_per=self.yield_per))
                entries = _full_entries(rows, now)
                built, replaced = self._install(ca, full_name(ca.name), spec, entries)
        except BaseException:
            self.give_back(ca.id, number)
            raise
        if replaced:
            self._record_full(ca.id, number, now, watermark)
        return self._result(ca, "full", spec, built, replaced), watermark

    def _publish_delta(self, ca: _IssuerCA, base_number: int, base_change_id: int) -> PublishedCrl:
        number = self.next_number(ca.id)
        now = self.clock()
        spec = CrlSpec(
            this_update=now,
            next_update=now + 2 * self.interval,
            number=number,
            base_number=base_number,
        )
        changed = (
            select(
                StatusChange.serial_hex.label("serial_hex"),
                func.max(StatusChange.changed_at).label("changed_at"),
            )
            .where(StatusChange.issuer_id == ca.id, StatusChange.id > base_change_id)
            .group_by(StatusChange.serial_hex)
            .subquery()
        )
        query = select(
            Certificate.serial_hex,
            Certificate.status,
            Certificate.revoked_at,
            Certificate.revocation_reason,
            changed.c.changed_at,
        ).join(
            changed,
            and_(Certificate.issuer_id == ca.id, Certificate.serial_hex == changed.c.serial_hex),
        )
        try:
            with self.sessions() as s:
                rows = s.execute(query.execution_options(yield_per=self.yield_per))
                entries = _delta_entries(rows)
                built, replaced = self._install(ca, delta_name(ca.name), spec, entries)
        except BaseException:
            self.give_back(ca.id, number)
            raise
        return self._result(ca, "delta", spec, built, replaced)

    def _result(
        self,
        ca: _IssuerCA,
        kind: Literal["full", "delta"],
        spec: CrlSpec,
        built: BuiltCrl,
        replaced: bool,
    ) -> PublishedCrl:
        path = self.publish_dir / (delta_name(ca.name) if kind == "delta" else full_name(ca.name))
        return PublishedCrl(
            ca.name,
            kind,
            spec.number,
            spec.base_number,
            spec.this_update,
            spec.next_update,
            built.entries,
            built.size,
            path,
            replaced,
        )

    def _install(
        self, ca: _IssuerCA, filename: str, spec: CrlSpec, entries: Iterator[EntryLike]
    ) -> tuple[BuiltCrl, bool]:
        """Build into a temporary file beside the target, then swap it in atomically unless a
        CRL with a higher number is already there. Raises only when nothing was installed."""
        try:
            return self._write(ca, filename, spec, entries)
        except OSError as exc:
            what = f"CRL #{spec.number} for issuer '{ca.name}' -> {self.publish_dir / filename}"
            if is_storage_full(exc):
                raise storage_full(exc, f"cannot write {what}", self.publish_dir) from exc
            raise CAError(ErrorCode.CONFIG, f"cannot write {what}: {exc.strerror or exc}") from exc

    def _write(
        self, ca: _IssuerCA, filename: str, spec: CrlSpec, entries: Iterator[EntryLike]
    ) -> tuple[BuiltCrl, bool]:
        assert ca.key is not None
        self.publish_dir.mkdir(parents=True, exist_ok=True)
        final = self.publish_dir / filename
        fd, tmp_name = tempfile.mkstemp(dir=self.publish_dir, prefix=f".{filename}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                built = build_crl(
                    out, ca.certificate, ca.key, spec, entries, spool_dir=self.publish_dir
                )
                os.fsync(out.fileno())
            tmp.chmod(0o644)
            with _file_lock(self.publish_dir / f".{ca.name}.lock"):
                current = installed_number(final)
                if current is not None and current >= spec.number:
                    tmp.unlink()
                    return built, False
                os.replace(tmp, final)
            try:
                _fsync_dir(self.publish_dir)
            except OSError as exc:  # installed and served already; only durability is at stake
                log.warning("CRL %s installed, directory not synced: %s", final, exc)
            return built, True
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- loop -----------------------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event,
        names: list[str] | None = None,
        poll: float = 0.5,
        settle: float = 1.0,
        max_delay: float = 10.0,
        on_publish: Callable[[PublishedCrl], None] | None = None,
        on_error: Callable[[CAError, float], None] | None = None,
        on_change: PublishMode = "full",
        max_backoff: float = 30.0,
    ) -> None:
        """Publish until ``stop`` is set: a complete CRL whenever one is due, and once status
        changes settle (``settle`` s without a new change, or ``max_delay`` s after the first
        unpublished one) a new complete CRL plus its delta (``on_change="full"``, the default:
        relying parties that ignore deltas, such as ``openssl verify -crl_check``, see a
        revocation within seconds) or only a delta (``on_change="delta"``, for very large
        CRLs whose clients follow Freshest CRL). After a failure the next attempt waits
        twice as long as the one before (from ``poll`` up to ``max_backoff`` s); the first
        success resets it. ``on_error`` gets the error and the delay before the retry."""
        report = on_publish or (lambda p: log.info("%s", p.describe()))
        seen: int | None = None
        first_change = last_change = 0.0
        dirty = False
        pending: set[str] = set()
        failures = 0
        while not stop.is_set():
            delay = poll
            try:
                issuers = names or self.issuer_names()
                if seen is None:  # start: bring every issuer up to date (retried until done)
                    at_start = self.latest_change_id()
                    for name in issuers:
                        for p in self.publish(name, "auto"):
                            report(p)
                    seen = at_start
                for name in issuers:
                    if self.full_due(name):
                        for p in self.publish(name, "full"):
                            report(p)
                current = self.latest_change_id()
                now = time.monotonic()
                if current != seen:
                    if not dirty:
                        first_change, dirty = now, True
                    last_change = now
                    pending.update(self._issuers_changed_since(seen))
                    seen = current
                if dirty and (now - last_change >= settle or now - first_change >= max_delay):
                    for name in issuers:
                        if name in pending:
                            for p in self.publish(name, on_change):
                                report(p)
                    pending.clear()
                    dirty = False
                failures = 0
            except Exception as exc:  # keep serving the last good CRLs; retry after a backoff
                failures += 1
                delay = min(max_backoff, poll * 2 ** min(failures, 16))
                error = as_ca_error(exc)
                if on_error is not None:
                    on_error(error, delay)
                else:
                    log.error("CRL publication failed: %s; retrying in %.1f s", error, delay)
            stop.wait(delay)

    def _issuers_changed_since(self, change_id: int) -> set[str]:
        with self.sessions() as s:
            rows = s.execute(
                select(Issuer.name)
                .join(StatusChange, StatusChange.issuer_id == Issuer.id)
                .where(StatusChange.id > change_id)
                .distinct()
            ).all()
        return {r[0] for r in rows}


def _full_entries(rows: Any, now: datetime) -> Iterator[EntryLike]:
    for serial_hex, revoked_at, reason in rows:
        if revoked_at is None:  # never written by the CA; still listed, never dropped
            revoked_at = now
        elif revoked_at.tzinfo is None:  # SQLite stores UTC without a zone
            revoked_at = revoked_at.replace(tzinfo=UTC)
        yield int(serial_hex, 16), revoked_at, reason


def _delta_entries(rows: Any) -> Iterator[EntryLike]:
    remove = int(RevocationReason.REMOVE_FROM_CRL)
    for serial_hex, status, revoked_at, reason, changed_at in rows:
        if status == CertStatus.REVOKED.value and revoked_at is not None:
            yield int(serial_hex, 16), revoked_at, reason
        elif status == CertStatus.ISSUED.value:  # released from hold since the base
            yield int(serial_hex, 16), changed_at, remove


def installed_number(path: Path) -> int | None:
    """The CRL number of the CRL file at ``path`` (None when missing or unreadable)."""
    try:
        with path.open("rb") as fh:
            return read_crl_info(fh).number
    except (OSError, CAError):
        return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
