"""Drift responses and the CLI's edges without a CA: the JSON log line, the webhook (a real
local HTTP server; a dead one costs at most its timeout and is only logged), the state file
(atomic, a second run raises nothing twice), the metrics text, the record file's errors, and
``agentca drift run --dry-run`` / ``review`` answers and exit codes."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench.drift_traces import Trace, generate, iter_json
from ca.drift.alerts import AlertState, AlertStateError
from ca.drift.analyser import Alert, Analyser, RunResult, epoch, instant
from ca.drift.respond import LOGGER, Responder, metrics_text
from ca.drift.settings import DriftSettings
from ca.drift.source import JsonLinesSource, RecordFileError
from cli.main import cli

SETTINGS = DriftSettings(training=3 * 86400)


@pytest.fixture(scope="module")
def trace() -> Trace:
    return generate(3, normal_per_archetype=1, attacks_per_kind=1, training_days=3, eval_days=2)


@pytest.fixture(scope="module")
def result(trace: Trace) -> RunResult:
    return Analyser(SETTINGS).run(trace.records, trace.since, trace.until)


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _alerts(result: RunResult) -> list[Alert]:
    assert result.alerts
    return result.alerts


def test_alert_log_line_webhook_and_state(
    result: RunResult, hook: tuple[str, list[dict[str, Any]]], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url, got = hook
    state = AlertState.load(tmp_path / "state" / "alerts.json")
    responder = Responder("cli:test", 1.8e9, state=state, webhook_url=url)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        outcomes = responder.respond(_alerts(result))
    assert [o.action for o in outcomes] == ["alert"] * len(result.alerts)
    assert all(o.webhook == "ok" for o in outcomes)
    assert [g["alert_id"] for g in got] == [o.alert_id for o in outcomes]
    assert got[0]["action"] == "alert" and got[0]["top_features"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert len(lines) == len(outcomes)
    assert lines[0]["logger"] == "agentca.drift" and lines[0]["msg"] == "drift alert"
    assert lines[0]["agent"] == result.alerts[0].worst.agent and lines[0]["score"]
    # the state survives, and the same alerts found again are repeats: no webhook, no log
    again = Responder("cli:test", 1.8e9 + 60, state=AlertState.load(state.path), webhook_url=url)
    assert {o.action for o in again.respond(_alerts(result))} == {"repeat"}
    assert len(got) == len(outcomes)
    stored = AlertState.load(state.path)
    assert [a.id for a in stored.open_alerts()] == [o.alert_id for o in outcomes]
    assert not list(state.path.parent.glob(".drift-*"))  # no temporary left behind


def test_a_dead_webhook_costs_its_timeout_and_is_only_logged(
    result: RunResult, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    responder = Responder("cli:test", 1.8e9, webhook_url=f"http://127.0.0.1:{port}/x")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        outcomes = responder.respond(_alerts(result)[:1])
    assert time.monotonic() - started < 2.5
    assert outcomes[0].webhook is not None and outcomes[0].webhook.startswith("webhook failed")
    assert any("webhook failed" in r.getMessage() for r in caplog.records)


def test_metrics_text_has_no_agent_names(result: RunResult) -> None:
    outcomes = Responder("cli:test", 1.8e9).respond(_alerts(result))
    text = metrics_text(result, outcomes).decode()
    assert f'agentca_drift_alerts{{action="alert"}} {float(len(outcomes))}' in text
    assert f"agentca_drift_records {float(result.records)}" in text
    assert all(agent not in text for agent in result.agents)


def test_state_file_that_is_not_a_state_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.json"
    bad.write_text('{"alerts": [{"id": 1}]}')
    with pytest.raises(AlertStateError, match="not a drift alert state"):
        AlertState.load(bad)
    bad.write_text("{")
    with pytest.raises(AlertStateError, match="unreadable"):
        AlertState.load(bad)


def test_record_file_errors_name_the_line(tmp_path: Path, trace: Trace) -> None:
    from datetime import UTC, datetime

    lo, hi = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    path = tmp_path / "r.jsonl"
    good = next(iter_json(trace))
    path.write_text(good + "\n\n" + good.replace('"outcome":"allow"', '"outcome":"maybe"') + "\n")
    with pytest.raises(RecordFileError, match="line 3: member 'outcome'"):
        list(JsonLinesSource(path).records(lo, hi))
    with pytest.raises(RecordFileError, match="cannot read records file"):
        list(JsonLinesSource(tmp_path / "missing").records(lo, hi))


# -------------------------------------------------------------------------------- the CLI
def _run(tmp_path: Path, *args: str) -> Any:
    env = {"AGENTCA_DATA_DIR": str(tmp_path / "data")}
    return CliRunner().invoke(cli, ["drift", *args], env=env, catch_exceptions=False)


def test_cli_dry_run_scores_a_records_file(tmp_path: Path, trace: Trace) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(iter_json(trace)) + "\n")
    settings = tmp_path / "drift.toml"
    settings.write_text('[drift]\ntraining = "3d"\n')
    metrics = tmp_path / "drift.prom"
    window = ["--since", instant(trace.since), "--until", instant(trace.until)]
    r = _run(tmp_path, "run", "--records", str(records), "--settings", str(settings), *window,
             "--dry-run", "--json", "--metrics-file", str(metrics))  # fmt: skip
    assert r.exit_code == 16, r.output
    doc = json.loads(r.stdout)
    attacked = {a.agent for a in trace.attacks}
    within = sum(1 for x in trace.records if epoch(x.time) < trace.until)
    assert doc["dry_run"] is True and doc["records"] == within
    assert {a["agent"] for a in doc["alerts"]} <= attacked
    assert all(a["action"] == "alert" and a["held"] == [] for a in doc["alerts"])
    assert "agentca_drift_windows_scored" in metrics.read_text()
    assert not (tmp_path / "data" / "drift").exists()  # a dry run keeps no state


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["run", "--records", "{records}", "--since", "yesterday"], 2, "--since: 'yesterday'"),
        (["run", "--records", "{records}", "--since", "2026-11-10T00:00:00"], 2, "no time zone"),
        (["run", "--records", "{missing}", "--dry-run"], 2, "cannot read records file"),
        (["run", "--records", "{records}", "--settings", "{bad}", "--dry-run"], 10, "unknown"),
        (
            [
                "run",
                "--records",
                "{records}",
                "--since",
                "2026-11-10T00:00:00Z",
                "--until",
                "2026-11-09T00:00:00Z",
            ],
            2,
            "--since must be before --until",
        ),
        (["review", "--revoke", "01"], 2, "--revoke needs --reason"),
        (["review", "--release", "01", "--dismiss", "x"], 2, "give one of"),
        (["review", "--release", "0AB1"], 6, "no open drift alert"),
        (["review", "--release", "zz"], 2, "not a hexadecimal serial"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    tmp_path: Path, trace: Trace, args: list[str], code: int, message: str
) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(next(iter_json(trace)) + "\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[drift]\nthreshold = 3\n")
    paths = {"records": records, "missing": tmp_path / "nope", "bad": bad}
    argv = [a.format(**paths) for a in args]
    r = _run(tmp_path, *argv)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr


def test_cli_review_lists_nothing_without_alerts(tmp_path: Path) -> None:
    r = _run(tmp_path, "review", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"alerts": []}
    for command in ("run", "review"):
        assert _run(tmp_path, command, "--help").exit_code == 0
