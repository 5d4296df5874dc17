"""The drift benchmark (issue 18 item 5): detection against false alerts, per threshold.

Usage: python bench/drift_bench.py [--seed 1] [--thresholds 6,8,10,12,14,16,20] [--runs 3]
       [--normal 10] [--attacks 6] [--json]

It generates its own seeded records (bench/drift_traces.py: normal agents of three
archetypes with the minor variations of context, and five attack types), runs the analyser
(ca/drift) over the evaluation week with the default settings and each threshold, and
reports precision, recall, recall within 5 minutes, false alerts per 100 agent-days of
normal traffic, median time to detect per attack type, and the analyser's cost per record
(median of --runs runs at the default threshold). The same seed gives the same table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.drift_traces import ATTACKS, Trace, generate
from ca.drift.analyser import Analyser, RunResult
from ca.drift.settings import DriftSettings, Policy

FAST = 300.0  # "detected within 5 minutes of simulated time"
HOUR = 3600


def drift_onset(trace: Trace, agent: str, start: float) -> float | None:
    """When a slow drift became bigger than a normal day's variation: the first instant at
    which the agent's records since ``start``, less what its training days' hourly means
    predict, exceed the standard deviation of its training days' record counts."""
    times = sorted(
        datetime.fromisoformat(r.time).timestamp() for r in trace.records if r.agent == agent
    )
    days = round((trace.since - times[0]) / 86400 + 0.5) if times else 0
    first_day = trace.since - days * 86400
    daily = [0] * days
    hourly = [0.0] * 24
    for t in times:
        if t < trace.since:
            d = int((t - first_day) // 86400)
            daily[d] += 1
            hourly[int((t % 86400) // HOUR)] += 1 / days
    if days < 2:
        return None
    sd = statistics.stdev(daily)
    n = 0
    for t in times:
        if t < start:
            continue
        n += 1
        expected, at = 0.0, start
        while at + HOUR <= t:
            expected += hourly[int((at % 86400) // HOUR)]
            at += HOUR
        expected += hourly[int((at % 86400) // HOUR)] * (t - at) / HOUR
        if n - expected > sd:
            return t
    return None


def evaluate(trace: Trace, result: RunResult, window: int) -> dict[str, Any]:
    """Score a run of the analyser against the trace's ground truth."""
    by_agent = {a.agent: a for a in trace.attacks}
    normal = set(trace.normal_agents)
    true_alerts = false_alerts = false_normal = 0
    detect: dict[str, float] = {}
    for alert in result.alerts:
        attack = by_agent.get(alert.first.agent)
        if (
            attack is not None
            and alert.last_end >= attack.start
            and alert.first.end - window <= attack.end + window
        ):
            true_alerts += 1
            delay = max(0.0, alert.first.end - attack.start)
            detect[attack.agent] = min(detect.get(attack.agent, delay), delay)
        else:
            false_alerts += 1
            if alert.first.agent in normal:
                false_normal += 1
    agent_days = len(normal) * round((trace.until - trace.since) / 86400)
    per_kind: dict[str, Any] = {}
    for kind in ATTACKS:
        ids = [a.agent for a in trace.attacks if a.kind == kind]
        times = [detect[i] for i in ids if i in detect]
        per_kind[kind] = {
            "detected": len(times),
            "of": len(ids),
            "within_5min": sum(t <= FAST for t in times),
            "median_ttd_s": round(statistics.median(times)) if times else None,
        }
    onsets = []  # slow drift, separately: hours from its onset (drift_onset) to detection
    for a in trace.attacks:
        if a.kind != "slow_drift":
            continue
        onset = drift_onset(trace, a.agent, a.start)
        found = detect.get(a.agent)
        onsets.append(
            {
                "agent": a.agent,
                "onset_h": None if onset is None else round((onset - a.start) / HOUR, 1),
                "detected_h": None if found is None else round(found / HOUR, 1),
                "after_onset_h": None
                if onset is None or found is None
                else round((a.start + found - onset) / HOUR, 1),
            }
        )
    per_kind["slow_drift"]["from_onset"] = onsets
    total = len(trace.attacks)
    alerts = true_alerts + false_alerts
    return {
        "precision": true_alerts / alerts if alerts else 1.0,
        "recall": len(detect) / total,
        "recall_5min": sum(t <= FAST for t in detect.values()) / total,
        "false_alerts_normal": false_normal,
        "agent_days": agent_days,
        "fp_per_100_agent_days": 100 * false_normal / agent_days,
        "per_kind": per_kind,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--thresholds", default="6,8,10,12,14,16,20")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--normal", type=int, default=10, help="normal agents per archetype")
    p.add_argument("--attacks", type=int, default=6, help="attacked agents per attack type")
    p.add_argument("--weights", default="", help="feature weights to try, e.g. rate=1.5")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    thresholds = [float(x) for x in args.thresholds.split(",")]
    started = time.perf_counter()
    trace = generate(args.seed, args.normal, args.attacks)
    generated = time.perf_counter() - started
    base = DriftSettings()
    if args.weights:
        tried = dict(base.weights)
        for item in args.weights.split(","):
            name, _, value = item.partition("=")
            if name not in tried:
                p.error(f"unknown feature {name!r}")
            tried[name] = float(value)
        base = replace(base, weights=tried)
    rows = []
    for threshold in thresholds:
        settings = replace(base, default=Policy(threshold=threshold))
        result = Analyser(settings).run(trace.records, trace.since, trace.until)
        row = evaluate(trace, result, settings.window)
        row["threshold"] = threshold
        rows.append(row)
    costs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        Analyser(base).run(trace.records, trace.since, trace.until)
        costs.append((time.perf_counter() - t0) / len(trace.records) * 1e6)
    summary = {
        "seed": args.seed,
        "records": len(trace.records),
        "normal_agents": len(trace.normal_agents),
        "attacks": len(trace.attacks),
        "generate_s": round(generated, 1),
        "us_per_record": round(statistics.median(costs), 1),
        "default_threshold": base.default.threshold,
        "weights": dict(base.weights),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"seed {args.seed}: {summary['records']:,} records, {summary['normal_agents']} normal "
        f"agents ({rows[0]['agent_days']} agent-days), {summary['attacks']} attacks; analyser "
        f"{summary['us_per_record']} us/record (median of {args.runs})"
    )
    kinds = " | ".join(ATTACKS)
    print(f"| threshold | precision | recall | recall <=5 min | FP/100 agent-days | {kinds} |")
    print("|---:|---:|---:|---:|---:|" + "---|" * len(ATTACKS))
    for row in rows:
        cells = []
        for kind in ATTACKS:
            k = row["per_kind"][kind]
            ttd = "-" if k["median_ttd_s"] is None else f"{k['median_ttd_s']} s"
            cells.append(f"{k['detected']}/{k['of']} ({k['within_5min']} fast), {ttd}")
        print(
            f"| {row['threshold']:g} | {row['precision']:.2f} | {row['recall']:.2f} | "
            f"{row['recall_5min']:.2f} | {row['fp_per_100_agent_days']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    print()
    print(
        "slow drift, from its onset (the day's-variation point, bench/drift_bench.py drift_onset):"
    )
    for row in rows:
        cells = [
            f"{o['agent']}: onset +{o['onset_h']} h, detected "
            + (
                "-"
                if o["detected_h"] is None
                else f"+{o['detected_h']} h ({o['after_onset_h']} h after)"
            )
            for o in row["per_kind"]["slow_drift"]["from_onset"]
        ]
        print(f"  threshold {row['threshold']:g}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
