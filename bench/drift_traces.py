"""Seeded synthetic action records for the drift benchmark and tests (issue 18 item 5).

Three archetypes with per-agent habits (trader, reader, reporter), the "minor variation in
context" an honest agent shows (reordered calls, bursts at market open, a new but in-scope
route), and five injected attacks (prompt-injected route sequence, exfiltration-like reads,
rate spike, attempts at scopes it lacks, slow drift over days). Everything is drawn from one
``random.Random(seed)``: the same seed gives the same records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wire.actions import ActionRecord

DAY = 86400
EPOCH = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC

BOOK, QUOTE, NEWS = "GET /v1/book/{symbol}", "GET /v1/quotes/{symbol}", "GET /v1/news"
ORDER, GET_ORDER, CANCEL = "POST /v1/orders", "GET /v1/orders/{id}", "DELETE /v1/orders/{id}"
POSITIONS, TRADES = "GET /v1/positions", "GET /v1/trades"
REPORT, GET_REPORT = "POST /v1/reports", "GET /v1/reports/{id}"
CANCEL_ALL, ACCOUNTS = "DELETE /v1/orders", "GET /v1/accounts/{id}"
TRANSFER, KEYS, CLIENTS = "POST /v1/transfers", "GET /v1/admin/keys", "GET /v1/clients/{id}"
SCOPES = {
    BOOK: "read_book",
    QUOTE: "read_book",
    NEWS: "read_news",
    ORDER: "place_orders",
    GET_ORDER: "read_orders",
    CANCEL: "cancel_orders",
    CANCEL_ALL: "cancel_orders",
    POSITIONS: "read_positions",
    TRADES: "read_trades",
    REPORT: "write_reports",
    GET_REPORT: "read_reports",
    ACCOUNTS: "read_accounts",
    CLIENTS: "read_clients",
    TRANSFER: "transfer_funds",
    KEYS: "admin",
    "GET /v1/orders/{id}/fills": "read_orders",
    "GET /v1/book/{symbol}/depth": "read_book",
    "GET /v1/trades/{id}": "read_trades",
}
NEW_ROUTE = {
    "trader": "GET /v1/orders/{id}/fills",
    "reader": "GET /v1/book/{symbol}/depth",
    "reporter": "GET /v1/trades/{id}",
}
GRANTED = {
    "trader": {"read_book", "place_orders", "read_orders", "cancel_orders", "read_positions"},
    "reader": {"read_book", "read_news", "read_positions", "read_trades"},
    "reporter": {"read_positions", "read_trades", "write_reports", "read_reports", "read_book"},
}
ATTACKS = ("injection", "exfiltration", "rate_spike", "scope_probe", "slow_drift")
ARCHETYPES = ("trader", "reader", "reporter")


@dataclass
class Habit:
    """One agent's own way of working."""

    name: str
    archetype: str
    rate: float  # sessions per minute in its busy hours
    start_hour: float
    end_hour: float
    serial: str
    variation: dict[int, str] = field(default_factory=dict)  # eval day -> variation
    new_route_day: int | None = None


@dataclass(frozen=True)
class Attack:
    """An attack injected into one agent's trace (times in UNIX seconds)."""

    agent: str
    kind: str
    start: float
    end: float


@dataclass
class Trace:
    """A generated scenario: records, the attacks in it, and the periods."""

    records: list[ActionRecord]
    attacks: list[Attack]
    normal_agents: list[str]
    since: float  # start of the evaluation period (training before it)
    until: float
    habits: dict[str, Habit]


class _Writer:
    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.out: list[tuple[float, str, str, str, str | None, str]] = []

    def call(self, h: Habit, t: float, route: str, deny: bool = False) -> None:
        gw = f"gw-{h.archetype}"
        self.out.append((t, gw, h.name, route, "scope" if deny else None, h.serial))

    def records(self) -> list[ActionRecord]:
        self.out.sort()
        recs = []
        for t, gw, agent, route, check, serial in self.out:
            seq = self.seq.get(gw, 0)
            self.seq[gw] = seq + 1
            method = route.split(" ", 1)[0]
            recs.append(
                ActionRecord(
                    gateway=gw,
                    seq=seq,
                    time=datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    request_id=f"{gw}-{seq}",
                    outcome="deny" if check else "allow",
                    method=method,
                    route=route,
                    scope=SCOPES[route],
                    check=check,
                    http_status=403 if check else 200,
                    agent=agent,
                    serial=serial,
                    officer="o@example.com",
                    environment="production",
                )
            )
        return recs


def _session(rng: random.Random, h: Habit, day_variation: str | None, extra: bool) -> list[str]:
    """The routes of one working session, in order."""
    if h.archetype == "trader":
        s = [BOOK] + ([BOOK] if rng.random() < 0.5 else []) + [ORDER, GET_ORDER]
        if rng.random() < 0.2:
            s.append(CANCEL)
        if rng.random() < 0.3:
            s.append(POSITIONS)
    elif h.archetype == "reader":
        s = (
            [QUOTE]
            + ([BOOK] if rng.random() < 0.7 else [])
            + ([NEWS] if rng.random() < 0.2 else [])
        )
    else:
        s = [POSITIONS] + [TRADES] * rng.randint(6, 14) + [REPORT]
        if rng.random() < 0.3:
            s.append(GET_REPORT)
    if extra and rng.random() < 0.3:
        s.insert(rng.randrange(1, len(s) + 1), NEW_ROUTE[h.archetype])
    if day_variation == "reordered" and rng.random() < 0.4:
        rng.shuffle(s)
    return s


def _busy(h: Habit, hour: float) -> float:
    """The agent's session rate multiplier at ``hour`` of the day."""
    if h.archetype == "reader":
        return 1.0 if h.start_hour <= hour < h.end_hour else 0.25
    return 1.0 if h.start_hour <= hour < h.end_hour else 0.0


def _normal_day(rng: random.Random, w: _Writer, h: Habit, day: int, eval_day: int | None) -> None:
    base = EPOCH + day * DAY
    variation = h.variation.get(eval_day) if eval_day is not None else None
    extra = h.new_route_day is not None and eval_day is not None and eval_day >= h.new_route_day
    if h.archetype == "reporter":  # hourly batches
        for hour in range(int(h.start_hour), int(h.end_hour)):
            t = base + hour * 3600 + rng.uniform(0, 300)
            for route in _session(rng, h, variation, extra):
                w.call(h, t, route)
                t += rng.uniform(0.5, 3)
        return
    minute = 0
    while minute < 1440:
        hour = minute / 60
        rate = h.rate * _busy(h, hour)
        if h.archetype == "trader" and 9.5 <= hour < 9.75:
            rate *= 3.0 if variation != "open_burst" else 6.0
        n = _poisson(rng, rate)
        for _ in range(n):
            t = base + minute * 60 + rng.uniform(0, 60)
            for route in _session(rng, h, variation, extra):
                w.call(h, t, route)
                t += rng.uniform(0.5, 4)
        minute += 1


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    # Knuth, fine for the small rates here
    import math

    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _attack(rng: random.Random, w: _Writer, h: Habit, kind: str, start: float) -> float:
    """Inject ``kind`` into ``h``'s trace from ``start``; returns its end."""
    own = sorted(
        {r for r, s in SCOPES.items() if s in GRANTED[h.archetype]} - set(NEW_ROUTE.values())
    )
    t = start
    if kind == "injection":
        seq = [POSITIONS, CANCEL_ALL] if h.archetype == "trader" else [POSITIONS]
        seq += [*rng.sample(own, min(4, len(own))), ACCOUNTS if h.archetype != "trader" else ORDER]
        seq += rng.sample(own, min(3, len(own)))
        for route in seq:
            w.call(h, t, route, deny=SCOPES[route] not in GRANTED[h.archetype])
            t += rng.uniform(2, 12)
        return t
    if kind == "exfiltration":
        reads = [r for r in own if r.startswith("GET")]
        for _ in range(rng.randint(60, 160)):
            w.call(h, t, rng.choice(reads))
            t += rng.uniform(1, 5)
        return t
    if kind == "rate_spike":
        end = start + 600
        factor = rng.uniform(8, 15)
        while t < end:
            at = t
            for route in _session(rng, h, None, False):
                w.call(h, at, route)
                at += rng.uniform(0.5, 4)
            t += rng.expovariate(max(h.rate, 0.1) * factor / 60)
        return end
    if kind == "scope_probe":
        lacking = [r for r, s in SCOPES.items() if s not in GRANTED[h.archetype]]
        for _ in range(rng.randint(4, 10)):
            w.call(h, t, rng.choice(lacking), deny=True)
            t += rng.uniform(5, 25)
        return t
    # slow drift: ever more reads of its own most common read route, over five days
    read = {"trader": BOOK, "reader": QUOTE, "reporter": TRADES}[h.archetype]
    end = start + 5 * DAY
    while t < end:
        frac = (t - start) / (end - start)
        hour = (t - EPOCH) % DAY / 3600
        if _busy(h, hour) > 0 or (h.archetype == "reporter" and h.start_hour <= hour < h.end_hour):
            per_minute = 0.05 + 3.0 * frac * max(h.rate, 0.2)
            w.call(h, t, read)
            t += rng.expovariate(per_minute / 60)
        else:
            t += 600
    return end


def _habit(rng: random.Random, name: str, archetype: str, eval_days: int) -> Habit:
    if archetype == "trader":
        rate, start, end = (
            rng.uniform(0.1, 0.35),
            rng.choice([8.0, 8.5, 9.0]),
            rng.choice([16.0, 17.0]),
        )
    elif archetype == "reader":
        rate, start, end = (
            rng.uniform(0.15, 0.5),
            rng.choice([6.0, 7.0, 8.0]),
            rng.choice([20.0, 22.0]),
        )
    else:
        rate, start, end = 0.0, rng.choice([7.0, 8.0]), rng.choice([18.0, 19.0, 20.0])
    h = Habit(name, archetype, rate, start, end, f"{rng.getrandbits(64):016x}")
    for d in range(eval_days):
        pick = rng.random()
        if pick < 0.3:
            h.variation[d] = "reordered"
        elif pick < 0.6 and archetype == "trader":
            h.variation[d] = "open_burst"
    if rng.random() < 0.6:
        h.new_route_day = rng.randrange(eval_days)
    return h


def generate(
    seed: int,
    normal_per_archetype: int = 12,
    attacks_per_kind: int = 9,
    training_days: int = 7,
    eval_days: int = 7,
) -> Trace:
    """A whole scenario: normal agents, attacked agents, their records."""
    rng = random.Random(seed)
    w = _Writer()
    habits: dict[str, Habit] = {}
    normal: list[str] = []
    attacks: list[Attack] = []
    days = training_days + eval_days
    for archetype in ARCHETYPES:
        for i in range(normal_per_archetype):
            h = _habit(rng, f"{archetype}-{i:02d}", archetype, eval_days)
            habits[h.name] = h
            normal.append(h.name)
    plan: list[tuple[str, Habit]] = []
    for kind in ATTACKS:
        for i in range(attacks_per_kind):
            archetype = ARCHETYPES[i % len(ARCHETYPES)]
            h = _habit(rng, f"{archetype}-{kind}-{i:02d}", archetype, eval_days)
            h.variation, h.new_route_day = {}, None
            habits[h.name] = h
            plan.append((kind, h))
    for h in habits.values():
        for day in range(days):
            _normal_day(rng, w, h, day, day - training_days if day >= training_days else None)
    for kind, h in plan:
        if kind == "slow_drift":
            day = training_days
            start = EPOCH + day * DAY + h.start_hour * 3600
        else:
            day = training_days + rng.randrange(1, eval_days)
            hour = rng.uniform(h.start_hour + 0.5, h.end_hour - 1)
            start = EPOCH + day * DAY + hour * 3600
        end = _attack(rng, w, h, kind, start)
        attacks.append(Attack(h.name, kind, start, end))
    since = EPOCH + training_days * DAY
    return Trace(w.records(), attacks, normal, since, EPOCH + days * DAY, habits)


def iter_json(trace: Trace) -> Iterator[str]:
    """The trace's records as JSON lines (what ``agentca drift run --records`` reads)."""
    import json

    for r in trace.records:
        yield json.dumps(r.to_json(), separators=(",", ":"))
