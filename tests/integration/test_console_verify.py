"""The console's whole-ledger verification in a background thread (decision 0054): the
progress page refreshes itself until the verdict, one job runs per worker, a job is found
only by the session that started it, and jobs are forgotten (and stopped) 10 minutes after
they start. Flask's test client against a real CA (SoftHSM2) on SQLite and PostgreSQL; the
long-running case on PostgreSQL with 200,000 ledger entries (bulk COPY)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from bench.ledger_bench import phase_fill
from ca.api.app import create_app
from ca.ledger.gateways import Gateways
from ca.store.models import ConsoleVerifyJob
from ca.wiring import Runtime, open_runtime
from tests.integration.action_support import GatewayKey, records
from tests.integration.conftest import settings_for
from wire.actions import ActionBatch

BIG = 200_000  # entries: long enough to watch the progress page before the verdict


class Env:
    def __init__(self, rt: Runtime, app: Any, tokens: dict[str, str]) -> None:
        self.rt, self.app, self.tokens = rt, app, tokens

    def client(self, role: str | None) -> FlaskClient:
        c = self.app.test_client()
        if role is not None:
            form = c.get("/console/sign-in").get_data(as_text=True)
            pre = re.search(r'name="signin_token" value="([^"]+)"', form)
            assert pre is not None
            data = {"signin_token": pre.group(1), "token": self.tokens[role], "next": "/console/"}
            assert c.post("/console/sign-in", data=data).status_code == 303
        return c

    def jobs(self) -> Any:
        return self.app.extensions.get("agentca.console_verify_jobs")


def _env(work: Any, url: str, hsm_config: Any) -> Env:
    settings = settings_for(work, url, hsm_config)
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p256", "ec-p256")
    tokens = {r: rt.api_tokens.create(r.replace("-", ""), r)[0] for r in ("auditor", "read-only")}
    return Env(rt, create_app(settings, runtime_factory=lambda: rt), tokens)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, hsm_config: Any
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp(f"console-verify-{request.param}")
    url = (
        f"sqlite:///{work}/ca.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_module_url")
    )
    e = _env(work, url, hsm_config)
    key = GatewayKey()
    Gateways(e.rt.sessions, e.rt.authority.clock).add("gw-v", key.pem(), "test")
    e.rt.actions.ingest(ActionBatch("gw-v", tuple(records("gw-v", 0, 30)), None))
    e.rt.checkpoints.checkpoint()
    e.rt.action_checkpoints.checkpoint()
    try:
        yield e
    finally:
        jobs = e.jobs()
        assert jobs is None or jobs.wait(30)
        e.rt.close()


def csrf(c: FlaskClient, path: str = "/console/ledger") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', c.get(path).get_data(as_text=True))
    assert found is not None
    return found.group(1)


def start(c: FlaskClient, **form: str) -> str:
    """POST the verify button; returns the progress page's path."""
    r = c.post("/console/ledger/verify", data={"csrf_token": csrf(c), **form})
    assert r.status_code == 303, r.get_data(as_text=True)
    location = r.headers["Location"]
    assert re.fullmatch(r"/console/ledger/verify/[A-Za-z0-9_-]{43}", location), location
    return location


def verdict(c: FlaskClient, path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        body = c.get(path).get_data(as_text=True)
        if 'id="verify-result"' in body:
            assert 'http-equiv="refresh"' not in body  # the finished page stops refreshing
            return body
        assert 'http-equiv="refresh"' in body and 'id="verify-progress"' in body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


@pytest.mark.parametrize("ledger", ["issuance", "actions"])
def test_a_verification_runs_to_its_verdict(env: Env, ledger: str) -> None:
    c = env.client("auditor")
    form = {"ledger": "actions"} if ledger == "actions" else {}
    body = verdict(c, start(c, **form))
    result = re.search(r'id="verify-result" class="(\w+)">(.*?)</p>', body, re.S)
    assert result is not None and result.group(1) == "ok", body
    assert result.group(2).startswith("OK")
    size = (env.rt.actions if ledger == "actions" else env.rt.ledger).latest_checkpoint()
    assert size is not None
    assert f"{size.tree_size} entries of the {'action' if form else 'issuance'} ledger" in body


def test_a_job_is_only_its_sessions(env: Env) -> None:
    mine = env.client("auditor")
    path = start(mine)
    verdict(mine, path)
    other = env.client("auditor")  # the same token, another session
    assert other.get(path).status_code == 404
    for bad in ("x", "A" * 42, "A" * 44, "..%2F..%2Fsign-in"):
        assert mine.get("/console/ledger/verify/" + bad).status_code == 404
    assert mine.get("/console/ledger/verify/" + "A" * 42 + "%00").status_code == 400  # the app's
    assert env.client("read-only").get(path).status_code == 403
    signed_out = env.client(None).get(path)
    assert signed_out.status_code == 303 and "/console/sign-in" in signed_out.headers["Location"]
    r = env.client("read-only").post("/console/ledger/verify", data={})
    assert r.status_code == 403


def test_a_job_is_forgotten_ten_minutes_after_it_started(env: Env) -> None:
    c = env.client("auditor")
    path = start(c)
    verdict(c, path)
    with env.rt.sessions.begin() as s:
        s.execute(
            sa.update(ConsoleVerifyJob).values(
                started_at=env.rt.authority.clock() - timedelta(minutes=10, seconds=1)
            )
        )
    assert c.get(path).status_code == 404
    start(c)  # starting a job forgets the old ones
    with env.rt.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ConsoleVerifyJob)) == 1


@pytest.fixture
def big(tmp_path_factory: pytest.TempPathFactory, hsm_config: Any, pg_url: str) -> Iterator[Env]:
    e = _env(tmp_path_factory.mktemp("console-verify-big"), pg_url, hsm_config)
    phase_fill(pg_url, BIG)
    e.rt.checkpoints.checkpoint()
    yield e
    jobs = e.jobs()
    assert jobs is None or jobs.wait(60)
    e.rt.close()


def test_progress_one_job_per_worker_and_a_forgotten_job_stops(big: Env) -> None:
    c = big.client("auditor")
    path = start(c)
    body = c.get(path).get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="1">' in body
    total = re.search(r'id="total">(\d+)<', body)
    assert total is not None and int(total.group(1)) >= BIG
    again = big.client("auditor")  # a second job in this worker waits for the first
    r = again.post("/console/ledger/verify", data={"csrf_token": csrf(again)})
    assert r.status_code == 429 and r.headers["Retry-After"] == "5"
    seen = set()
    deadline = time.monotonic() + 60
    while 'id="verify-result"' not in body:
        checked = re.search(r'id="checked">(\d+)<', body)
        assert checked is not None
        seen.add(int(checked.group(1)))
        assert time.monotonic() < deadline
        time.sleep(0.2)
        body = c.get(path).get_data(as_text=True)
    assert len(seen - {0}) >= 1, seen  # progress was shown between start and verdict
    assert "OK" in body and f"{int(total.group(1))} entries of the issuance ledger" in body

    path = start(c)  # a job forgotten while it runs stops at its next progress write
    with big.rt.sessions.begin() as s:
        s.execute(sa.delete(ConsoleVerifyJob))
    assert big.jobs().wait(30)
    assert c.get(path).status_code == 404
