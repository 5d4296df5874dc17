"""The analyser: one pass over action records, agent by agent, step by step.

For each agent the records from ``since - training`` on are cut into bins of ``step``
seconds. A window is the last ``window / step`` bins; each window ending in ``(since,
until]`` with records in it is scored against the baseline learnt from the bins before it.
A bin is learnt when it leaves the window, so a window never judges itself; a window that
crossed the threshold does not teach the calibration what an ordinary surprise is.
Consecutive crossing windows of one agent are one alert. The baseline as it stood at
``since`` is also kept, frozen, as the anchor the last hours are compared with
(``ca.drift.anchor``: slow drift the fading baseline absorbs).

Pure: instants are arguments, there is no clock and no I/O (decision 0057).
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ca.drift.anchor import LONG, LongWindow
from ca.drift.baseline import AgentBaseline
from ca.drift.features import BURST_GAP, Bin, Window
from ca.drift.scoring import CALIBRATED, Contribution, contributions, raw_features
from ca.drift.settings import DriftSettings
from wire.actions import ActionRecord, record_time

TOP = 3  # contributions an explanation names
_EMPTY = tuple(Bin(slot=slot) for slot in range(96))


def epoch(text: str) -> float:
    """A record's ``time`` as UNIX seconds."""
    return datetime.fromisoformat(text).timestamp()


def instant(seconds: float) -> str:
    """UNIX seconds in the records' spelling."""
    return record_time(datetime.fromtimestamp(seconds, UTC))


@dataclass(frozen=True)
class WindowScore:
    """One scored window of one agent."""

    agent: str
    environment: str | None
    start: float
    end: float
    records: int
    score: float
    threshold: float
    mode: str
    top: tuple[Contribution, ...]
    serials: tuple[str, ...]

    @property
    def crossed(self) -> bool:
        """Whether the window is at or above its threshold."""
        return self.score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        """As JSON (no floats: the ledger carries it as evidence)."""
        return {
            "agent": self.agent,
            "environment": self.environment,
            "window_start": instant(self.start),
            "window_end": instant(self.end),
            "records": self.records,
            "score": f"{self.score:.3f}",
            "threshold": f"{self.threshold:.3f}",
            "mode": self.mode,
            "top_features": [c.to_json() for c in self.top],
            "serials": list(self.serials),
        }


@dataclass(frozen=True)
class Alert:
    """Consecutive crossing windows of one agent: the first, the worst, the last end."""

    first: WindowScore
    worst: WindowScore
    last_end: float
    windows: int

    def to_json(self) -> dict[str, Any]:
        """As JSON: the worst window's evidence plus when the run of windows began and ended."""
        out = self.worst.to_json()
        out["first_window_end"] = instant(self.first.end)
        out["last_window_end"] = instant(self.last_end)
        out["windows"] = self.windows
        return out


@dataclass
class AgentSummary:
    """What a run saw of one agent."""

    agent: str
    environment: str | None = None
    records: int = 0
    scored_windows: int = 0
    max_score: float = 0.0
    baseline_records: int = 0
    status: str = "no-baseline"  # or "scored"

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "environment": self.environment,
            "records": self.records,
            "baseline_records": self.baseline_records,
            "scored_windows": self.scored_windows,
            "max_score": f"{self.max_score:.3f}",
            "status": self.status,
        }


@dataclass
class RunResult:
    """The outcome of one pass."""

    since: float
    until: float
    records: int = 0
    alerts: list[Alert] = field(default_factory=list)
    agents: dict[str, AgentSummary] = field(default_factory=dict)
    scores: list[WindowScore] = field(default_factory=list)  # every one, with keep_scores


class Analyser:
    """Scores agents' windows against their own baselines (see the module docstring)."""

    def __init__(self, settings: DriftSettings, keep_scores: bool = False) -> None:
        self.settings = settings
        self.keep_scores = keep_scores

    def run(self, records: Iterable[ActionRecord], since: float, until: float) -> RunResult:
        """Score every window ending in ``(since, until]`` (UNIX seconds); records from
        ``since - training`` to ``until`` are used, others are ignored."""
        if until <= since:
            raise ValueError("until must be after since")
        start = since - self.settings.training
        per_agent: defaultdict[str, list[tuple[float, str, int, ActionRecord]]] = defaultdict(list)
        result = RunResult(since, until)
        for r in records:
            if r.agent is None:
                continue  # refused before the agent was known: nobody's habit
            t = epoch(r.time)
            if start <= t < until:
                per_agent[r.agent].append((t, r.gateway, r.seq, r))
                result.records += 1
        for agent in sorted(per_agent):
            items = per_agent[agent]
            items.sort(key=lambda x: (x[0], x[1], x[2]))
            self._agent(agent, items, result)
        return result

    def _agent(
        self, agent: str, items: list[tuple[float, str, int, ActionRecord]], result: RunResult
    ) -> None:
        cfg = self.settings
        step = cfg.step
        k = cfg.window // step
        base = AgentBaseline.for_half_life(cfg.half_life, step)
        weights = dict(cfg.weights)
        summary = result.agents.setdefault(agent, AgentSummary(agent))
        ring: deque[Bin] = deque()
        long = LongWindow(LONG // step)
        t = math.floor(items[0][0] / step) * step
        i = 0
        last_route: str | None = None
        last_time = -math.inf
        serials: deque[set[str]] = deque()
        open_alert: list[Any] | None = None  # [first, worst, last_end, windows]
        environment: str | None = None
        while t < result.until:
            end = t + step
            slot = int(t // 900) % 96
            busy_bin = i < len(items) and items[i][0] < end
            b = Bin(slot=slot) if busy_bin else _EMPTY[slot]  # empty bins are never changed
            seen: set[str] = set()
            while i < len(items) and items[i][0] < end:
                r = items[i][3]
                i += 1
                b.count += 1
                if items[i - 1][0] - last_time > BURST_GAP:
                    b.bursts += 1
                last_time = items[i - 1][0]
                b.routes[r.route] += 1
                if r.scope is not None:
                    b.scopes[r.scope] += 1
                if r.outcome == "deny":
                    b.denials += 1
                if last_route is not None:
                    b.transitions[(last_route, r.route)] += 1
                last_route = r.route
                if r.serial is not None:
                    seen.add(r.serial)
                if r.environment is not None:
                    environment = r.environment
                if end > result.since:
                    summary.records += 1
            ring.append(b)
            long.push(b)
            serials.append(seen)
            if len(ring) > k:
                base.learn(ring.popleft())
                serials.popleft()
            crossed = False
            busy = any(x.count for x in ring)
            ready = base.bins * step >= cfg.min_training and base.records >= cfg.min_records
            if ready and len(ring) == k:
                count = sum(x.count for x in ring)
                base.learn_spread(count, sum(base.expected_count(x.slot) for x in ring))
            if ready and long.anchor is None and end > result.since:
                long.freeze(base)  # the baseline as the run found it: the anchor
            if end > result.since and busy:
                summary.environment = environment
                if ready:
                    summary.status = "scored"
                    score = self._score(agent, environment, base, ring, long, serials, weights, end)
                    summary.scored_windows += 1
                    summary.max_score = max(summary.max_score, score.score)
                    if self.keep_scores:
                        result.scores.append(score)
                    crossed = score.crossed
                    if crossed:
                        if open_alert is None:
                            open_alert = [score, score, end, 1]
                        else:
                            if score.score > open_alert[1].score:
                                open_alert[1] = score
                            open_alert[2] = end
                            open_alert[3] += 1
            if not crossed and open_alert is not None:
                result.alerts.append(Alert(*open_alert))
                open_alert = None
            if i >= len(items) and not busy and end > result.since:
                break  # nothing more to score for this agent
            t = end
        if open_alert is not None:
            result.alerts.append(Alert(*open_alert))
        summary.baseline_records = base.records

    def _score(
        self,
        agent: str,
        environment: str | None,
        base: AgentBaseline,
        ring: deque[Bin],
        long: LongWindow,
        serials: deque[set[str]],
        weights: dict[str, float],
        end: float,
    ) -> WindowScore:
        bins = list(ring)
        window = Window.merge(bins)
        expected = sum(base.expected_count(x.slot) for x in bins)
        bursts = sum(base.expected_bursts(x.slot) for x in bins)
        raw = raw_features(base, window, expected, bursts)
        raw["anchor"] = long.surprise()
        parts = contributions(base, raw, weights)
        total = sum(c.score for c in parts)
        policy = self.settings.policy(agent, environment)
        if total < policy.threshold:
            for name in CALIBRATED:
                base.learn_moment(name, raw[name][0])
        return WindowScore(
            agent=agent,
            environment=environment,
            start=end - self.settings.window,
            end=end,
            records=window.count,
            score=total,
            threshold=policy.threshold,
            mode=policy.mode,
            top=tuple(c for c in parts[:TOP] if c.score > 0),
            serials=tuple(sorted(set().union(*serials))),
        )
