"""``ChangeCursor`` (decision 0047), pure: holes below the high-water mark are re-read until
they appear, kept while a writer that may fill them runs, given up after the window once it
has ended (or after ``max_age`` whatever), and bounded in number."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ocsp.change_feed import ChangeCursor, serials_by_issuer
from ocsp.status import Change, Snapshot


class Feed:
    def __init__(self) -> None:
        self.visible: dict[int, Change] = {}
        self.snap: Snapshot | None = Snapshot(100, 110)
        self.asked_also: list[list[int]] = []

    def commit(self, *ids: int) -> None:
        for i in ids:
            self.visible[i] = Change(i, 2, format(i, "x"))

    def changes(self, after: int, also: Iterable[int], limit: int) -> list[Change]:
        extra = set(also)
        self.asked_also.append(sorted(extra))
        ids = sorted(i for i in self.visible if i > after or i in extra)
        return [self.visible[i] for i in ids[:limit]]

    def snapshot(self) -> Snapshot | None:
        return self.snap


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_hole_is_read_again_and_its_change_returned_when_it_commits() -> None:
    feed, clock = Feed(), Clock()
    cursor = ChangeCursor(monotonic=clock)
    feed.commit(1, 2, 4)
    assert [c.id for c in cursor.read(feed, 100).changes] == [1, 2, 4]
    assert set(cursor.holes) == {3} and cursor.high == 4
    feed.commit(3, 5)
    assert [c.id for c in cursor.read(feed, 100).changes] == [3, 5]
    assert feed.asked_also[-1] == [3]
    assert not cursor.holes


def test_a_hole_is_kept_past_the_window_while_its_writer_may_still_commit() -> None:
    feed, clock = Feed(), Clock()
    cursor = ChangeCursor(window=60, max_age=900, monotonic=clock)
    feed.commit(1, 3)
    cursor.read(feed, 100)  # hole 2, first seen while xmax was 110
    clock.now += 120
    feed.snap = Snapshot(105, 120)  # a transaction older than 110 still runs
    assert cursor.read(feed, 100).lost == 0 and 2 in cursor.holes
    feed.snap = Snapshot(110, 120)  # every writer of that time has ended
    assert cursor.read(feed, 100).lost == 1 and not cursor.holes


def test_within_the_window_a_hole_is_kept_even_if_its_writer_ended() -> None:
    feed, clock = Feed(), Clock()
    cursor = ChangeCursor(window=60, monotonic=clock)
    feed.commit(1, 3)
    cursor.read(feed, 100)
    feed.snap = Snapshot(500, 600)
    clock.now += 30
    assert cursor.read(feed, 100).lost == 0 and 2 in cursor.holes


def test_without_snapshots_a_hole_lasts_the_window_and_max_age_bounds_every_hole() -> None:
    feed, clock = Feed(), Clock()
    feed.snap = None  # SQLite
    cursor = ChangeCursor(window=60, max_age=900, monotonic=clock)
    feed.commit(1, 3)
    cursor.read(feed, 100)
    clock.now += 61
    assert cursor.read(feed, 100).lost == 1
    feed.snap = Snapshot(1, 2)
    feed.commit(5)
    cursor.read(feed, 100)  # hole 4, its writer "running" for ever
    clock.now += 901
    assert cursor.read(feed, 100).lost == 1 and not cursor.holes


def test_a_jump_of_the_sequence_is_bounded_in_time_and_memory() -> None:
    feed, clock = Feed(), Clock()
    cursor = ChangeCursor(max_holes=100, monotonic=clock)
    feed.commit(1, 10**12)
    started = time.monotonic()
    read = cursor.read(feed, 100)
    assert time.monotonic() - started < 0.5
    assert len(cursor.holes) == 100 and min(cursor.holes) == 10**12 - 100
    assert read.lost == 10**12 - 2 - 100


def test_a_full_read_moves_only_to_what_it_returned() -> None:
    feed, clock = Feed(), Clock()
    cursor = ChangeCursor(monotonic=clock)
    feed.commit(*range(1, 11))
    read = cursor.read(feed, 4)
    assert read.full and cursor.high == 4 and not cursor.holes
    assert [c.id for c in cursor.read(feed, 100).changes] == list(range(5, 11))


def test_start_watches_the_last_ids_below_the_head() -> None:
    feed, clock = Feed(), Clock()
    feed.commit(*range(1, 2001))
    del feed.visible[1500]  # a writer still in flight at start
    cursor = ChangeCursor(monotonic=clock)
    cursor.start(2000, lookback=1000)
    assert len(cursor.read(feed, 5000).changes) == 999
    assert set(cursor.holes) == {1500}


def test_serials_by_issuer_keeps_each_serial_once() -> None:
    changes = [Change(1, 2, "a"), Change(2, 3, "b"), Change(3, 2, "a"), Change(4, 2, "c")]
    assert serials_by_issuer(changes) == {2: ["a", "c"], 3: ["b"]}
