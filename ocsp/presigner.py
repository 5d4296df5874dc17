"""The presigner: OCSP answers signed ahead of demand into the shared store (decision 0038).

Runs on the CA side (``agentca ocsp presign``, started by ``agentca run``) with a database role
that may write ``ocsp_responses`` and the responder token's keys (the same delegated signers
the responders use, picked the same way: ``ocsp.loaded_signers.CurrentSigners``). Each step:

1. **Changes** (revoke, hold, release): ``status_changes`` rows after the last one seen, and
   the ids below it not seen yet (``ocsp.change_feed``: a writer that committed after a later
   one); their certificates are signed again at once.
2. **New certificates**: ``certificates`` rows after the last id seen, once issued (a record
   still ``pending`` is looked at again on later steps, for at most ``PENDING_WATCH`` seconds;
   the sweep catches anything later).
3. **Refresh**: rows whose ``refresh_at`` is within ``lead`` seconds, oldest first, by index.
4. **Sweep** (every ``sweep_every`` seconds, at start, and when the feed gave up on an id):
   every live certificate with no usable row (none, a signer no longer trusted, or signed for
   another status), so a presigner that was stopped, a retired signer, or a missed change all
   heal.
5. **Rotation** (decision 0047): rows of an older signer that responders still trust are
   re-signed with the current one in the background, oldest refresh time first, with what
   the rate leaves; responders serve them meanwhile, so a rotation costs no on-demand dip.

Work per step is bounded by ``batch`` and the whole loop by ``rate`` signatures per second
(0: as fast as the HSM signs), so presigning never takes the HSM from on-demand signing.

Correctness does not depend on how quickly this runs: responders use a row only while the
certificate's status is still the one the row was signed for (``ocsp.status.STORED_QUERY``)
and sign on demand otherwise. Answers are for the canonical SHA-1 CertID (RFC 5019 2.1.1:
what clients send); other CertIDs (SHA-256, parameters left out) are signed on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ca.errors import CAError, ErrorCode
from ca.store.tables import certificates as cert_table
from ca.store.tables import ocsp_responses
from ocsp.change_feed import LOOKBACK, ChangeCursor, serials_by_issuer
from ocsp.decision import status_from_record
from ocsp.options import OcspOptions
from ocsp.responder import SignerProvider
from ocsp.response import Signer, SingleAnswer
from ocsp.response_der import build_response_der
from ocsp.status import IssuerInfo, SqlStatusSource

log = logging.getLogger("agentca.ocsp.presign")

PENDING_WATCH = 120.0  # seconds a pending record is re-read before the sweep takes it over
LIVE = ("issued", "revoked")  # statuses a pre-signed answer is made for
_SHA1_NULL = bytes.fromhex("300906052b0e03021a0500")  # AlgorithmIdentifier sha1, NULL params

_r, _c = ocsp_responses.c, cert_table.c
_ROW = (_c.issuer_id, _c.serial_hex, _c.status, _c.revoked_at, _c.revocation_reason)


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


def canonical_cert_id(issuer: IssuerInfo, serial_hex: str) -> bytes:
    """The SHA-1 CertID DER for a serial of ``issuer``, as OpenSSL, Go and browsers encode it
    (AlgorithmIdentifier with NULL parameters)."""
    serial = int(serial_hex, 16)
    serial_der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # positive INTEGER
    return _tlv(
        0x30,
        _SHA1_NULL
        + _tlv(0x04, issuer.name_hash_sha1)
        + _tlv(0x04, issuer.key_hash_sha1)
        + _tlv(0x02, serial_der),
    )


@dataclass
class PresignStats:
    """What one step did (``agentca ocsp presign --json`` prints the totals)."""

    signed: int = 0
    changes: int = 0
    new: int = 0
    refreshed: int = 0
    swept: int = 0
    rotated: int = 0  # rows of an older signer re-signed with the current one
    more: bool = False  # a bound was hit: run the next step at once
    rate_limited: bool = False  # the signing budget ran out: wait for it before stepping
    seconds: float = 0.0
    by_issuer: dict[int, int] = field(default_factory=dict)


class _Bucket:
    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self.rate = rate
        self.monotonic = monotonic
        self.tokens = rate
        self.at = monotonic()

    def allowance(self, want: int) -> int:
        if self.rate <= 0:
            return want
        now = self.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return max(0, min(want, int(self.tokens)))

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self.tokens -= n


class Presigner:
    """Keeps ``ocsp_responses`` filled and fresh (see the module docstring). Not thread-safe:
    one loop per process; several presigners may run (their upserts are idempotent)."""

    def __init__(
        self,
        engine: Engine,
        signers: SignerProvider,
        options: OcspOptions | None = None,
        *,
        rate: float = 0.0,
        batch: int = 500,
        sweep_every: float = 30.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.source = SqlStatusSource(engine)
        self.signers = signers
        self.options = options or OcspOptions()
        self.batch = batch
        self.sweep_every = sweep_every
        self.clock = clock
        self.monotonic = monotonic
        self._bucket = _Bucket(rate, monotonic)
        self._validity = self.options.response_validity.total_seconds()
        self._refresh = self.options.refresh_after.total_seconds()
        # re-sign this long before responders stop using a row
        self.lead = min(300.0, self._refresh / 4)
        self._issuers: dict[int, IssuerInfo] = {}
        self._head: tuple[int, int, int] | None = None
        self.feed = ChangeCursor(monotonic=monotonic)
        self._rotated: set[int] = set()  # issuers with no row of an older signer left
        self._last_cert = 0
        self._pending: dict[int, float] = {}
        self._next_sweep = float("-inf")
        self._sweep_after: dict[int, str] = {}  # issuer -> last serial swept (keyset paging)
        self._insert = self._upsert_statement()

    # -- public -------------------------------------------------------------------------------
    def step(self) -> PresignStats:
        """One round of the four kinds of work; raises CAError when the database is away."""
        started = self.monotonic()
        stats = PresignStats()
        try:
            self._follow_head()
            self._changes(stats)
            self._new_certificates(stats)
            self._refresh_due(stats)
            if self.monotonic() >= self._next_sweep:
                self._sweep(stats)
            self._rotate(stats)
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc
        stats.seconds = self.monotonic() - started
        return stats

    def fill(self) -> PresignStats:
        """Step until nothing is left to sign (``agentca ocsp presign --once``)."""
        total = PresignStats()
        while True:
            s = self.step()
            for name in ("signed", "changes", "new", "refreshed", "swept", "rotated"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            for issuer_id, n in s.by_issuer.items():
                total.by_issuer[issuer_id] = total.by_issuer.get(issuer_id, 0) + n
            total.seconds += s.seconds
            if not s.more:
                return total
            if s.rate_limited:
                time.sleep(0.25)  # over the rate budget: let it refill

    def run(self, stop: threading.Event, every: float = 0.5) -> None:
        """Step every ``every`` seconds (at once while a bound was hit) until ``stop``."""
        down = False
        while not stop.is_set():
            try:
                stats = self.step()
            except CAError as exc:
                if not down:
                    log.warning("presigner: database unavailable: %s", exc.detail)
                down = True
                stop.wait(1.0)
                continue
            except Exception:
                log.exception("presigner step failed")
                stop.wait(1.0)
                continue
            if down:
                log.info("presigner: database reachable again")
                down = False
            if stats.signed:
                log.info(
                    "presigned %d answers (%d changed, %d new, %d refreshed, %d swept, "
                    "%d rotated) in %.2fs",
                    stats.signed, stats.changes, stats.new, stats.refreshed, stats.swept,
                    stats.rotated, stats.seconds,
                )  # fmt: skip
            if not stats.more or stats.rate_limited:
                stop.wait(every)  # over the rate budget, stepping again at once would spin

    # -- the four kinds of work ---------------------------------------------------------------
    def _follow_head(self) -> None:
        head = self.source.head()
        key = (head.status_change, head.signer, head.issuer)
        last = self._head
        if last is None or head.issuer != last[2]:
            self._issuers = {i.id: i for i in self.source.issuers()}
        if last is not None and self.feed.rewound(head.status_change):
            log.warning("presigner: the status feed went back (database restored?); sweeping")
            self._next_sweep = float("-inf")
        if last is None or head.signer != last[1]:
            self.signers.reload()
            self._next_sweep = float("-inf")  # rows of a retired signer are to be signed again
            self._rotated.clear()  # and those of the previous one, in the background
        if last is None:
            # the start sweep covers what is visible now; the cursor watches the last ids for
            # writers still in flight (what it reads now is the sweep's, not signed twice)
            self.feed.start(head.status_change)
            self.feed.read(self.source, LOOKBACK + self.batch)
            with self.engine.connect() as conn:
                self._last_cert = int(conn.execute(select(func.max(_c.id))).scalar() or 0)
        self._head = key

    def _changes(self, stats: PresignStats) -> None:
        read = self.feed.read(self.source, self.batch)
        if read.lost:
            log.info("presigner: %d feed ids never appeared; sweeping now", read.lost)
            self._next_sweep = float("-inf")  # the backstop, at once
        stats.more |= read.full
        for issuer_id, serials in serials_by_issuer(read.changes).items():
            rows = self._rows(_c.issuer_id == issuer_id, _c.serial_hex.in_(serials))
            stats.changes += self._sign(rows, stats)

    def _new_certificates(self, stats: PresignStats) -> None:
        now = self.monotonic()
        for cid, since in list(self._pending.items()):
            if now - since > PENDING_WATCH:
                del self._pending[cid]
        cond = _c.id > self._last_cert
        if self._pending:
            cond = or_(cond, _c.id.in_(list(self._pending)))
        query = select(_c.id, *_ROW).where(cond).order_by(_c.id).limit(self.batch)
        with self.engine.connect() as conn:
            found = list(conn.execute(query))
        if not found:
            return
        stats.more |= len(found) >= self.batch
        ready = []
        for row in found:
            cid = int(row[0])
            self._last_cert = max(self._last_cert, cid)
            if row[3] == "pending":
                self._pending.setdefault(cid, now)
            else:
                self._pending.pop(cid, None)
                if row[3] in LIVE:
                    ready.append(tuple(row[1:]))
        stats.new += self._sign(ready, stats)

    def _refresh_due(self, stats: PresignStats) -> None:
        now = self.clock()
        due = int(now + self.lead)
        query = (
            select(*_ROW)
            .select_from(ocsp_responses.join(cert_table, _joined()))
            .where(
                _r.refresh_at <= due,
                _c.status.in_(LIVE),
                _c.not_after > datetime.fromtimestamp(now, UTC),  # expired: let the row lapse
            )
            .order_by(_r.refresh_at)
            .limit(self.batch)
        )
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(query)]
        stats.more |= len(rows) >= self.batch
        stats.refreshed += self._sign(rows, stats)

    def _sweep(self, stats: PresignStats) -> None:
        """Live certificates without a usable row, in serial order per issuer (keyset pages of
        ``batch``: a long sweep spreads over several steps)."""
        done = True
        now_dt = datetime.fromtimestamp(self.clock(), UTC)
        for issuer_id in sorted(self._issuers):
            signer = self._signer(issuer_id)
            if signer is None:
                continue
            after = self._sweep_after.get(issuer_id, "")
            unusable = or_(
                _r.serial_hex.is_(None),
                _r.signer_id.not_in(self._trusted(issuer_id)),
                _r.cert_status != _c.status,
                _r.revoked_at.is_distinct_from(_c.revoked_at),
                _r.revocation_reason.is_distinct_from(_c.revocation_reason),
            )
            query = (
                select(*_ROW)
                .select_from(cert_table.outerjoin(ocsp_responses, _joined()))
                .where(
                    _c.issuer_id == issuer_id,
                    _c.status.in_(LIVE),
                    _c.not_after > now_dt,
                    _c.serial_hex > after,
                    unusable,
                )
                .order_by(_c.serial_hex)
                .limit(self.batch)
            )
            with self.engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(query)]
            signed = self._sign(rows, stats)
            stats.swept += signed
            if len(rows) >= self.batch and signed == len(rows):
                self._sweep_after[issuer_id] = rows[-1][1]
                done = False
            elif signed < len(rows):
                done = False  # over the rate budget: come back to the same page
            else:
                self._sweep_after.pop(issuer_id, None)
        if done:
            self._next_sweep = self.monotonic() + self.sweep_every
        stats.more |= not done

    def _rotate(self, stats: PresignStats) -> None:
        """Rows of an older signer (still trusted: the sweep takes the others), re-signed
        with the current one, oldest refresh time first, by the ``refresh_at`` index (rows of
        a newer signer, another presigner's, are left alone)."""
        now = self.clock()
        now_dt = datetime.fromtimestamp(now, UTC)
        for issuer_id in sorted(self._issuers):
            signer = self._signer(issuer_id)
            if signer is None or issuer_id in self._rotated:
                continue
            query = (
                select(*_ROW)
                .select_from(ocsp_responses.join(cert_table, _joined()))
                .where(
                    _r.issuer_id == issuer_id,
                    _r.signer_id < signer.row_id,
                    _c.status.in_(LIVE),
                    _c.not_after > now_dt,
                )
                .order_by(_r.refresh_at)
                .limit(self.batch)
            )
            with self.engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(query)]
            signed = self._sign(rows, stats)
            stats.rotated += signed
            if len(rows) < self.batch and signed == len(rows):
                self._rotated.add(issuer_id)  # none left until the next signer
            else:
                stats.more = True

    # -- signing and writing ------------------------------------------------------------------
    def _trusted(self, issuer_id: int) -> list[int]:
        """Signers whose rows responders serve for ``issuer_id`` now (decision 0047)."""
        now = self.clock()
        return [i for i, end in self.signers.accepted_for(issuer_id).items() if end > now]

    def _signer(self, issuer_id: int) -> Signer | None:
        try:
            signer = self.signers.signer_for(issuer_id)
        except CAError:
            return None
        return signer if signer.not_after.timestamp() > self.clock() else None

    def _rows(self, *where: Any) -> list[tuple[Any, ...]]:
        query = select(*_ROW).where(*where, _c.status.in_(LIVE))
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def _sign(self, rows: Sequence[tuple[Any, ...]], stats: PresignStats) -> int:
        """Sign and upsert ``rows`` (issuer_id, serial_hex, status, revoked_at, reason) as far
        as the rate allows; the number written."""
        if not rows:
            return 0
        allowed = self._bucket.allowance(len(rows))
        if allowed < len(rows):
            stats.more = stats.rate_limited = True
        values = []
        now = self.clock()
        for issuer_id, serial_hex, status, revoked_at, reason in rows[:allowed]:
            issuer = self._issuers.get(issuer_id)
            signer = self._signer(issuer_id)
            if issuer is None or signer is None:
                continue
            values.append(self._answer(issuer, signer, serial_hex, status, revoked_at, reason, now))
            stats.by_issuer[issuer_id] = stats.by_issuer.get(issuer_id, 0) + 1
        self._bucket.spend(len(values))
        if values:
            with self.engine.begin() as conn:
                conn.execute(self._insert, values)
        stats.signed += len(values)
        return len(values)

    def _answer(
        self,
        issuer: IssuerInfo,
        signer: Signer,
        serial_hex: str,
        status: str,
        revoked_at: datetime | None,
        reason: int | None,
        now: float,
    ) -> dict[str, Any]:
        this_ts = int(now)
        next_ts = int(min(this_ts + self._validity, signer.not_after.timestamp()))
        cert_id = canonical_cert_id(issuer, serial_hex)
        answer = SingleAnswer(cert_id, status_from_record(status, revoked_at, reason))
        at = datetime.fromtimestamp(this_ts, UTC)
        der = build_response_der([answer], signer, at, at, datetime.fromtimestamp(next_ts, UTC))
        return {
            "issuer_id": issuer.id,
            "serial_hex": serial_hex,
            "cert_id_der": cert_id,
            "der": der,
            "cert_status": status,
            "revoked_at": revoked_at,
            "revocation_reason": reason,
            "signer_id": signer.row_id,
            "this_update": this_ts,
            "next_update": next_ts,
            "refresh_at": int(min(this_ts + self._refresh, next_ts - 1)),
        }

    def _upsert_statement(self) -> Any:
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(ocsp_responses)
        columns = (
            "cert_id_der", "der", "cert_status", "revoked_at", "revocation_reason", "signer_id",
            "this_update", "next_update", "refresh_at",
        )  # fmt: skip
        return stmt.on_conflict_do_update(
            index_elements=["issuer_id", "serial_hex"],
            set_={name: getattr(stmt.excluded, name) for name in columns},
        )


def _joined() -> Any:
    return and_(_r.issuer_id == _c.issuer_id, _r.serial_hex == _c.serial_hex)


def _db_error(exc: BaseException) -> CAError:
    return CAError(ErrorCode.DB_UNAVAILABLE, f"the database cannot be reached ({exc})")


def presigned_count(engine: Engine, issuer_ids: Iterable[int] | None = None) -> int:
    """How many rows the store holds (for ``--json`` output and tests)."""
    query = select(func.count()).select_from(ocsp_responses)
    if issuer_ids is not None:
        query = query.where(_r.issuer_id.in_(bindparam("ids", list(issuer_ids), expanding=True)))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)
