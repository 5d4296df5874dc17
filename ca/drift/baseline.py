"""One agent's behavioural baseline: what it usually does, with an exponentially fading memory.

Every store is a sum of observations weighted by ``weight``, which grows by ``1/decay`` each
step instead of every past value shrinking by ``decay``: an observation ``half_life`` old then
counts half as much as a new one, and a step costs O(1) whatever the baseline holds. Ratios
(distributions, means) are unaffected by the common scale; ``_rescale`` brings the numbers
back near 1 long before a float could overflow.

So slow, legitimate change (a new habit over weeks) is absorbed, and the speed at which an
attacker could drift unnoticed is bounded by ``half_life`` (measured: ``make bench-drift``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from ca.drift.features import Bin

SLOTS = 96  # the rate profile's resolution: quarters of an hour (a market open is one)
_RESCALE_AT = 1e100
_SHRINK = 2.0  # pseudo-bins pulling an hour's mean rate toward the agent's overall mean
_NEW_FLOOR = 0.001  # least probability of a transition (times its target's probability)
_YOUNG = 30.0  # a route or scope with fewer (recent-weighted) records than this is young ...
_YOUNG_FLOOR = 0.1  # ... and the baseline grants it at least this probability: its novelty
# is the new_routes / new_scopes flag's to count, not the distribution's (decision 0057)
_HOUR_PRIOR = 0.02  # share of activity the profile grants every hour (smoothing)


@dataclass
class Moments:
    """Weighted count, mean and variance of one feature's raw surprise in ordinary windows."""

    s0: float = 0.0
    s1: float = 0.0
    s2: float = 0.0

    def add(self, x: float, w: float) -> None:
        self.s0 += w
        self.s1 += w * x
        self.s2 += w * x * x

    def scale(self, f: float) -> None:
        self.s0 *= f
        self.s1 *= f
        self.s2 *= f

    def mean_sd(self, w: float) -> tuple[float, float]:
        """Mean and standard deviation, with a weak prior (mean 1, sd 2, 5 windows) so that
        the first windows of a baseline are judged leniently rather than not at all."""
        prior = 5.0 * w
        n = self.s0 + prior
        mean = (self.s1 + prior * 1.0) / n
        var = (self.s2 + prior * 5.0) / n - mean * mean
        return mean, math.sqrt(max(var, 0.0))


@dataclass
class AgentBaseline:
    """The learnt habits of one agent (see the module docstring for the weighting)."""

    decay: float
    weight: float = 1.0
    bins: int = 0  # steps learnt
    records: int = 0  # records learnt
    total: float = 0.0
    hour_sum: list[float] = field(default_factory=lambda: [0.0] * 24)  # records per hour
    slot_sum: list[float] = field(default_factory=lambda: [0.0] * SLOTS)  # ... per slot
    slot_bins: list[float] = field(default_factory=lambda: [0.0] * SLOTS)  # bins per slot
    slot_bursts: list[float] = field(default_factory=lambda: [0.0] * SLOTS)  # bursts per slot
    bursts: float = 0.0
    all_bins: float = 0.0
    routes: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    scopes: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    trans: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    trans_from: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    trans_types: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    denials: float = 0.0
    seen_routes: set[str] = field(default_factory=set)
    seen_scopes: set[str] = field(default_factory=set)
    moments: defaultdict[str, Moments] = field(default_factory=lambda: defaultdict(Moments))
    spread: Moments = field(default_factory=Moments)  # (n - expected)^2 / expected per window

    @classmethod
    def for_half_life(cls, half_life: int, step: int) -> AgentBaseline:
        """An empty baseline whose observations halve in weight every ``half_life`` seconds."""
        return cls(decay=0.5 ** (step / half_life))

    # -- learning ---------------------------------------------------------------------------
    def learn(self, b: Bin) -> None:
        """Absorb one step's bin (empty bins too: quiet hours are part of the habit)."""
        self.weight /= self.decay
        if self.weight > _RESCALE_AT:
            self._rescale()
        w = self.weight
        self.bins += 1
        self.slot_bins[b.slot] += w
        self.all_bins += w
        if not b.count:
            return
        self.records += b.count
        self.total += w * b.count
        self.hour_sum[b.hour] += w * b.count
        self.slot_sum[b.slot] += w * b.count
        self.slot_bursts[b.slot] += w * b.bursts
        self.bursts += w * b.bursts
        self.denials += w * b.denials
        for route, c in b.routes.items():
            self.routes[route] += w * c
            self.seen_routes.add(route)
        for scope, c in b.scopes.items():
            self.scopes[scope] += w * c
            self.seen_scopes.add(scope)
        for pair, c in b.transitions.items():
            if pair not in self.trans:
                self.trans_types[pair[0]] += 1
            self.trans[pair] += w * c
            self.trans_from[pair[0]] += w * c

    def learn_moment(self, feature: str, raw: float) -> None:
        """Absorb one ordinary window's raw surprise of ``feature`` (self-calibration)."""
        self.moments[feature].add(raw, self.weight)

    def learn_spread(self, observed: int, expected: float) -> None:
        """Absorb one window's count against its expectation (for ``dispersion``)."""
        self.spread.add((observed - expected) ** 2 / expected, self.weight)

    def dispersion(self) -> float:
        """How much burstier than Poisson the agent's window counts are (1 = Poisson): calls
        come in sessions, so counts vary more than independent calls would."""
        prior = 20.0 * self.weight
        return max(1.0, (self.spread.s1 + prior) / (self.spread.s0 + prior))

    def _rescale(self) -> None:
        f = 1.0 / self.weight
        self.weight = 1.0
        self.total *= f
        self.all_bins *= f
        self.denials *= f
        self.hour_sum = [v * f for v in self.hour_sum]
        self.slot_sum = [v * f for v in self.slot_sum]
        self.slot_bins = [v * f for v in self.slot_bins]
        self.slot_bursts = [v * f for v in self.slot_bursts]
        self.bursts *= f
        for store in (self.routes, self.scopes, self.trans, self.trans_from):
            for k in store:
                store[k] *= f  # type: ignore[index]
        for m in self.moments.values():
            m.scale(f)
        self.spread.scale(f)

    # -- expectations -----------------------------------------------------------------------
    def expected_count(self, slot: int) -> float:
        """Expected records in one step in quarter-hour ``slot`` of the day (shrunk toward
        the overall mean)."""
        overall = self.total / self.all_bins if self.all_bins else 0.0
        w = self.weight
        mean = (self.slot_sum[slot] + _SHRINK * w * overall) / (self.slot_bins[slot] + _SHRINK * w)
        return max(mean, 1e-3)

    def expected_bursts(self, slot: int) -> float:
        """Expected bursts (sessions of calls) in one step in quarter-hour ``slot``, shrunk
        like ``expected_count``."""
        overall = self.bursts / self.all_bins if self.all_bins else 0.0
        w = self.weight
        mean = (self.slot_bursts[slot] + _SHRINK * w * overall) / (
            self.slot_bins[slot] + _SHRINK * w
        )
        return max(mean, 1e-3)

    def route_prob(self, route: str) -> float:
        """Baseline probability that a record is for ``route`` (a floor for unseen ones)."""
        return self._prob(self.routes, route)

    def scope_prob(self, scope: str) -> float:
        """Baseline probability that a record requires ``scope``."""
        return self._prob(self.scopes, scope)

    def _prob(self, store: dict[str, float], key: str) -> float:
        known = store.get(key, 0.0)
        p = (known + self.weight / (len(store) + 1)) / (self.total + self.weight)
        return max(p, _YOUNG_FLOOR) if known < _YOUNG * self.weight else p

    def transition_prob(self, pair: tuple[str, str]) -> float:
        """P(next route | previous route), Witten-Bell smoothed: the share ``a`` leaves for
        unseen successors is its distinct successors over its (recent-weighted) transitions
        plus them, so an agent whose calls always follow one pattern is surprised more by a
        new one than an agent that mixes freely; backed off to the route distribution."""
        a, b = pair
        back = self.route_prob(b)
        types = self.trans_types.get(a, 0)
        if not types:
            return back  # a route it never left: nothing known about what follows it
        strength = types * self.weight
        return max(
            (self.trans.get(pair, 0.0) + strength * back)
            / (self.trans_from.get(a, 0.0) + strength),
            _NEW_FLOOR * back,
        )

    def denial_rate(self) -> float:
        """Baseline share of denied records (smoothed, never 0)."""
        return max((self.denials + 0.5 * self.weight) / (self.total + 50 * self.weight), 0.002)

    def hour_share(self, hour: int) -> float:
        """Share of the agent's activity in ``hour`` (neighbouring hours smoothed in)."""
        if self.total <= 0:
            return 1 / 24
        raw = [v / self.total for v in self.hour_sum]
        near = 0.5 * raw[hour] + 0.25 * raw[(hour - 1) % 24] + 0.25 * raw[(hour + 1) % 24]
        return (1 - _HOUR_PRIOR) * near + _HOUR_PRIOR / 24
