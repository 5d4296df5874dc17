"""The console's action-ledger pages, the agent page's recent decisions and the dashboard's
drift alerts, through Flask's test client on SQLite and PostgreSQL with a real CA (SoftHSM2):
keyset pages and filters, bad input as a 400 page, hostile record strings escaped and made
visible, proofs, the export that ``ledger verify`` checks, and every role check."""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from ca.api.app import create_app
from ca.ledger.gateways import Gateways
from ca.ledger.trust import LedgerTrust
from ca.ledger.verify import verify_export
from ca.wiring import Runtime, open_runtime
from tests.integration.action_support import GatewayKey, record, records
from tests.integration.conftest import settings_for
from wire.actions import ActionBatch

HOSTILE_AGENT = '"><script>alert(1)</script>\u202egnp.exe'
LONG_ROUTE = "/v1/" + "é" * 1020  # 1,024 characters


@dataclass
class Env:
    rt: Runtime
    app: Any
    tokens: dict[str, str]

    def client(self, role: str | None) -> FlaskClient:
        """A test client signed in as ``role`` through the sign-in form (None: signed out)."""
        c = self.app.test_client()
        if role is None:
            return c
        form = c.get("/console/sign-in").get_data(as_text=True)
        pre = re.search(r'name="signin_token" value="([^"]+)"', form)
        assert pre is not None
        r = c.post(
            "/console/sign-in",
            data={"signin_token": pre.group(1), "token": self.tokens[role], "next": "/console/"},
        )
        assert r.status_code == 303, r.get_data(as_text=True)
        return c


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hsm_config: Any
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp(f"console-actions-{request.param}")
    url = (
        f"sqlite:///{work}/ca.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_module_url")
    )
    settings = settings_for(work, url, hsm_config)
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p256", "ec-p256")
    tokens = {
        role: rt.api_tokens.create(role.replace("-", ""), role)[0]
        for role in ("operator", "auditor", "read-only")
    }
    key = GatewayKey()
    Gateways(rt.sessions, rt.authority.clock).add("gw-a", key.pem(), "test")
    recs = records("gw-a", 0, 120)  # agents agent0/agent1, every fifth a denial
    recs.append(
        record(
            "gw-a",
            120,
            agent=HOSTILE_AGENT,
            route=LONG_ROUTE,
            detail="<b>bold</b> & \u200bzero\u2066width",
            officer="mallory@example.com",
        )
    )
    rt.actions.ingest(ActionBatch("gw-a", tuple(recs), None))
    rt.action_checkpoints.checkpoint()
    app = create_app(settings, runtime_factory=lambda: rt)
    try:
        yield Env(rt, app, tokens)
    finally:
        rt.close()


def page(c: FlaskClient, path: str, status: int = 200) -> str:
    r = c.get(path)
    body = r.get_data(as_text=True)
    assert r.status_code == status, (path, r.status_code, body[:600])
    assert "Traceback" not in body
    return body


def seqs(body: str) -> list[int]:
    return [int(s) for s in re.findall(r'<td><a href="/console/actions/(\d+)">', body)]


def test_the_timeline_pages_by_seq_newest_first(env: Env) -> None:
    c = env.client("auditor")
    first = page(c, "/console/actions")
    assert seqs(first) == list(range(120, 70, -1))
    nxt = re.search(r'id="next-page" href="([^"]+)"', first)
    assert nxt is not None and "before=71" in nxt.group(1)
    second = page(c, nxt.group(1).replace("&amp;", "&"))
    assert seqs(second) == list(range(70, 20, -1))
    last = page(c, "/console/actions?before=21")
    assert seqs(last) == list(range(20, -1, -1)) and 'id="next-page"' not in last
    assert seqs(page(c, "/console/actions?before=999999999999999999")) == seqs(first)


def test_filters_are_the_exports(env: Env) -> None:
    c = env.client("auditor")
    body = page(c, "/console/actions?agent=agent1&outcome=deny")
    found = seqs(body)
    assert found and all(s % 2 == 1 and s % 5 == 4 for s in found)
    assert found == sorted(found, reverse=True)
    body = page(c, "/console/actions?route=" + urllib.parse.quote("/v1/orders"))
    assert seqs(body) and all(s % 3 == 1 for s in seqs(body))
    window = "since=2026-12-07T09:10:00Z&until=2026-12-07T09:20:00Z"  # records 10..19
    assert seqs(page(c, "/console/actions?" + window)) == list(range(19, 9, -1))
    assert seqs(page(c, "/console/actions?gateway=gw-other")) == []
    assert seqs(page(c, "/console/actions?gateway=" + "g" * 1000)) == []  # wider than the column
    assert seqs(page(c, "/console/actions?agent=" + urllib.parse.quote("\U0001f600" * 300))) == []
    paged = page(c, "/console/actions?agent=agent0")
    nxt = re.search(r'id="next-page" href="([^"]+)"', paged)
    assert nxt is not None and "agent=agent0" in nxt.group(1)  # the filter is kept


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("outcome=maybe", "'outcome' is 'allow' or 'deny'"),
        ("since=yesterday", "not an ISO 8601 time"),
        ("until=2026-12-07T09:00:00", "needs a time zone"),
        ("before=abc", "must be a non-negative integer"),
        ("before=-1", "must be a non-negative integer"),
        ("before=" + "9" * 40, "must be a non-negative integer"),
        ("agent=a%00b", "must not contain NUL"),
        ("route=" + "x" * 1025, "longer than 1024"),
    ],
)
def test_bad_filter_values_are_a_400_page(env: Env, query: str, says: str) -> None:
    c = env.client("auditor")
    body = page(c, "/console/actions?" + query, 400)
    assert says in html.unescape(body)
    if not query.startswith("before="):  # the export has no cursor
        page(c, "/console/actions/export?" + query, 400)


def test_unknown_records_are_404_pages(env: Env) -> None:
    c = env.client("auditor")
    for path in ("/actions/121", "/actions/" + "9" * 30, "/actions/abc", "/actions/-1"):
        page(c, "/console" + path, 404)


def test_hostile_record_strings_are_escaped_and_visible(env: Env) -> None:
    c = env.client("auditor")
    for body in (
        page(c, "/console/actions"),
        page(c, "/console/actions/120"),
        page(c, "/console/actions?agent=" + urllib.parse.quote(HOSTILE_AGENT)),
    ):
        assert "<script>" not in body and "<b>" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        shown = body[body.rindex("</form>") :]  # a filter field keeps the value as typed
        assert "\u202e" not in shown and "\\u202e" in shown  # a bidi override is spelled out
    record_page = page(c, "/console/actions/120")
    assert "\\u200b" in record_page and "\\u2066" in record_page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;" in record_page
    assert "é" * 1020 in record_page  # the record page shows members whole
    timeline = page(c, "/console/actions")
    assert "é" * 1020 not in timeline and LONG_ROUTE[:120] + "…" in timeline  # the list clips


def test_a_record_and_its_inclusion_proof(env: Env) -> None:
    c = env.client("auditor")
    body = page(c, "/console/actions/37")
    assert "req-gw-a-37" in body and 'id="show-proof"' in body
    assert 'href="/console/actions?agent=agent1"' in body
    proved = page(c, "/console/actions/37?proof=1")
    result = re.search(r'id="proof-result" class="(\w+)">\s*(.*?)\s*</p>', proved, re.S)
    assert result is not None and result.group(1) == "ok", proved
    assert result.group(2).startswith("Included")


def _trust(rt: Runtime) -> LedgerTrust:
    chain = rt.authority.chain()
    return LedgerTrust((chain[-1],), tuple(chain[:-1]))


def test_the_export_download_verifies(env: Env) -> None:
    c = env.client("auditor")
    r = c.get("/console/actions/export")
    assert r.status_code == 200 and "agentca-actions.jsonl" in r.headers["Content-Disposition"]
    lines = r.get_data(as_text=True).splitlines(keepends=True)
    assert len(lines) == 1 + 121
    report = verify_export(lines, _trust(env.rt))
    assert report.ok, report.message
    r = c.get("/console/actions/export?agent=agent0&outcome=deny")
    lines = r.get_data(as_text=True).splitlines(keepends=True)
    header = json.loads(lines[0])
    assert header["filter"] == {"agent": "agent0", "outcome": "deny"}
    assert header["count"] == len(lines) - 1 > 0
    report = verify_export(lines, _trust(env.rt))
    assert report.ok, report.message
    body = page(c, "/console/actions?agent=agent0&outcome=deny")
    assert "/console/actions/export?agent=agent0&amp;outcome=deny" in body


def test_roles(env: Env) -> None:
    signed_out = env.client(None)
    for path in ("/console/actions", "/console/actions/3", "/console/actions/export"):
        r = signed_out.get(path)
        assert r.status_code == 303 and r.headers["Location"].startswith("/console/sign-in?")
        assert "next=" + urllib.parse.quote(path) in r.headers["Location"]
    assert signed_out.post("/console/actions/checkpoints").status_code == 401

    viewer = env.client("read-only")
    for path in ("/console/actions", "/console/actions/3", "/console/actions/export"):
        assert "may not GET" in page(viewer, path, 403)
    agent_page = page(viewer, "/console/agents/agent0", 404)  # not registered: still no 500
    assert "decisions" not in agent_page

    auditor = env.client("auditor")
    timeline = page(auditor, "/console/actions")
    assert 'id="sign-action-checkpoint"' not in timeline
    main = timeline[timeline.index("<main>") :]
    posts = re.findall(r'<form method="post" action="([^"]+)"', main)
    assert posts == ["/console/ledger/verify"]  # an auditor may verify, nothing else
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', timeline)
    assert csrf is not None
    r = auditor.post("/console/actions/checkpoints", data={"csrf_token": csrf.group(1)})
    assert r.status_code == 403 and "may not POST" in r.get_data(as_text=True)

    operator = env.client("operator")
    timeline = page(operator, "/console/actions")
    assert 'id="sign-action-checkpoint"' in timeline
    assert operator.post("/console/actions/checkpoints", data={}).status_code == 403  # no CSRF
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', timeline)
    assert csrf is not None
    before = env.rt.actions.latest_checkpoint()
    r = operator.post("/console/actions/checkpoints", data={"csrf_token": csrf.group(1)})
    assert r.status_code == 303 and r.headers["Location"] == "/console/actions"
    after = env.rt.actions.latest_checkpoint()
    assert before is not None and after is not None and after.timestamp >= before.timestamp


def test_the_agent_page_shows_its_recent_decisions(env: Env) -> None:
    if not any(a.name == "agent1" for a in env.rt.registry.list_agents()):
        env.rt.registry.add_scope("read_book")
        env.rt.registry.add_model("a" * 64, "m", "prod")
        env.rt.registry.register_agent(
            name="agent1",
            officer="agent1-officer@example.com",
            environment="prod",
            model_type="m",
            scopes=["read_book"],
            model_digests=["a" * 64],
            prompt_digests=["b" * 64],
            config_digests=[],
            actor="test",
        )
    for role in ("operator", "auditor"):
        body = page(env.client(role), "/console/agents/agent1")
        table = body[body.index('id="decisions"') :]
        shown = [int(s) for s in re.findall(r'href="/console/actions/(\d+)"', table)]
        assert shown == list(range(119, 79, -2)), shown  # the newest 20 of agent1, newest first
        assert 'href="/console/actions?agent=agent1"' in body
    assert 'id="decisions"' not in page(env.client("read-only"), "/console/agents/agent1")


def _state_file(env: Env) -> Path:
    return env.rt.settings.data_dir / "drift" / "alerts.json"


def _alert(agent: str, raised: str, status: str = "open", held: list[str] | None = None) -> Any:
    return {
        "id": f"{abs(hash((agent, raised))):016x}"[:16],
        "agent": agent,
        "environment": "prod",
        "raised_at": raised,
        "mode": "hold",
        "evidence": {"score": 9.5},
        "held": held or [],
        "status": status,
        "reviewed_by": None,
        "reviewed_at": None,
    }


def test_the_dashboard_lists_open_drift_alerts(env: Env) -> None:
    path = _state_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    alerts = [
        _alert("agent1", "2026-12-07T10:00:00Z", held=["abc123", "def456"]),
        _alert(HOSTILE_AGENT, "2026-12-07T11:00:00Z"),
        _alert("agent0", "2026-12-07T09:00:00Z", status="released", held=["0a"]),
    ]
    path.write_text(json.dumps({"alerts": alerts}))
    try:
        for role in ("operator", "read-only"):
            body = page(env.client(role), "/console/")
            assert re.search(r'id="drift-open">2<', body) and re.search(r'id="drift-held">2<', body)
            assert re.search(r'id="drift-on-hold">0<', body)  # those serials are not held here
            table = body[body.index('id="drift-alerts"') :]
            assert table.index("\\u202e") < table.index('href="/console/agents/agent1"')
            assert "<script>" not in body and "&lt;script&gt;" in body
        path.write_text("{not json")
        body = page(env.client("auditor"), "/console/")
        assert 'id="drift-problem"' in body and "unreadable" in body
        path.write_text(json.dumps({"alerts": [{"status": "open", "agent": 3}]}))
        assert "not a drift alert state" in page(env.client("auditor"), "/console/")
    finally:
        path.unlink()
    body = page(env.client("auditor"), "/console/")
    assert re.search(r'id="drift-open">0<', body) and 'id="drift-alerts"' not in body


def test_the_agents_list_pages_by_name(env: Env) -> None:
    if not any(a.name == "page-000" for a in env.rt.registry.list_agents()):
        env.rt.registry.add_scope("page_scope")
        env.rt.registry.add_model("c" * 64, "m", "prod")
        for i in range(60):
            env.rt.registry.register_agent(
                name=f"page-{i:03d}",
                officer="o@example.com",
                environment="prod",
                model_type="m",
                scopes=["page_scope"],
                model_digests=["c" * 64],
                prompt_digests=["d" * 64],
                config_digests=[],
                actor="test",
            )
    c = env.client("read-only")
    names = sorted(a.name for a in env.rt.registry.list_agents())
    first = page(c, "/console/agents")
    shown = re.findall(r'<td><a href="/console/agents/([^"]+)">', first)
    assert shown == names[:50]
    nxt = re.search(r'id="next-page" href="([^"]+)"', first)
    assert nxt is not None and f"after={names[49]}" in nxt.group(1)
    rest = page(c, nxt.group(1))
    assert re.findall(r'<td><a href="/console/agents/([^"]+)">', rest) == names[50:100]
    assert "may not" not in rest
    assert "at most 64 characters" in page(c, "/console/agents?after=" + "x" * 65, 400)
    page(c, "/console/agents?after=a%00", 400)
    assert (
        re.findall(r'<td><a href="/console/agents/([^"]+)">', page(c, "/console/agents?after=zzz"))
        == []
    )


def test_nul_and_oversize_query_values_elsewhere_are_not_500s(env: Env) -> None:
    c = env.client("auditor")
    for path in (
        "/console/certificates?agent=a%00b",
        "/console/ledger?agent=a%00b",
        "/console/ledger?event=" + "e" * 5000,
        "/console/certificates?officer=" + "o" * 5000,
    ):
        r = c.get(path)
        assert r.status_code in (200, 400), (path, r.status_code)
