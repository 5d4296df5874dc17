"""The drift core (decision 0057): surprise measures, settings, and scores of seeded traces
(bench/drift_traces.py): ordinary agents stay below the default threshold, each attack type
crosses it with the feature that explains it, a new in-scope route alone does not, and the
same seed gives the same records and the same scores."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.drift_traces import ATTACKS, Trace, generate
from ca.drift.analyser import Analyser, RunResult
from ca.drift.baseline import AgentBaseline
from ca.drift.features import Bin, binomial_surprise, likelihood_surprise, poisson_surprise
from ca.drift.settings import (
    DriftSettings,
    DriftSettingsError,
    Policy,
    parse_seconds,
    settings_from_mapping,
)
from wire.actions import ActionRecord

SETTINGS = DriftSettings(training=3 * 86400)
EXPLAINS = {
    "injection": {"transitions", "routes", "new_routes"},
    "exfiltration": {"rate", "routes", "transitions", "route_rate"},
    "rate_spike": {"rate", "bursts", "transitions"},
    "scope_probe": {"denials", "new_scopes"},
}


@pytest.fixture(scope="module")
def trace() -> Trace:
    return generate(3, normal_per_archetype=1, attacks_per_kind=1, training_days=3, eval_days=2)


@pytest.fixture(scope="module")
def result(trace: Trace) -> RunResult:
    return Analyser(SETTINGS, keep_scores=True).run(trace.records, trace.since, trace.until)


# ------------------------------------------------------------------------ surprise measures
def test_poisson_surprise_is_zero_up_to_the_expectation_and_grows_beyond() -> None:
    assert poisson_surprise(3, 5) == 0 and poisson_surprise(5, 5) == 0
    assert 0 < poisson_surprise(8, 5) < poisson_surprise(12, 5) < poisson_surprise(30, 5)
    assert poisson_surprise(20, 10) == pytest.approx(20 * math.log(2) - 10)


def test_binomial_surprise_of_denials() -> None:
    assert binomial_surprise(0, 50, 0.01) == 0 and binomial_surprise(1, 0, 0.5) == 0
    assert binomial_surprise(5, 10, 0.01) > binomial_surprise(1, 10, 0.01) > 0
    assert binomial_surprise(10, 10, 0.5) == pytest.approx(10 * math.log(2))


def test_likelihood_surprise_names_the_category_that_moved() -> None:
    base = {"a": 0.9, "b": 0.1}
    assert likelihood_surprise({}, base.__getitem__) is None
    same = likelihood_surprise({"a": 9, "b": 1}, base.__getitem__)
    assert same is not None and same[0] == 0.0  # the baseline's own shares: no surprise
    moved = likelihood_surprise({"a": 2, "b": 8}, base.__getitem__)
    assert moved is not None and moved[0] > 5 and moved[1] == "b"
    assert moved[2] == pytest.approx(0.8) and moved[3] == pytest.approx(0.1)


def _learnt(pairs: list[tuple[str, str]], times: int) -> AgentBaseline:
    base = AgentBaseline.for_half_life(7 * 86400, 60)
    for _ in range(times):
        b = Bin(slot=40, count=len(pairs), bursts=1)
        for a, c in pairs:
            b.routes[c] += 1
            b.transitions[(a, c)] += 1
        base.learn(b)
    return base


def test_an_unseen_transition_surprises_a_habitual_agent_more_than_a_mixing_one() -> None:
    routes = ["a", "b", "c", "d"]
    steady = _learnt([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")], 200)
    unseen = ("a", "c")
    mixing = _learnt([(x, y) for x in routes for y in routes if (x, y) != unseen], 50)
    assert steady.trans_types["a"] == 1 and mixing.trans_types["a"] == 3
    assert steady.transition_prob(unseen) < mixing.transition_prob(unseen) / 2
    assert steady.transition_prob(("a", "b")) > 0.9
    assert steady.transition_prob(("zz", "b")) == steady.route_prob("b")  # never left zz


def test_bursts_are_counted_per_session_not_per_record() -> None:
    base = _learnt([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")], 100)
    assert base.expected_count(40) == pytest.approx(4.0, rel=0.05)
    assert base.expected_bursts(40) == pytest.approx(1.0, rel=0.05)


# ------------------------------------------------------------------------------- settings
def test_thresholds_resolve_agent_then_environment_then_default() -> None:
    cfg = settings_from_mapping(
        {
            "drift": {
                "default_threshold": 9,
                "window": "10m",
                "step": "2m",
                "environments": {"production": {"threshold": 12, "mode": "hold"}},
                "agents": {"trader-7": {"threshold": 20}},
                "weights": {"new_routes": 0.5},
            }
        }
    )
    assert (cfg.window, cfg.step) == (600, 120)
    assert cfg.policy("reader-1", "staging") == Policy(9, "alert")
    assert cfg.policy("reader-1", "production") == Policy(12, "hold")
    assert cfg.policy("trader-7", "production") == Policy(20, "alert")
    assert cfg.weights["new_routes"] == 0.5 and cfg.weights["rate"] == 1.0
    forced = cfg.with_mode("hold")
    assert {forced.policy(a, "x").mode for a in ("reader-1", "trader-7")} == {"hold"}


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"drift": {"default_treshold": 9}}, "unknown key 'default_treshold'"),
        ({"drfit": {}}, "unknown table 'drfit'"),
        ({"drift": {"mode": "block"}}, "mode must be one of alert, hold"),
        ({"drift": {"default_threshold": -1}}, "must be a positive number"),
        ({"drift": {"window": "7m", "step": "2m"}}, "whole multiple of step"),
        ({"drift": {"agents": {"a": {"treshold": 3}}}}, "unknown key 'treshold'"),
        ({"drift": {"weights": {"speed": 1}}}, "unknown feature 'speed'"),
        ({"drift": {"webhook_url": "ftp://x"}}, "http(s) URL"),
        ({"drift": {"training": "7 weeks"}}, "not a duration"),
    ],
)
def test_bad_settings_are_refused_by_name(doc: dict[str, object], message: str) -> None:
    with pytest.raises(DriftSettingsError) as caught:
        settings_from_mapping(doc)
    assert message in str(caught.value)


def test_durations() -> None:
    assert parse_seconds("90s") == 90 and parse_seconds("7d") == 7 * 86400
    with pytest.raises(DriftSettingsError):
        parse_seconds("0m")


# ------------------------------------------------------------------------ seeded scoring
def test_ordinary_agents_stay_below_the_default_threshold(trace: Trace, result: RunResult) -> None:
    threshold = SETTINGS.default.threshold
    for agent in trace.normal_agents:
        summary = result.agents[agent]
        assert summary.status == "scored" and summary.scored_windows > 100
        assert summary.max_score < threshold, (agent, summary.max_score)
    assert not [a for a in result.alerts if a.first.agent in trace.normal_agents]


@pytest.mark.parametrize("kind", sorted(EXPLAINS))
def test_each_attack_crosses_the_threshold_explained_by_its_feature(
    trace: Trace, result: RunResult, kind: str
) -> None:
    (attack,) = [a for a in trace.attacks if a.kind == kind]
    alerts = [
        a for a in result.alerts if a.first.agent == attack.agent and a.last_end >= attack.start
    ]
    assert alerts, f"{kind} was not detected"
    first = alerts[0]
    # a spike needs a few minutes of volume to stand out from a bursty trader's own bursts
    limit = 600 if kind == "rate_spike" else 300
    assert first.first.end - attack.start <= limit, "not detected in time"
    assert first.worst.score >= first.worst.threshold
    named = {c.feature for c in first.worst.top}
    assert named & EXPLAINS[kind], (kind, [(c.feature, c.score) for c in first.worst.top])
    top = first.worst.top[0]
    assert top.observed and top.expected and top.score > 0
    # nothing was raised against the agent before its attack began
    assert not [
        a for a in result.alerts if a.first.agent == attack.agent and a.last_end < attack.start
    ]


def test_scope_probe_explanation_says_what_was_observed_and_expected(
    trace: Trace, result: RunResult
) -> None:
    (attack,) = [a for a in trace.attacks if a.kind == "scope_probe"]
    alert = next(a for a in result.alerts if a.first.agent == attack.agent)
    denials = next(c for c in alert.worst.top if c.feature == "denials")
    assert denials.observed.endswith("denied") and denials.expected.endswith("%")
    evidence = alert.to_json()
    assert evidence["agent"] == attack.agent and evidence["top_features"][0]["score"]
    assert all(isinstance(v, str | int | list | type(None)) for v in evidence.values())


def _with_new_route(trace: Trace, agent: str, at: float) -> list[ActionRecord]:
    """``agent``'s records plus three calls of a new but in-scope route in one session."""
    from datetime import UTC, datetime

    own = [r for r in trace.records if r.agent == agent]
    sample = next(r for r in own if datetime.fromisoformat(r.time).timestamp() >= at)
    extra = [
        replace(
            sample,
            seq=10**6 + i,
            request_id=f"extra-{i}",
            route="GET /v1/book/{symbol}/history",  # read_book, as its other routes
            time=datetime.fromtimestamp(at + 20 * i, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        for i in range(3)
    ]
    return own + extra


def test_a_new_in_scope_route_alone_does_not_cross(trace: Trace) -> None:
    agent = next(a for a in trace.normal_agents if a.startswith("reader"))
    at = trace.since + 36 * 3600  # noon of the second evaluation day
    records = _with_new_route(trace, agent, at)
    run = Analyser(SETTINGS, keep_scores=True).run(records, trace.since, trace.until)
    assert not run.alerts
    flagged = [
        s
        for s in run.scores
        if s.start <= at + 60 < s.end and any(c.feature == "new_routes" for c in s.top)
    ]
    assert flagged, "the new route is not among the explanation's features"
    assert max(s.score for s in flagged) < SETTINGS.default.threshold


def test_same_seed_same_records_and_scores(trace: Trace, result: RunResult) -> None:
    again = generate(3, normal_per_archetype=1, attacks_per_kind=1, training_days=3, eval_days=2)
    assert [r.to_json() for r in again.records] == [r.to_json() for r in trace.records]
    assert again.attacks == trace.attacks
    rerun = Analyser(SETTINGS, keep_scores=True).run(
        reversed(again.records), again.since, again.until
    )  # the input's order does not matter
    assert [a.to_json() for a in rerun.alerts] == [a.to_json() for a in result.alerts]
    other = generate(4, normal_per_archetype=1, attacks_per_kind=1, training_days=3, eval_days=2)
    assert [r.to_json() for r in other.records[:50]] != [r.to_json() for r in trace.records[:50]]


def test_an_agent_without_enough_history_is_not_scored(trace: Trace) -> None:
    cfg = replace(SETTINGS, min_training=10 * 86400)
    run = Analyser(cfg).run(trace.records, trace.since, trace.until)
    assert not run.alerts
    assert {s.status for s in run.agents.values()} == {"no-baseline"}


def test_every_attack_type_is_generated(trace: Trace) -> None:
    assert sorted(a.kind for a in trace.attacks) == sorted(ATTACKS)
    assert all(a.end > a.start for a in trace.attacks)


def test_slow_drift_is_caught_by_the_anchor_not_by_the_fading_baseline() -> None:
    long = generate(3, normal_per_archetype=1, attacks_per_kind=1, training_days=3, eval_days=5)
    run = Analyser(SETTINGS, keep_scores=True).run(long.records, long.since, long.until)
    (drift,) = [a for a in long.attacks if a.kind == "slow_drift"]
    alerts = [a for a in run.alerts if a.first.agent == drift.agent]
    assert alerts, "the slow drift was not detected in five days"
    first = alerts[0]
    assert first.first.end - drift.start > 86400  # slow: days, not minutes
    assert first.worst.top[0].feature == "anchor"
    assert "at the anchor" in first.worst.top[0].expected
    assert not [a for a in run.alerts if a.first.agent in long.normal_agents]
    without = replace(SETTINGS, weights={**SETTINGS.weights, "anchor": 0.0})
    fading = Analyser(without).run(long.records, long.since, long.until)
    assert not [a for a in fading.alerts if a.first.agent == drift.agent]
