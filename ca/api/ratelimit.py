"""A small in-process token bucket (per worker) for the enrollment endpoints.

Per-process limits are a first line of defence against a runaway or hostile client; a reverse
proxy in front (deploy/) enforces the global limit in production.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second per key, up to ``burst``; remembers at most ``max_keys``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Consume one token for ``key``; returns 0 when allowed, else seconds to wait."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._state.pop(key, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, t)
                wait = 0.0
            else:
                self._state[key] = (tokens, t)
                wait = (1.0 - tokens) / self.rate
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return wait

    def peek(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may take a token (0 when it may now); consumes nothing."""
        t = time.monotonic() if now is None else now
        with self._lock:
            state = self._state.get(key)
        if state is None:
            return 0.0
        tokens = min(float(self.burst), state[0] + (t - state[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
