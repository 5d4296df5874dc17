"""Reading ``status_changes`` in id order without losing ids committed out of order (0047).

The feed's ids come from a sequence: a writer takes its id when it inserts, and its row becomes
visible when it commits. With concurrent writers a lower id can therefore become visible
after a higher one was read, so a reader that only remembers the highest id it saw skips that
change for good. ``ChangeCursor`` remembers the ids below its high-water mark that it has not
seen (holes) and asks for them again on every read, until they appear or it gives up on them:
a rolled-back writer leaves a hole for ever, so holes cannot be waited for without end.

A hole is given up once it is older than ``window`` seconds *and* every transaction that was
running when it was first seen has ended (``Snapshot``: PostgreSQL's ``pg_current_snapshot``;
SQLite has one writer at a time and no holes of this kind). So a long bulk revocation, whose
ids become holes as soon as a later writer commits, is waited for as long as it runs; a hole
older than ``max_age`` is given up whatever the snapshot says (an idle transaction left open
for hours must not grow the reader's state). What is given up is the backstop's: the
presigner's sweep, the responder's refresh bound. The number of holes is bounded by
``max_holes`` (a sequence that jumps by millions is not a million holes).

One implementation for both readers of the feed: the responder's hot-cache invalidation
(``ocsp.responder``) and the presigner (``ocsp.presigner``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ocsp.status import Change, Snapshot

WINDOW = 60.0  # seconds a hole is re-read before it may be given up
MAX_AGE = 900.0  # seconds after which a hole is given up whatever the snapshot says
MAX_HOLES = 10_000  # holes remembered at most (the highest ids are kept)
LOOKBACK = 1000  # ids below the head watched at start (writers may be in flight)


class FeedSource(Protocol):
    """What the cursor reads (``ocsp.status.SqlStatusSource``)."""

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]: ...
    def snapshot(self) -> Snapshot | None: ...


@dataclass
class _Hole:
    since: float  # monotonic time first seen
    barrier: int | None  # xmax when first seen: given up only once xmin has passed it


@dataclass
class FeedRead:
    """One read: the changes (new ones and holes filled), whether it hit ``limit`` (read
    again at once), and how many holes were given up or not tracked (the caller's backstop)."""

    changes: list[Change] = field(default_factory=list)
    full: bool = False
    lost: int = 0


class ChangeCursor:
    """A high-water mark plus the holes below it (see the module docstring)."""

    def __init__(
        self,
        window: float = WINDOW,
        max_age: float = MAX_AGE,
        max_holes: int = MAX_HOLES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_age = max_age
        self.max_holes = max_holes
        self.monotonic = monotonic
        self.high = 0
        self.holes: dict[int, _Hole] = {}

    def start(self, head: int, lookback: int = LOOKBACK) -> None:
        """Go on from just below ``head`` (the highest id visible now; never back, holes
        kept): the next read returns the last ``lookback`` ids again and finds the holes
        among them (writers in flight at start, or when a reader skips a flood of changes)."""
        self.high = max(self.high, head - lookback, 0)

    def rewound(self, head: int) -> bool:
        """Whether the feed's highest id went below the high-water mark (the database was
        restored from a backup or replaced: ids are handed out again); if so the cursor
        starts again below ``head`` and the caller must assume that anything changed."""
        if head >= self.high:
            return False
        self.high = max(0, head - LOOKBACK)
        self.holes.clear()
        return True

    def read(self, source: FeedSource, limit: int) -> FeedRead:
        """The changes after the high-water mark and the holes that appeared, in id order."""
        changes = source.changes(self.high, list(self.holes), limit)
        result = FeedRead(changes, full=len(changes) >= limit)
        seen: set[int] = set()
        top = self.high
        for ch in changes:
            seen.add(ch.id)
            self.holes.pop(ch.id, None)
            top = max(top, ch.id)
        now = self.monotonic()
        new = self._new_holes(self.high, top, seen)
        result.lost += new[1]
        self.high = top
        snapshot = source.snapshot() if new[0] or self.holes else None
        for hole in new[0]:
            self.holes[hole] = _Hole(now, snapshot.xmax if snapshot is not None else None)
        result.lost += self._give_up(now, snapshot)
        return result

    def _new_holes(self, low: int, top: int, seen: set[int]) -> tuple[list[int], int]:
        """Ids in (low, top) not seen: at most ``max_holes`` of them, the highest; and how
        many more there were (given up at once)."""
        first = max(low + 1, top - self.max_holes)
        holes = [i for i in range(first, top) if i not in seen]
        return holes, max(0, first - (low + 1) - sum(1 for i in seen if low < i < first))

    def _give_up(self, now: float, snapshot: Snapshot | None) -> int:
        lost = 0
        for hole, info in list(self.holes.items()):
            age = now - info.since
            ended = info.barrier is None or (snapshot is not None and snapshot.xmin >= info.barrier)
            if age > self.max_age or (age > self.window and ended):
                del self.holes[hole]
                lost += 1
        while len(self.holes) > self.max_holes:
            del self.holes[min(self.holes)]
            lost += 1
        return lost


def serials_by_issuer(changes: Sequence[Change]) -> dict[int, list[str]]:
    """The changed serials per issuer, each once, in feed order."""
    out: dict[int, dict[str, None]] = {}
    for ch in changes:
        out.setdefault(ch.issuer_id, {})[ch.serial_hex] = None
    return {issuer: list(serials) for issuer, serials in out.items()}
