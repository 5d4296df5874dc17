"""A bounded in-memory nonce cache (per process, shared by its threads).

A nonce is remembered until its signature could no longer be accepted anyway (``created`` +
window + skew). When the cache is full the oldest entries are dropped and a floor is raised:
any signature created at or before the newest dropped one is refused, so eviction can never
re-open a replay. Nonces are kept per certificate (the verifier passes the key
``((issuer key hash, serial), nonce)``), so one agent cannot use up another's nonce.

This cache is per process. Gateways with several workers or hosts share one store instead:
anything with :class:`ReplayStore`'s ``add``, e.g. ``gateway.replay_redis.RedisReplayCache``.
A store that cannot answer raises :class:`ReplayUnavailable`; the verifier then refuses the
request (``replay-cache-unavailable``, 503) rather than risk accepting a replay.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol


class ReplayUnavailable(Exception):
    """The shared replay store cannot say whether a nonce is new (the request is refused)."""


class ReplayStore(Protocol):
    """Where the verifier records nonces (the in-process cache or a shared one)."""

    def add(self, nonce: Hashable, created: int, keep_until: float, now: float) -> bool:
        """Record ``nonce`` until ``keep_until``; False if seen before. Atomic across
        every verifier sharing the store; raises :class:`ReplayUnavailable` when it cannot
        tell."""
        ...


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
