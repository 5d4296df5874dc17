"""Per-process counts of OCSP answers by (status, cache), kept as plain integers.

The hot path adds one to a dict entry (about 0.1 us); ``ocsp.metrics`` moves the counts to the
Prometheus counters about once a second and before each scrape, so the hot path never takes
prometheus-client's multiprocess lock nor writes its memory-mapped file (decision 0031).
"""

from __future__ import annotations

from ocsp.response import ResponseStatus

HIT, MISS, NONE = "hit", "miss", "none"  # pre-signed answer, signed now, error answer
STORE = "store"  # a pre-signed answer read from the shared store (ocsp_responses, decision 0038)
#: the RFC 6960 names of the error statuses, as metric label values
ERROR_LABELS = {
    ResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ResponseStatus.INTERNAL_ERROR: "internalError",
    ResponseStatus.TRY_LATER: "tryLater",
    ResponseStatus.SIG_REQUIRED: "sigRequired",
    ResponseStatus.UNAUTHORIZED: "unauthorized",
}


class AnswerTally:
    """Counts of answers since the last ``take`` (one per process; not thread-safe, like the
    responder: one event loop thread calls it)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, status: str, cache: str) -> None:
        """Count one answer."""
        key = (status, cache)
        self.counts[key] = self.counts.get(key, 0) + 1

    def take(self) -> dict[tuple[str, str], int]:
        """The counts so far; the tally starts again from zero."""
        counts, self.counts = self.counts, {}
        return counts


#: this process's tally (the responder and the HTTP layer count into it)
ANSWERS = AnswerTally()
