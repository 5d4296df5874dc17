"""/metrics and JSON logs of the real CA API under gunicorn with 2 workers (decision 0031)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.servers import agentca_server

pytestmark = pytest.mark.integration


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _enroll(base: str, rid: str) -> tuple[int, dict[str, object], dict[str, str]]:
    req = urllib.request.Request(
        base + "/v1/enroll",
        data=b"{}",
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer aca_enroll_not-a-real-token",
            "X-Request-ID": rid,
            "Connection": "close",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_ca_api_metrics_count_refusals_across_workers_and_logs_are_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"AGENTCA_LOG_FORMAT": "json"}
    with agentca_server(["serve", "--workers", "2"], data, "/health", env) as (base, _proc):
        status, body, _ = _get(base + "/metrics")
        assert status == 200
        before = _samples(body.decode(), "agentca_issuance_total")
        key = (("endpoint", "enroll"), ("outcome", "bad-request"))
        for i in range(6):
            code, problem, headers = _enroll(base, f"test-rid-{i}")
            assert code == 400
            assert headers["X-Request-ID"] == f"test-rid-{i}"
            assert problem["request_id"] == f"test-rid-{i}"
        status, body, headers = _get(base + "/metrics", {"X-Request-ID": "bad id!"})
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        after = _samples(text, "agentca_issuance_total")
        assert after[key] - before.get(key, 0.0) == 6
        assert _samples(text, "agentca_issuance_seconds_count")[key] - 0 >= 6
        pool = _samples(text, "agentca_db_pool_size")
        assert pool, text[:2000]
        assert _samples(text, "agentca_ledger_entries")
        # a request ID that is not well-formed is replaced
        assert headers["X-Request-ID"] != "bad id!" and len(headers["X-Request-ID"]) == 32
    log = next(tmp_path.glob("server-*.log")).read_text()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "agentca.access"]
    enrolls = [x for x in access if x["path"] == "/v1/enroll"]
    assert {x["request_id"] for x in enrolls} == {f"test-rid-{i}" for i in range(6)}
    for x in enrolls:
        assert x["method"] == "POST" and x["status"] == 400 and x["duration_ms"] >= 0
        assert x["ts"].endswith("Z") and x["level"] == "info"
    assert "not-a-real-token" not in log and "Bearer" not in log
    assert len({x["pid"] for x in lines if "pid" in x}) >= 1


def test_metrics_refused_outside_metrics_networks(tmp_path: Path) -> None:
    env = {"AGENTCA_METRICS_NETWORKS": "10.0.0.0/8"}
    with agentca_server(["serve", "--workers", "1"], tmp_path / "d", "/health", env) as (
        base,
        _proc,
    ):
        assert _get(base + "/metrics")[0] == 404


def test_ocsp_metrics_count_answers_exactly_across_two_workers(tmp_path: Path, pg_url: str) -> None:
    import concurrent.futures
    import time

    from tests.integration.conftest import run_cli
    from tests.integration.test_ocsp_interop import der_request, init_ca, issue, post, serve

    data_dir, work = tmp_path / "ca", tmp_path / "work"
    work.mkdir()
    env = {"AGENTCA_DATABASE_URL": pg_url, "AGENTCA_LOG_FORMAT": "json"}
    init_ca(data_dir, env, work)
    good, _ = issue(data_dir, env, work, "m-good")
    revoked, serial = issue(data_dir, env, work, "m-revoked")
    assert run_cli("revoke", serial, data_dir=data_dir, env=env).returncode == 0
    issuer = work / "issuing.pem"
    with serve(data_dir, env) as (base, _proc):

        def counts() -> dict[tuple[tuple[str, str], ...], float]:
            return _samples(_get(base + "/metrics")[1].decode(), "agentca_ocsp_responses_total")

        def total(c: dict[tuple[tuple[str, str], ...], float], status: str) -> float:
            return sum(v for k, v in c.items() if dict(k)["status"] == status)

        time.sleep(1.5)  # warm-up answers (none expected) are flushed
        before = counts()
        pids: set[str] = set()

        def one(der: bytes) -> None:
            _resp, headers = post(base, der)
            pids.add(headers["X-Agentca-Worker"])

        jobs = [der_request(issuer, good)] * 10 + [der_request(issuer, revoked)] * 3
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, jobs))
        deadline = time.monotonic() + 10
        after = counts()
        while total(after, "good") - total(before, "good") < 10 and time.monotonic() < deadline:
            time.sleep(0.3)
            after = counts()
        assert total(after, "good") - total(before, "good") == 10
        assert total(after, "revoked") - total(before, "revoked") == 3
        text = _get(base + "/metrics")[1].decode()
        assert _samples(text, "agentca_ocsp_database_up") == {(): 1.0}
        assert _samples(text, "agentca_ocsp_status_age_seconds")[()] < 1.0
    assert len(pids) == 2, pids  # both workers answered: the scrape merged their counts
