"""A window's drift score: each feature's surprise against the agent's baseline, calibrated
by how surprising that feature usually is for this agent, weighted, and summed.

Calibration is what lets one threshold serve a bursty trader and a steady reader: a
feature's contribution is ``weight * max(0, raw - mean) / (sd + 1)`` where ``mean`` and
``sd`` are that feature's raw surprise over the agent's ordinary windows. First-ever routes
and scopes are flags counted as such (``weight`` each, at most three), so one new but
in-scope route adds its weight, not a score of its own making. The explanation is the
contributions in decreasing order, each with what was observed and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ca.drift.baseline import AgentBaseline
from ca.drift.features import (
    Window,
    binomial_surprise,
    likelihood_surprise,
    poisson_surprise,
)

CALIBRATED = (
    "rate",
    "bursts",
    "route_rate",
    "scope_rate",
    "routes",
    "transitions",
    "denials",
    "time_of_day",
)
_MAX_FLAGS = 3
ANCHORED = ("anchor",)  # judged against the frozen anchor: raw surprise less an allowance
ANCHOR_ALLOWANCE = 12.0  # nats of 4-h surprise an ordinary agent may show (bench-drift)
SD_SHARE = 1.0  # how much of its usual spread a feature is forgiven (calibration)


@dataclass(frozen=True)
class Contribution:
    """One feature's part in a score."""

    feature: str
    score: float  # what it adds to the window's score
    raw: float  # its surprise (nats; a count for the flags)
    observed: str
    expected: str

    def to_json(self) -> dict[str, Any]:
        """As JSON, numbers rounded to three decimals and written as strings (the ledger's
        canonical JSON has no floats)."""
        return {
            "feature": self.feature,
            "score": f"{self.score:.3f}",
            "raw": f"{self.raw:.3f}",
            "observed": self.observed,
            "expected": self.expected,
        }


def raw_features(
    base: AgentBaseline, window: Window, expected: float, bursts: float
) -> dict[str, tuple[float, str, str]]:
    """Each feature's raw surprise with what was observed and expected (``expected``: the
    baseline's record count for the window's bins; ``bursts``: its count of bursts)."""
    n = window.count
    phi = base.dispersion()  # quasi-Poisson: counts and expectations scaled by the dispersion
    out: dict[str, tuple[float, str, str]] = {
        "rate": (poisson_surprise(n / phi, expected / phi), f"{n} records", f"{expected:.1f}")
    }
    out["bursts"] = (
        poisson_surprise(window.bursts, bursts),
        f"{window.bursts} bursts",
        f"{bursts:.1f}",
    )
    best = (0.0, "-", "-")
    for route, c in window.routes.items():
        lam = expected * base.route_prob(route)
        s = poisson_surprise(c / phi, lam / phi)
        if s > best[0]:
            best = (s, f"{c} x {route}", f"{lam:.1f}")
    out["route_rate"] = best
    best = (0.0, "-", "-")
    for scope, c in window.scopes.items():
        lam = expected * base.scope_prob(scope)
        s = poisson_surprise(c / phi, lam / phi)
        if s > best[0]:
            best = (s, f"{c} x {scope}", f"{lam:.1f}")
    out["scope_rate"] = best
    routes = likelihood_surprise(window.routes, base.route_prob)
    out["routes"] = (0.0, "-", "-")
    if routes is not None:
        s, route, share, prob = routes
        out["routes"] = (s, f"{route} {share:.0%}", f"{prob:.1%}")
    pairs = likelihood_surprise(window.transitions, base.transition_prob)
    out["transitions"] = (0.0, "-", "-")
    if pairs is not None:
        s, (a, b), share, prob = pairs
        out["transitions"] = (s, f"{a} -> {b} {share:.0%}", f"{prob:.1%}")
    p = base.denial_rate()
    out["denials"] = (
        binomial_surprise(window.denials, n, p),
        f"{window.denials}/{n} denied",
        f"{p:.1%}",
    )
    tod = 0.0
    worst_hour, worst_share = 0, 1.0
    for hour, c in window.hours.items():
        share = base.hour_share(hour)
        tod += c * max(0.0, math.log((1 / 24) / share))
        if share < worst_share:
            worst_hour, worst_share = hour, share
    out["time_of_day"] = (tod, f"{n} records at {worst_hour:02d}h", f"{worst_share:.1%} of day")
    new_routes = sorted(set(window.routes) - base.seen_routes)
    out["new_routes"] = (float(len(new_routes)), ", ".join(new_routes[:3]) or "-", "none")
    new_scopes = sorted(set(window.scopes) - base.seen_scopes)
    out["new_scopes"] = (float(len(new_scopes)), ", ".join(new_scopes[:3]) or "-", "none")
    return out


def contributions(
    base: AgentBaseline, raw: dict[str, tuple[float, str, str]], weights: dict[str, float]
) -> list[Contribution]:
    """The calibrated, weighted contributions, largest first."""
    out = []
    for name, (value, observed, expected) in raw.items():
        weight = weights.get(name, 0.0)
        if name in CALIBRATED:
            mean, sd = base.moments[name].mean_sd(base.weight)
            score = weight * max(0.0, value - mean) / (SD_SHARE * sd + 1.0)
        elif name in ANCHORED:
            score = weight * max(0.0, value - ANCHOR_ALLOWANCE)
        else:
            score = weight * min(value, _MAX_FLAGS)
        out.append(Contribution(name, score, value, observed, expected))
    out.sort(key=lambda c: (-c.score, c.feature))
    return out
