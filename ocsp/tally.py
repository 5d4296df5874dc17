"""Per-process counts of OCSP answers by (status, cache), kept as plain integers.

The hot path adds one to a dict entry (about 0.1 us); ``ocsp.metrics`` moves the counts to the
Prometheus counters about once a second and before each scrape, so the hot path never takes
prometheus-client's multiprocess lock nor writes its memory-mapped file (decision 0031).

Two threads count into a worker's tally (decision 0044): the event loop (answers cached or
refused inline) and the responder thread (everything that needs the responder). Each thread
adds to its own dict of running totals, which only it writes, so ``add`` takes no lock;
``take`` copies every thread's dict (one C call, atomic under the GIL) and returns what grew
since the previous ``take``.
"""

from __future__ import annotations

import threading

from ocsp.response import ResponseStatus

HIT, MISS, NONE = "hit", "miss", "none"  # pre-signed answer, signed now, error answer
STORE = "store"  # a pre-signed answer read from the shared store (ocsp_responses, decision 0038)
MAP = "map"  # a pre-signed answer read from the host's answer map (ocsp.answer_map, decision 0050)
#: the RFC 6960 names of the error statuses, as metric label values
ERROR_LABELS = {
    ResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ResponseStatus.INTERNAL_ERROR: "internalError",
    ResponseStatus.TRY_LATER: "tryLater",
    ResponseStatus.SIG_REQUIRED: "sigRequired",
    ResponseStatus.UNAUTHORIZED: "unauthorized",
}

Counts = dict[tuple[str, str], int]


class AnswerTally:
    """Counts of answers since the last ``take``; any number of threads may ``add``."""

    __slots__ = ("_local", "_lock", "_taken", "_totals")

    def __init__(self) -> None:
        self._local = threading.local()
        self._totals: list[Counts] = []  # one per thread that ever added, running totals
        self._taken: Counts = {}  # the sum of the totals at the last take
        self._lock = threading.Lock()  # take and thread registration only

    def add(self, status: str, cache: str) -> None:
        """Count one answer (no lock: this thread's own dict)."""
        try:
            counts: Counts = self._local.counts
        except AttributeError:
            counts = self._register()
        key = (status, cache)
        counts[key] = counts.get(key, 0) + 1

    def _register(self) -> Counts:
        counts: Counts = {}
        with self._lock:
            self._totals.append(counts)
        self._local.counts = counts
        return counts

    def take(self) -> Counts:
        """The counts since the last ``take`` (from every thread)."""
        with self._lock:
            now: Counts = {}
            for totals in self._totals:
                for key, n in totals.copy().items():
                    now[key] = now.get(key, 0) + n
            taken, self._taken = self._taken, now
        return {key: n - taken.get(key, 0) for key, n in now.items() if n != taken.get(key, 0)}


#: this process's tally (the responder and the HTTP layer count into it)
ANSWERS = AnswerTally()
