"""Clock skew: this host's clock against the database server's (issue 10, item 9).

A CA whose clock is ahead issues certificates that are not yet valid and OCSP answers whose
thisUpdate lies in the future; one that is behind produces answers older than its responder
certificate. The database server's clock is the reference every process of a deployment
shares, so each process measures its offset from it at start and every
``clock_check_interval_seconds``, and refuses to sign (``ErrorCode.CLOCK_SKEW``) while the
offset is beyond ``max_clock_skew_seconds``.

The core is pure: :func:`offset_from` and :func:`skew_error` are functions of their inputs, and
:class:`SkewMonitor` takes its measurement and its monotonic clock as callables. SQLite has no
server clock: there the check is skipped, and readiness says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from ca.errors import CAError, ErrorCode

__all__ = ["SkewMonitor", "SkewReading", "database_offset", "offset_from", "skew_error"]

log = logging.getLogger("agentca.clock")

NO_SERVER_CLOCK = "not measured: SQLite has no server clock"


def offset_from(local_before: float, server: float, local_after: float) -> float:
    """Seconds this host is ahead of the server (negative: behind), taking the server's reading
    as made half-way through the round trip."""
    return (local_before + local_after) / 2 - server


def skew_error(offset: float | None, bound: float) -> CAError | None:
    """The refusal for ``offset``, or None when it is within ``bound`` (0: no bound), unknown."""
    if offset is None or bound <= 0 or abs(offset) <= bound:
        return None
    side = "ahead of" if offset > 0 else "behind"
    return CAError(
        ErrorCode.CLOCK_SKEW,
        f"this host's clock is {abs(offset):.1f} s {side} the database server's, beyond the "
        f"bound of {bound:g} s (max_clock_skew_seconds): refusing to sign until the clocks "
        "agree (check NTP)",
        retry_after=30,
        clock_offset_seconds=round(offset, 3),
    )


@dataclass(frozen=True)
class SkewReading:
    """The last measurement: offset in seconds (None: not measured), and how it went."""

    offset: float | None
    source: str
    age: float | None  # seconds since the last successful measurement
    error: str | None = None

    def to_dict(self, bound: float) -> dict[str, Any]:
        refused = skew_error(self.offset, bound) is not None
        body: dict[str, Any] = {
            "status": "skewed" if refused else "ok",
            "offset_seconds": None if self.offset is None else round(self.offset, 3),
            "max_skew_seconds": bound,
            "reference": self.source,
        }
        if self.age is not None:
            body["measured_seconds_ago"] = round(self.age, 1)
        if self.error:
            body["error"] = self.error
        return body


class SkewMonitor:
    """Holds this process's last measured offset; re-measures when it is older than
    ``interval`` (in a background thread when asked from the signing path, so a signature
    never waits for the database)."""

    def __init__(
        self,
        bound: float,
        interval: float,
        measure: Callable[[], float | None] | None,
        source: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bound = bound
        self.interval = interval
        self._measure = measure
        self._source = source
        self._monotonic = monotonic
        self._offset: float | None = None
        self._measured_at: float | None = None  # last success
        self._attempted_at: float | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._in_flight = False

    def refresh(self) -> SkewReading:
        """Measure now (synchronously); a failed measurement keeps the previous offset."""
        if self._measure is None:
            return self.reading()
        now = self._monotonic()
        self._attempted_at = now
        try:
            offset = self._measure()
        except Exception as exc:  # the database is down: keep what we knew, say why
            self._error = f"measurement failed: {type(exc).__name__}"
        else:
            was_bad = skew_error(self._offset, self.bound) is not None
            self._offset, self._measured_at, self._error = offset, self._monotonic(), None
            problem = skew_error(offset, self.bound)
            if problem is not None:
                log.warning("clock skew: %s", problem.detail)
            elif was_bad:
                log.warning("clock skew back within bound: offset %.3f s", offset or 0.0)
        return self.reading()

    def due(self, now: float) -> bool:
        """True if the reading is older than the interval (or was never taken)."""
        if self._measure is None:
            return False
        return self._attempted_at is None or now - self._attempted_at >= self.interval

    def reading(self) -> SkewReading:
        age = None if self._measured_at is None else self._monotonic() - self._measured_at
        source = self._source if self._measure is not None else NO_SERVER_CLOCK
        return SkewReading(self._offset, source, age, self._error)

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._in_flight:
                return
            self._in_flight = True

        def run() -> None:
            try:
                self.refresh()
            finally:
                self._in_flight = False

        threading.Thread(target=run, name="agentca-clockcheck", daemon=True).start()

    def check(self) -> None:
        """The signing guard: raise ``CLOCK_SKEW`` while the last offset is beyond the bound."""
        if self.due(self._monotonic()):
            self._attempted_at = self._monotonic()
            self._refresh_in_background()
        problem = skew_error(self._offset, self.bound)
        if problem is not None:
            raise problem


def database_offset(engine: Engine) -> float | None:
    """This host's offset from the database server's clock; None where it has none (SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        before = time.time()
        server = conn.execute(text("select extract(epoch from clock_timestamp())")).scalar_one()
        after = time.time()
    return offset_from(before, float(server), after)


def monitor_for(engine: Engine, bound: float, interval: float) -> SkewMonitor:
    """A monitor against ``engine``'s server clock, measured once now (at start)."""
    measure = None if engine.dialect.name != "postgresql" else (lambda: database_offset(engine))
    monitor = SkewMonitor(bound, interval, measure, engine.dialect.name)
    monitor.refresh()
    return monitor
