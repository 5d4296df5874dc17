"""What one time bin of one agent's records holds, and the surprise measures of a window.

Surprises are in nats (natural-log units of improbability) and use closed-form Chernoff
bounds, so a window costs a few dictionary look-ups per distinct route, never a numeric
library: ``poisson_surprise`` for counts against an expected rate, ``binomial_surprise`` for
denials against an expected denial rate, ``likelihood_surprise`` for how far observed
categories (routes, transitions) are from the baseline's distribution.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")
BURST_GAP = 10.0  # seconds of silence after which an agent's next record starts a new burst


@dataclass
class Bin:
    """One agent's records in one step (``slot``: UTC quarter-hour of the day of its start)."""

    slot: int
    count: int = 0
    bursts: int = 0  # records that start a burst (BURST_GAP after the agent's previous one)
    denials: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    scopes: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    denied_scopes: Counter[str] = field(default_factory=Counter)

    @property
    def hour(self) -> int:
        """The UTC hour of the day of the bin's start."""
        return self.slot // 4


@dataclass
class Window:
    """The bins scored together, merged."""

    count: int = 0
    bursts: int = 0
    denials: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    scopes: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    hours: Counter[int] = field(default_factory=Counter)  # records per hour of day

    @classmethod
    def merge(cls, bins: list[Bin]) -> Window:
        """The window made of ``bins``."""
        w = cls()
        for b in bins:
            if not b.count:
                continue
            w.count += b.count
            w.bursts += b.bursts
            w.denials += b.denials
            w.routes.update(b.routes)
            w.scopes.update(b.scopes)
            w.transitions.update(b.transitions)
            w.hours[b.hour] += b.count
        return w


def poisson_surprise(observed: float, expected: float) -> float:
    """-ln of the Chernoff bound on P(N >= observed) for N ~ Poisson(expected); 0 below it."""
    if observed <= expected:
        return 0.0
    return observed * math.log(observed / expected) - observed + expected


def binomial_surprise(k: int, n: int, p: float) -> float:
    """-ln of the Chernoff bound on P(K >= k) for K ~ Binomial(n, p); 0 at or below n*p."""
    if n <= 0 or k <= n * p:
        return 0.0
    q = k / n
    head = q * math.log(q / p)
    tail = 0.0 if q >= 1.0 else (1 - q) * math.log((1 - q) / (1 - p))
    return n * (head + tail)


def likelihood_surprise(
    counts: Mapping[K, int], prob: Callable[[K], float]
) -> tuple[float, K, float, float] | None:  # (surprise, top category, its share, its prob)
    """How much better the window's own frequencies explain ``counts`` than ``prob`` does.

    The log-likelihood ratio ``sum c * ln((c/n) / prob(k))`` (``n`` times the Kullback-Leibler
    divergence) less its expectation under the baseline, ``(categories - 1) / 2``; with the
    category contributing most, its observed share and its expected probability. ``None``
    for no counts.
    """
    n = sum(counts.values())
    if n == 0:
        return None
    items = iter(counts.items())
    top, c = next(items)
    top_share, top_prob = c / n, prob(top)
    top_value = c * math.log(top_share / top_prob)
    total = top_value
    for key, c in items:
        p = prob(key)
        share = c / n
        part = c * math.log(share / p)
        total += part
        if part > top_value:
            top, top_value, top_share, top_prob = key, part, share, p
    return max(0.0, total - (len(counts) - 1) / 2), top, top_share, top_prob
