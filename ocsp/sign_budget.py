"""Per-client signing budget of one responder worker: a token bucket keyed by address.

The responder's own (it must not import the CA API package): single-threaded like the
``Responder`` that owns it, and a request of several CertIDs takes its whole cost at once.
"""

from __future__ import annotations

from collections import OrderedDict


class SignBudget:
    """``rate`` signatures per second per client, up to ``burst``; remembers ``max_keys``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float, cost: int = 1) -> bool:
        """Spend ``cost`` tokens of ``client`` at monotonic time ``now``; False if too few."""
        tokens, last = self._state.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        self._state[client] = (tokens - cost if allowed else tokens, now)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return allowed
