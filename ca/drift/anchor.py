"""The anchor: a frozen copy of an agent's baseline, compared with its last hours (slow drift).

The working baseline fades (``half_life``) so that legitimate change is absorbed; that is
also how an attacker who drifts slowly enough gets absorbed. The anchor is the baseline as it
stood when the run began judging the agent (learnt from the training period only) and is
never updated by what it judges. The agent's last ``LONG`` seconds are compared with it route
by route: the quasi-Poisson surprise of the long window's count against what the anchor
expects for those quarter-hours. It is scored without self-calibration (calibration would
learn the very drift it has to catch): the raw surprise less a fixed allowance
(``ca.drift.scoring``). An operator moves the anchor by running with a later ``--since``
after a review (docs/drift.md, "Slow drift").
"""

from __future__ import annotations

import copy
from collections import Counter, deque

from ca.drift.baseline import AgentBaseline
from ca.drift.features import Bin, poisson_surprise

LONG = 4 * 3600  # seconds of recent records compared with the anchor


class LongWindow:
    """The last ``bins`` bins of one agent, summed, and the frozen anchor they are judged by."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.ring: deque[Bin] = deque()
        self.routes: Counter[str] = Counter()
        self.expected = 0.0  # the anchor's record count for the bins in the ring
        self.anchor: AgentBaseline | None = None
        self.phi = 1.0

    def push(self, b: Bin) -> None:
        """Add the newest bin, dropping the oldest beyond ``bins``."""
        self.ring.append(b)
        if b.count:
            self.routes.update(b.routes)
        if self.anchor is not None:
            self.expected += self.anchor.expected_count(b.slot)
        if len(self.ring) > self.bins:
            old = self.ring.popleft()
            if old.count:
                self.routes.subtract(old.routes)
            if self.anchor is not None:
                self.expected -= self.anchor.expected_count(old.slot)

    def freeze(self, base: AgentBaseline) -> None:
        """Take ``base`` as it is now as the anchor."""
        self.anchor = copy.deepcopy(base)
        self.expected = sum(self.anchor.expected_count(x.slot) for x in self.ring)
        self.phi = self.anchor.dispersion()

    def surprise(self) -> tuple[float, str, str]:
        """The route whose long-window count the anchor explains worst: (nats, observed,
        expected); zero before an anchor is taken."""
        best = (0.0, "-", "-")
        anchor = self.anchor
        if anchor is None:
            return best
        phi, expected = self.phi, self.expected
        for route, c in self.routes.items():
            if c <= 0:
                continue
            lam = expected * anchor.route_prob(route)
            s = poisson_surprise(c / phi, lam / phi)
            if s > best[0]:
                best = (s, f"{c} x {route} in {LONG // 3600} h", f"{lam:.1f} at the anchor")
        return best
