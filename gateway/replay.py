"""A bounded in-memory nonce cache (per process, shared by its threads).

A nonce is remembered until its signature could no longer be accepted anyway (``created`` +
window + skew). When the cache is full the oldest entries are dropped and a floor is raised:
any signature created at or before the newest dropped one is refused, so eviction can never
re-open a replay. Nonces are kept per certificate (the verifier passes the key
``((issuer key hash, serial), nonce)``), so one agent cannot use up another's nonce. Several
worker processes each have their own cache; deploy one worker per
gateway, sticky routing, or a shared store if replays across workers matter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ReplayCache:
    """Remembers nonces; :meth:`add` is False for a nonce seen before (or below the floor)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()
        self._floor = -(2**62)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: Hashable, created: int, keep_until: float, now: float) -> bool:
        """Record ``nonce`` (any hashable key); False if it is a replay (or too old to tell)."""
        with self._lock:
            if created <= self._floor or nonce in self._seen:
                return False
            seen = self._seen
            if len(seen) >= self.max_entries:
                while seen:
                    _, (until, _) = next(iter(seen.items()))
                    if until >= now:
                        break
                    seen.popitem(last=False)
                while len(seen) >= self.max_entries:
                    _, (_, old_created) = seen.popitem(last=False)
                    self._floor = max(self._floor, old_created)
                if created <= self._floor:
                    return False
            seen[nonce] = (keep_until, created)
            return True
