"""Open-connection counts of the OCSP workers in memory shared across gunicorn's fork.

Why: all workers accept from one listening socket (decision 0015), and the kernel wakes every
waiting worker for each new connection; the first to run used to take the whole queue, so a
burst of keep-alive connections (wrk's 8, a proxy's pool) could land on one worker while its
sibling idled (issue 15). Each worker publishes how many connections it holds; a worker woken
with more than the least-loaded sibling plus ``SLACK`` leaves the queue to it for
``DEFER_SECONDS`` (decision 0044).

The board is an anonymous shared mapping made when this module is imported, which gunicorn's
master does when it loads the worker class, before it forks; slots are handed out in the
master (``claim``: single-threaded, no race) and each worker writes only its own slot. A slot
not refreshed for ``STALE_SECONDS`` (a dead or stuck worker) is ignored; a worker that does
not accept (stopping, full, orphaned) publishes ``UNAVAILABLE``. A torn read can only bias
one accept decision.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

SLOTS = 64  # more workers than this (or with old ones lingering) do not take part
SLACK = 4  # plus half the least-loaded sibling's count: what a worker may hold above it and accept
DEFER_SECONDS = 0.002  # how long a loaded worker leaves the queue to its siblings at most
STALE_SECONDS = 3.0  # a slot older than this is ignored (workers refresh it every ~1 s)
UNAVAILABLE = 1 << 40  # the count of a worker that does not accept now
_SLOT = struct.Struct("=qd")  # open connections, monotonic time of the last publish

_TOP = struct.Struct("=q")  # header: slots in use (1 + the highest slot ever claimed)
_board = mmap.mmap(-1, _TOP.size + SLOTS * _SLOT.size)
_owners: dict[int, Any] = {}  # master side: slot -> the worker object given it


def _alive(worker: Any) -> bool:
    pid = getattr(worker, "pid", None)
    if not isinstance(pid, int):
        return True  # "[booting]": forked right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def claim(worker: Any) -> int:
    """A free slot for ``worker`` (call in the master, before the fork), or -1 if none."""
    for slot in range(SLOTS):
        owner = _owners.get(slot)
        if owner is None or not _alive(owner):
            _owners[slot] = worker
            _SLOT.pack_into(_board, _TOP.size + slot * _SLOT.size, UNAVAILABLE, 0.0)
            _TOP.pack_into(_board, 0, max(_owners) + 1)
            return slot
    return -1


def publish(slot: int, connections: int, now: float) -> None:
    """Write this worker's count (``UNAVAILABLE`` when it does not accept) and freshness."""
    if slot >= 0:
        _SLOT.pack_into(_board, _TOP.size + slot * _SLOT.size, connections, now)


def least_other(slot: int, now: float) -> int | None:
    """The fewest connections a fresh accepting sibling holds, or None if there is none."""
    least: int | None = None
    top = min(SLOTS, _TOP.unpack_from(_board, 0)[0])
    end = _TOP.size + top * _SLOT.size
    for index, (count, seen) in enumerate(_SLOT.iter_unpack(_board[_TOP.size : end])):
        if index == slot or now - seen > STALE_SECONDS or count >= UNAVAILABLE:
            continue
        if least is None or count < least:
            least = count
    return least
