"""The per-process responder: cache of pre-signed answers, status cache, freshness polling.

One ``Responder`` lives in each worker process (it is not thread-safe; gunicorn sync workers
call it from one thread). ``respond(der)`` never raises: every outcome is an :class:`Answer`.

Freshness: at most every ``poll_interval`` (200 ms) the next request first reads the highest
ids of ``status_changes``, ``ocsp_signers`` and ``issuers`` (one cheap query); when the status
feed moved it fetches the new rows and drops the cached status and answers of exactly those
serials. So a revocation is answered by every worker within ``poll_interval`` (+ one query) of
its commit. Ids allocated but not yet committed when polled (concurrent writers) are tracked
as holes and re-read until they appear or their writers have ended (``ocsp.change_feed``,
decision 0047).

Freshness bound (decision 0012): every answer, pre-signed or newly signed, is given only while
the last successful poll is at most ``OcspOptions.status_freshness`` (1 s) old; past it the
answer is ``tryLater``. A revocation committed just before the database stopped, which no poll
has read, is therefore never answered "good" for longer than that bound. The check is one
float comparison on the hot path.

Outage: if the database cannot be reached, every request gets ``tryLater`` once the bound has
passed. An operator who prefers availability sets ``serve_stale_for``: for that many more
seconds, pre-signed answers are served until their refresh time (always before nextUpdate) and
statuses cached before the outage are signed (nonce and multi-CertID requests) with thisUpdate
= the last time the feed was read; cache misses get ``tryLater``. Service resumes with the next
good poll (retried every ``outage_poll_interval``).

HSM failures (the key seam's ``HSMError``, raw python-pkcs11 errors) are ``tryLater`` too, and
are logged as one line per kind of error per second, not a traceback per request.

Why one module of this size: the whole path from a parsed request to a signed answer, with its
cache and budgets, so that the rule "never good for a serial that was not issued" can be checked
by reading one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from pkcs11.exceptions import PKCS11Error

from ca.errors import CAError, ErrorCode
from hsm.errors import HSMError
from ocsp.answer_map import AnswerMap, MappedAnswer, boot_id, file_identity, open_map
from ocsp.change_feed import ChangeCursor
from ocsp.decision import UNISSUED, CertState, IssuerKey, Lookup, SerialStatus, resolve
from ocsp.options import OcspOptions
from ocsp.request import OcspRequest, parse_request, parse_simple_request
from ocsp.response import (
    INTERNAL_ERROR,
    MALFORMED,
    TRY_LATER,
    UNAUTHORIZED,
    ResponseStatus,
    Signer,
    SingleAnswer,
)
from ocsp.response_der import build_response_der
from ocsp.sign_budget import SignBudget
from ocsp.status import AnswerStore, FeedHead, IssuerInfo, StatusSource, StoredAnswer
from ocsp.tally import ANSWERS, ERROR_LABELS, HIT, MAP, MISS, NONE, STORE, AnswerTally

log = logging.getLogger("agentca.ocsp")

LOG_EVERY = 1.0  # seconds between two log lines for the same kind of per-request failure
MAX_FEED_BATCH = 5000  # more changes than this at once: drop every cached answer instead
MAX_REQUEST_KEY = 512  # longer requests are cached by CertID only (keys stay small, 0038)
STORE_RETRY = 5.0  # seconds the shared store is left alone after a failed read
FUTURE_SKEW = 60  # a stored answer whose thisUpdate is further ahead than this is not used
MAP_CHECK_EVERY = 1.0  # seconds between looks for a newer answer map file
MAP_MARGIN = 1.0  # a change seen this close before a map's build still vetoes its entry
MAX_CHANGED = 200_000  # serials remembered as changed since the map; beyond: map unused
_GOOD, _REVOKED = b"\x80\x00", b"\xa1"  # certStatus good [0] NULL, revoked [1] RevokedInfo
_CERTID = b"\x00"  # cache-key prefix for CertID keys (a DER request never starts with 0x00)


class Answer:
    """Bytes to send plus what HTTP caching needs (``status`` successful or not)."""

    __slots__ = (
        "der",
        "etag",
        "expires",
        "issuer_id",
        "label",
        "last_modified",
        "next_update_ts",
        "refresh_at",
        "serial_hex",
        "status",
    )

    def __init__(
        self,
        der: bytes,
        status: ResponseStatus,
        this_update: float = 0.0,
        next_update: float = 0.0,
        refresh_at: float = 0.0,
    ) -> None:
        self.der = der
        self.status = status
        self.refresh_at = refresh_at
        self.next_update_ts = next_update
        self.issuer_id = 0
        self.serial_hex: str | None = None
        # the metric label (ocsp.tally): the certificate status, or the OCSP error status
        self.label = "good" if status is ResponseStatus.SUCCESSFUL else ERROR_LABELS[status]
        if status is ResponseStatus.SUCCESSFUL:
            self.last_modified = formatdate(this_update, usegmt=True)
            self.expires = formatdate(next_update, usegmt=True)
            self.etag = '"' + hashlib.sha256(der).hexdigest()[:40] + '"'
        else:
            self.last_modified = self.expires = self.etag = ""


ERROR_ANSWERS = {
    ResponseStatus.MALFORMED_REQUEST: Answer(MALFORMED, ResponseStatus.MALFORMED_REQUEST),
    ResponseStatus.INTERNAL_ERROR: Answer(INTERNAL_ERROR, ResponseStatus.INTERNAL_ERROR),
    ResponseStatus.TRY_LATER: Answer(TRY_LATER, ResponseStatus.TRY_LATER),
    ResponseStatus.UNAUTHORIZED: Answer(UNAUTHORIZED, ResponseStatus.UNAUTHORIZED),
}
MALFORMED_ANSWER = ERROR_ANSWERS[ResponseStatus.MALFORMED_REQUEST]
TRY_LATER_ANSWER = ERROR_ANSWERS[ResponseStatus.TRY_LATER]


def status_for_error(error: CAError) -> ResponseStatus:
    """Map the error family onto OCSPResponseStatus (RFC 6960 4.2.1): the OCSP edge of the
    error family (the HTTP statuses and exit codes belong to the API and the CLI)."""
    if error.code is ErrorCode.BAD_REQUEST or error.code is ErrorCode.TOO_LARGE:
        return ResponseStatus.MALFORMED_REQUEST
    if error.code in (
        ErrorCode.DB_UNAVAILABLE,
        ErrorCode.NOT_INITIALISED,
        ErrorCode.CLOCK_SKEW,
    ) or (error.code.slug.startswith("hsm-")):
        return ResponseStatus.TRY_LATER
    return ResponseStatus.INTERNAL_ERROR


class LogLimiter:
    """At most one log line per kind of failure per ``every`` seconds, with a count of the rest.

    Per-request failures (an HSM gone, a bug hit by every request) would otherwise log a line,
    or a traceback, per request.
    """

    def __init__(
        self,
        logger: logging.Logger,
        every: float = LOG_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every = every
        self.monotonic = monotonic
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, message: str, exc_info: bool = False) -> bool:
        """Log ``message`` unless ``kind`` was logged less than ``every`` ago (True if logged)."""
        now = self.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.every:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        self._last[kind] = (now, 0)
        if last is not None and last[1]:
            message += f" ({last[1]} more since the last report)"
        self.logger.log(level, "%s", message, exc_info=exc_info)
        return True


def hsm_error_kind(exc: BaseException) -> str:
    """A short name for an HSM failure: the key seam's code and class, or the PKCS#11 class."""
    slug = getattr(exc, "code_slug", None)
    name = type(exc).__name__
    return f"{slug}/{name}" if isinstance(slug, str) else f"pkcs11/{name}"


def _describe(kind: str, exc: BaseException) -> str:
    text = str(exc)
    return f"{kind}: {text}" if text else kind


class SignerProvider(Protocol):
    """Hands out the current delegated signer per issuer."""

    def signer_for(self, issuer_id: int) -> Signer: ...
    def accepted_for(self, issuer_id: int) -> Mapping[int, float]: ...  # row id -> not_after
    def reload(self) -> None: ...
    def check(self) -> bool: ...  # True when a signer changed


def status_label(statuses: Sequence[SerialStatus]) -> str:
    """The metric label of an answer: ``revoked`` if any certificate is, else ``unissued``
    (answered revoked/certificateHold, RFC 6960 2.2) if any is, else ``good``."""
    states = {st.state for st in statuses}
    if CertState.REVOKED in states:
        return "revoked"
    return "unissued" if CertState.UNISSUED in states else "good"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


class Responder:
    """Answers DER OCSP requests for one process (see the module docstring)."""

    def __init__(
        self,
        source: StatusSource,
        signers: SignerProvider,
        options: OcspOptions | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        tally: AnswerTally = ANSWERS,
        store: AnswerStore | None = None,
        answer_map: Path | None = None,
    ) -> None:
        self.source = source
        self.store = store
        # the host's answer map (decision 0050): served from only for serials this worker has
        # not seen change since the map's snapshot, and only if the map is newer than what
        # this worker's feed reading covers
        self._map_path = answer_map
        # the map and the changes seen since it, swapped together (the event loop reads both)
        self._map: tuple[AnswerMap, dict[tuple[int, str], float]] | None = None
        self._map_identity: tuple[int, int, int] | None = None
        self._next_map_check = 0.0
        # host-monotonic time (CLOCK_MONOTONIC, one clock for every process of the host, never
        # stepped): maps built before it are not used, and changes are timed with it
        self._map_floor = float("-inf")
        self._boot_id = boot_id()
        self._feed_floor: int | None = None  # every change above this id has been seen
        self._changed: dict[tuple[int, str], float] = {}  # serial -> wall time its change was seen
        self._store_retry_at = float("-inf")  # monotonic: a failed store read waits till then
        self.tally = tally
        self.signers = signers
        self.options = options or OcspOptions()
        self.clock = clock
        self.monotonic = monotonic
        self._validity = self.options.response_validity.total_seconds()
        self._refresh = self.options.refresh_after.total_seconds()
        self._issuers: dict[int, IssuerInfo] = {}
        self._index: dict[IssuerKey, int] = {}
        self._head: FeedHead | None = None
        self.feed = ChangeCursor(monotonic=monotonic)
        self._db_ok = False
        self._fresh_as_of = 0.0  # wall time of the last successful poll
        self._confirmed = float("-inf")  # monotonic time of the last successful poll's start
        self.replica_lag: float | None = 0.0  # of the last poll (ocsp.status.FeedHead.lag)
        self._vouch_for = self.options.vouch_for  # answers stop this long after _confirmed
        self._next_poll = 0.0
        self._next_signer_check = 0.0
        self._responses: dict[bytes, Answer] = {}
        self._by_serial: dict[tuple[int, str | None], list[bytes]] = {}
        self._statuses: dict[tuple[int, str], tuple[SerialStatus, float]] = {}
        self._status_ttl = self._refresh  # safety net should a feed entry ever be missed
        self.errors = LogLimiter(log, monotonic=monotonic)
        rate = self.options.sign_rate_per_client
        self._budget = SignBudget(rate, self.options.sign_burst_per_client) if rate > 0 else None

    # -- public -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once issuers are known (answers possible)."""
        return bool(self._issuers)

    @property
    def database_ok(self) -> bool:
        return self._db_ok

    @property
    def fresh_as_of(self) -> float | None:
        """Wall time as of which the status feed was last read (None: never read)."""
        return self._fresh_as_of or None

    def respond(self, der: bytes, client: str = "") -> Answer:
        """The answer to one DER ``OCSPRequest`` from ``client`` (its address; never raises).

        Pre-signed answers are served to anyone; work that needs a new signature is bounded
        per client address (``sign_rate_per_client``). Each answer is counted in ``tally``.
        """
        answer, cache = self._respond(der, client)
        self.tally.add(answer.label, cache)
        return answer

    def cached(self, der: bytes) -> Answer | None:
        """The answer to ``der`` if it is in the hot cache and may be served now, else None
        (then call :meth:`respond`). No I/O and no signature: an event loop may call it while
        another thread runs :meth:`respond` (dict reads are atomic under the GIL). It does not
        poll: the thread that owns the responder calls :meth:`poll_if_due` on a timer, and
        answers here stop once the last good poll is older than the freshness bound."""
        if self.monotonic() - self._confirmed > self._vouch_for:
            return None  # the freshness bound (0012): only respond() may answer now
        hit = self._responses.get(der)
        if hit is not None and hit.refresh_at > self.clock():
            self.tally.add(hit.label, HIT)
            return hit
        state = self._map
        if state is None:
            return None
        # keyed by the plain request's bytes: no parse (anything else is not in the map)
        try:
            row = state[0].get_request(der)
        except (ValueError, IndexError, OSError, struct.error):  # damaged: never an answer
            self._map = None
            return None
        if row is None:
            return None
        mapped = self._mapped_answer(state, row, self.clock())
        if mapped is not None:
            self.tally.add(mapped.label, MAP)
        return mapped

    def poll_if_due(self) -> None:
        """Poll the feed if ``poll_interval`` has passed (the owning thread's timer: with
        answers given by :meth:`cached`, no request may come through :meth:`respond`)."""
        if self.monotonic() >= self._next_poll:
            self.poll()

    def _respond(self, der: bytes, client: str) -> tuple[Answer, str]:
        try:
            mono = self.monotonic()
            if mono >= self._next_poll:
                self.poll()
            if mono - self._confirmed > self._vouch_for:
                # Not confirmed within the freshness bound: a revocation may be unread.
                return TRY_LATER_ANSWER, NONE
            hit = self._responses.get(der)
            if hit is not None and hit.refresh_at > self.clock():
                return hit, HIT
            return self._answer(der, client)
        except CAError as exc:
            status = status_for_error(exc)
            if exc.code.slug.startswith("hsm-"):
                self.errors.log(
                    logging.WARNING,
                    exc.code.slug,
                    f"OCSP signing unavailable, answering tryLater: {exc.detail}",
                )
            return ERROR_ANSWERS[status], NONE
        except (HSMError, PKCS11Error) as exc:
            kind = hsm_error_kind(exc)
            self.errors.log(
                logging.WARNING,
                kind,
                f"OCSP signing unavailable (HSM {_describe(kind, exc)}), answering tryLater",
            )
            return TRY_LATER_ANSWER, NONE
        except Exception as exc:
            self.errors.log(
                logging.ERROR,
                "internal/" + type(exc).__name__,
                "internal error while answering an OCSP request",
                exc_info=True,
            )
            return ERROR_ANSWERS[ResponseStatus.INTERNAL_ERROR], NONE

    def poll(self) -> None:
        """Read the change feed and drop what it invalidates; never raises."""
        mono = self.monotonic()
        wall = self.clock()  # taken before the query: what it reads is at least this fresh
        started = self._head is not None
        try:
            head = self.source.head()
            self._apply(head, mono)
        except CAError as exc:
            if self._db_ok:
                log.warning("OCSP status feed unavailable: %s", exc.detail)
            self._db_ok = False
            self._next_poll = mono + self.options.outage_poll_interval
            return
        except (HSMError, PKCS11Error) as exc:
            kind = hsm_error_kind(exc)
            self.errors.log(
                logging.WARNING,
                "poll/" + kind,
                f"OCSP signer reload failed (HSM {_describe(kind, exc)})",
            )
            self._db_ok = False
            self._next_poll = mono + self.options.outage_poll_interval
            return
        except Exception as exc:
            self.errors.log(
                logging.ERROR,
                "poll/" + type(exc).__name__,
                "OCSP status feed poll failed",
                exc_info=True,
            )
            self._db_ok = False
            self._next_poll = mono + self.options.outage_poll_interval
            return
        if not self._db_ok and started:
            log.info("OCSP status feed reachable again")
        self._db_ok = True
        self.replica_lag = head.lag
        if head.lag is None:
            # a replica that has replayed nothing since it started: its data is of unknown age
            self.errors.log(
                logging.WARNING,
                "poll/replica-no-replay",
                "OCSP database is a replica that has replayed no transaction yet (is "
                "'agentca db heartbeat' running against the primary?); not vouching for it",
            )
        else:
            # what was read is as fresh as the primary was `lag` seconds before the poll began
            # (one server per ocsp_database_url: a pool over replicas could go back in time)
            self._confirmed = mono - head.lag
            self._fresh_as_of = wall - head.lag
        self._next_poll = mono + self.options.poll_interval
        if self._map_path is not None and mono >= self._next_map_check:
            self._next_map_check = mono + MAP_CHECK_EVERY
            self._load_map()
        if mono >= self._next_signer_check:
            self._next_signer_check = mono + self.options.signer_check_interval
            try:
                if self.signers.check():
                    self._drop_responses()
            except Exception:
                log.exception("OCSP signer check failed")

    def clear(self) -> None:
        """Drop every cached answer and status."""
        self._responses.clear()
        self._by_serial.clear()
        self._statuses.clear()

    # -- feed ---------------------------------------------------------------------------------
    def _apply(self, head: FeedHead, mono: float) -> None:
        last = self._head
        if last is None or head.issuer != last.issuer:
            self._load_issuers()
        if last is None or head.signer != last.signer:
            self.signers.reload()
            self._drop_responses()
        if last is None:
            # Ids below the head may belong to transactions still in flight: watch a window.
            self.feed.start(head.status_change)
            self._feed_floor = self.feed.high  # every change above it will be read
        elif self.feed.rewound(head.status_change):
            log.warning("OCSP status feed went back (database restored?): every answer dropped")
            self.clear()
            self._forget_map()
            self._feed_floor = self.feed.high
        if last is None or head.status_change != last.status_change or self.feed.holes:
            self._read_feed(head)
        self._head = head

    def _read_feed(self, head: FeedHead) -> None:
        read = self.feed.read(self.source, MAX_FEED_BATCH + 1)
        if read.lost:
            log.info(
                "OCSP status feed: %d allocated ids never appeared; cached answers now rest on "
                "their refresh time",
                read.lost,
            )
        if read.full:
            # More changes than one read: drop every cached answer (what is asked next is read
            # as of now) and go on from the head, watching its window like at start.
            self.clear()
            self.feed.start(head.status_change)
            self._forget_map()  # which serials changed is not known: no map from before now
            return
        for change in read.changes:
            self._invalidate(change.issuer_id, change.serial_hex)

    def _invalidate(self, issuer_id: int, serial_hex: str) -> None:
        if self._map_path is not None:
            if len(self._changed) >= MAX_CHANGED:
                self._forget_map()
            self._changed[(issuer_id, serial_hex)] = time.monotonic()
        self._statuses.pop((issuer_id, serial_hex), None)
        for key in self._by_serial.pop((issuer_id, serial_hex), ()):
            self._responses.pop(key, None)

    def _forget_map(self) -> None:
        """Serve from no map built before now (what changed since it is no longer known)."""
        self._map_floor = time.monotonic()
        self._map = None
        self._changed = {}

    def _load_map(self) -> None:
        """Map a newer answer-map file if one was written (the owning thread, after a poll)."""
        assert self._map_path is not None
        identity = file_identity(self._map_path)
        if identity == self._map_identity:
            return
        self._map_identity = identity
        found = open_map(self._map_path) if identity is not None else None
        if (
            found is None
            or found.boot_id != self._boot_id  # another boot: its monotonic times mean nothing
            or found.built_mono < self._map_floor  # older than a map already used, or forgotten
            or found.built_mono > time.monotonic() + MAP_MARGIN
        ):
            self._map = None
            return
        self._map_floor = found.built_mono  # never back to an older map
        cut = found.built_mono - MAP_MARGIN  # changes seen before it are in the new map
        changed = {key: seen for key, seen in self._changed.items() if seen >= cut}
        self._changed = changed  # this thread alone writes it, between polls
        self._map = (found, changed)

    def _from_map(self, lookup: Lookup, now: float) -> Answer | None:
        """The answer map's answer for ``lookup`` if it may be served now (see ``__init__``)."""
        state = self._map
        if state is None or lookup.serial_hex is None:
            return None
        try:
            row = state[0].get(lookup.cert_id.der)
        except (ValueError, IndexError, OSError, struct.error):  # damaged: never an answer
            self._map = None
            return None
        if row is None or row.issuer_id != lookup.issuer_id or row.serial_hex != lookup.serial_hex:
            return None
        return self._mapped_answer(state, row, now)

    def _mapped_answer(
        self,
        state: tuple[AnswerMap, dict[tuple[int, str], float]],
        row: MappedAnswer,
        now: float,
    ) -> Answer | None:
        """``row`` as an answer if the map may speak for it now: a map newer than what this
        worker's feed reading covers, no change of the serial seen since the snapshot, one of
        our issuers, not due for refresh, and :meth:`_fresh_row` (signer accepted, DER agrees)."""
        mapped, changed = state
        if (
            mapped.built_mono < self._map_floor
            or self._feed_floor is None
            or self._head is None
            or mapped.feed_id < self._feed_floor
            or mapped.feed_id > self._head.status_change  # ahead of the database: a restore
            or row.issuer_id not in self._issuers
        ):
            return None
        if changed.get((row.issuer_id, row.serial_hex), float("-inf")) >= (
            mapped.built_mono - MAP_MARGIN
        ):
            return None
        if row.refresh_at <= now or not self._fresh_row(
            row, now, self.signers.accepted_for(row.issuer_id)
        ):
            return None
        return self._stored_answer(row, row.issuer_id)

    def _drop_responses(self) -> None:
        self._responses.clear()
        self._by_serial.clear()

    def _load_issuers(self) -> None:
        issuers = self.source.issuers()
        index: dict[IssuerKey, int] = {}
        for info in issuers:
            index[("sha1", info.name_hash_sha1, info.key_hash_sha1)] = info.id
            index[("sha256", info.name_hash_sha256, info.key_hash_sha256)] = info.id
        self._issuers = {i.id: i for i in issuers}
        self._index = index
        self.clear()

    # -- answering ----------------------------------------------------------------------------
    def _answer(self, der: bytes, client: str) -> tuple[Answer, str]:
        if len(der) > self.options.max_request_bytes:
            return MALFORMED_ANSWER, NONE
        request = parse_request(der, self.options.max_cert_ids)
        if not self._issuers:
            raise CAError(ErrorCode.DB_UNAVAILABLE, "issuers not loaded yet")
        lookups = resolve(request.cert_ids, self._index)
        if lookups is None or len({lk.issuer_id for lk in lookups}) != 1:
            # Not ours (or an unmatched hash algorithm), or several issuers: one delegated
            # signer can only speak for its own CA.
            return ERROR_ANSWERS[ResponseStatus.UNAUTHORIZED], NONE
        cacheable = request.nonce is None and len(lookups) == 1
        presigned = None
        if len(lookups) == 1:
            hit = self._responses.get(_CERTID + lookups[0].cert_id.der)
            if hit is not None and hit.refresh_at > self.clock():
                presigned = hit
                if cacheable:
                    self._remember_request(der, hit)
                    return hit, HIT
            if presigned is None and self._map is not None:
                presigned = self._from_map(lookups[0], self.clock())
                if presigned is not None and cacheable:
                    return presigned, MAP
            if presigned is None and self.store is not None and self._db_ok:
                presigned = self._from_store(lookups[0])
                if presigned is not None and cacheable:
                    self._remember_request(der, presigned)
                    return presigned, STORE
        if not self._may_sign(client, 1 + (len(lookups) - 1) // 8):
            # Over budget: the pre-signed answer without the nonce if there is one, else later.
            if presigned is not None:
                return presigned, HIT
            return ERROR_ANSWERS[ResponseStatus.TRY_LATER], NONE
        answer = self._sign(request, lookups)
        if cacheable and self._db_ok:
            self._store(_CERTID + lookups[0].cert_id.der, answer)
            self._remember_request(der, answer)
        return answer, MISS

    def prefetch(self, ders: Sequence[bytes]) -> int:
        """Read the shared store's answers for several waiting requests in one query per
        issuer and put them in the hot cache, so the :meth:`respond` calls that follow are
        hits (a worker that has several misses queued pays one round trip, not one each).
        Call it on the thread that calls :meth:`respond` (it fills the cache the feed
        invalidates). Never raises; returns how many answers it found."""
        if self.store is None or not self._db_ok or len(ders) < 2:
            return 0
        try:
            return self._prefetch(ders)
        except Exception as exc:  # the requests themselves will report what is wrong
            self.errors.log(logging.WARNING, "prefetch", f"OCSP store prefetch failed: {exc}")
            return 0

    def _prefetch(self, ders: Sequence[bytes]) -> int:
        wanted: dict[int, dict[str, list[Lookup]]] = {}
        for der in ders:
            if der in self._responses:
                continue
            request = parse_simple_request(der)
            if request is None:
                continue
            lookups = resolve(request.cert_ids, self._index)
            if lookups is None:
                continue
            lookup = lookups[0]
            serial = lookup.serial_hex
            if serial is None or _CERTID + lookup.cert_id.der in self._responses:
                continue
            wanted.setdefault(lookup.issuer_id, {}).setdefault(serial, []).append(lookup)
        found = 0
        now = self.clock()
        mono = self.monotonic()
        if mono < self._store_retry_at:
            return 0
        for issuer_id, by_serial in wanted.items():
            accepted = self.signers.accepted_for(issuer_id)
            assert self.store is not None
            try:
                rows = self.store.stored(issuer_id, list(by_serial), int(now))
            except CAError as exc:
                self._store_failed(mono, exc)
                return found
            for serial, row in rows.items():
                for lookup in by_serial[serial]:
                    if self._usable(row, lookup, now, accepted):
                        key = _CERTID + lookup.cert_id.der
                        self._store(key, self._stored_answer(row, issuer_id))
                        found += 1
                        break
        return found

    def _from_store(self, lookup: Lookup) -> Answer | None:
        """The shared store's pre-signed answer for this CertID, put in the hot cache (None:
        the store has none usable, e.g. the presigner has not caught up with a change)."""
        if self.store is None or lookup.serial_hex is None:
            return None
        mono = self.monotonic()
        if mono < self._store_retry_at:
            return None
        accepted = self.signers.accepted_for(lookup.issuer_id)
        now = self.clock()
        try:
            rows = self.store.stored(lookup.issuer_id, (lookup.serial_hex,), int(now))
        except CAError as exc:
            self._store_failed(mono, exc)
            return None
        row = rows.get(lookup.serial_hex)
        if row is None or not self._usable(row, lookup, now, accepted):
            return None
        answer = self._stored_answer(row, lookup.issuer_id)
        self._store(_CERTID + lookup.cert_id.der, answer)
        return answer

    def _usable(
        self,
        row: StoredAnswer | MappedAnswer,
        lookup: Lookup,
        now: float,
        accepted: Mapping[int, float],
    ) -> bool:
        """Whether a stored answer may be served for ``lookup``: signed for this very CertID
        (hash algorithm and encoding) and :meth:`_fresh_row`."""
        return row.cert_id_der == lookup.cert_id.der and self._fresh_row(row, now, accepted)

    def _fresh_row(
        self, row: StoredAnswer | MappedAnswer, now: float, accepted: Mapping[int, float]
    ) -> bool:
        """Not expired, no longer-lived than this responder's own answers
        (``response_validity``), not dated ahead of this host's clock (a presigner with a
        fast clock would otherwise publish answers clients refuse), by a signer of this
        issuer that is still valid and not retired (``accepted``: the one this process signs
        with or an older one, decision 0047) and outlives the answer, and its DER says the
        status its row was signed for (bytes and columns disagreeing: refused)."""
        cert_id = row.cert_id_der
        signer_end = accepted.get(row.signer_id, 0.0)
        if not (
            row.next_update > now
            and row.next_update - row.this_update <= self._validity
            and row.this_update <= now + FUTURE_SKEW
            and now < signer_end
            and row.next_update <= signer_end
        ):
            return False
        at = row.der.find(cert_id)
        status = _GOOD if row.cert_status == "issued" else _REVOKED
        return at > 0 and row.der.startswith(status, at + len(cert_id))

    def _store_failed(self, mono: float, exc: CAError) -> None:
        """A failed store read: sign on demand meanwhile, try the store again later."""
        self._store_retry_at = mono + STORE_RETRY
        self.errors.log(
            logging.WARNING,
            "store",
            f"OCSP answer store unreadable ({exc.detail}); signing on demand for "
            f"{STORE_RETRY:.0f} s",
        )

    def _remember_request(self, der: bytes, answer: Answer) -> None:
        """Also key the answer by the request's bytes (the hit path's one dict lookup),
        unless the request is padded beyond what a one-CertID request needs."""
        if len(der) <= MAX_REQUEST_KEY:
            self._store(der, answer)

    @staticmethod
    def _stored_answer(row: StoredAnswer | MappedAnswer, issuer_id: int) -> Answer:
        answer = Answer(
            row.der,
            ResponseStatus.SUCCESSFUL,
            float(row.this_update),
            float(row.next_update),
            float(row.refresh_at),
        )
        answer.issuer_id = issuer_id
        answer.serial_hex = row.serial_hex
        answer.label = "revoked" if row.cert_status == "revoked" else "good"
        return answer

    def _may_sign(self, client: str, cost: int) -> bool:
        """Take ``cost`` tokens from ``client``'s signing budget; False when it is spent."""
        if self._budget is None:
            return True
        return self._budget.take(client, self.monotonic(), cost)

    def _store(self, key: bytes, answer: Answer) -> None:
        responses = self._responses
        old = responses.get(key)
        if old is not None:  # replaced (refreshed): un-index the old answer's key first
            keys = self._by_serial.get((old.issuer_id, old.serial_hex))
            if keys is not None:
                with contextlib.suppress(ValueError):
                    keys.remove(key)
        else:
            while len(responses) >= self.options.max_cached_responses:
                self._evict_oldest()
        responses[key] = answer
        self._by_serial.setdefault((answer.issuer_id, answer.serial_hex), []).append(key)

    def _evict_oldest(self) -> None:
        """Drop the hot cache's oldest entry (dicts keep insertion order: O(1))."""
        key = next(iter(self._responses))
        old = self._responses.pop(key)
        keys = self._by_serial.get((old.issuer_id, old.serial_hex))
        if keys is not None:
            with contextlib.suppress(ValueError):
                keys.remove(key)
            if not keys:
                del self._by_serial[(old.issuer_id, old.serial_hex)]

    def _statuses_for(self, lookups: Sequence[Lookup]) -> list[SerialStatus]:
        result: list[SerialStatus | None] = []
        mono = self.monotonic()
        missing: dict[int, list[str]] = {}
        for lk in lookups:
            if lk.serial_hex is None:
                result.append(UNISSUED)
                continue
            cached = self._statuses.get((lk.issuer_id, lk.serial_hex))
            if cached is None or cached[1] < mono:
                missing.setdefault(lk.issuer_id, []).append(lk.serial_hex)
                result.append(None)
            else:
                result.append(cached[0])
        if missing:
            if not self._db_ok:
                raise CAError(ErrorCode.DB_UNAVAILABLE, "database unreachable, status not cached")
            if len(self._statuses) >= self.options.max_cached_statuses:
                self._statuses.clear()
            for issuer_id, serials in missing.items():
                for serial, status in self.source.statuses(issuer_id, serials).items():
                    self._statuses[(issuer_id, serial)] = (status, mono + self._status_ttl)
        return [
            r if r is not None else self._statuses[(lk.issuer_id, lk.serial_hex or "")][0]
            for r, lk in zip(result, lookups, strict=True)
        ]

    def _sign(self, request: OcspRequest, lookups: Sequence[Lookup]) -> Answer:
        statuses = self._statuses_for(lookups)
        now = self.clock()
        if self._db_ok:
            this_update = now
        else:
            # Known correct only as of the last good poll; refuse once that is too old.
            this_update = self._fresh_as_of
            if now - this_update > self._refresh:
                raise CAError(ErrorCode.DB_UNAVAILABLE, "status too old to vouch for")
        issuer_id = lookups[0].issuer_id
        signer = self.signers.signer_for(issuer_id)
        signer_end = signer.not_after.timestamp()
        if signer_end <= now:
            raise CAError(ErrorCode.HSM_FAILURE, "no valid OCSP signer")
        this_ts = float(int(this_update))
        next_ts = float(int(min(this_ts + self._validity, signer_end)))
        der = build_response_der(
            [SingleAnswer(lk.cert_id.der, st) for lk, st in zip(lookups, statuses, strict=True)],
            signer,
            produced_at=_utc(now),
            this_update=_utc(this_ts),
            next_update=_utc(next_ts),
            nonce=request.nonce,
        )
        refresh_at = min(this_ts + self._refresh, next_ts - 1)
        answer = Answer(der, ResponseStatus.SUCCESSFUL, this_ts, next_ts, refresh_at)
        answer.issuer_id = issuer_id
        answer.serial_hex = lookups[0].serial_hex
        answer.label = status_label(statuses)
        return answer
