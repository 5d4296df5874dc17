"""A drift hold end to end (issue 18 item 4): a real CA, OCSP responder and order-book gateway
(examples/scenario.py), an enrolled agent, three days of its ordinary action records and an
attack in the last minutes; ``agentca drift run --records FILE`` in hold mode puts the
agent's certificate on hold through the normal revocation path, the gateway refuses it
within a second (OCSP says revoked, certificateHold), the ledger's remediation entry carries
the evidence, and ``agentca drift review --release`` gives the certificate back."""

from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from agent import Agent
from agent.client import send
from cli.output import cli_serial
from examples.scenario import AGENT, ENVIRONMENT, OFFICER, Scenario
from wire.actions import ActionRecord, record_time

pytestmark = pytest.mark.integration

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
SETTINGS = """
[drift]
training = "3d"
min_training = "1d"
default_threshold = 10
mode = "hold"
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("drift-hold") / "work", pg_module_url)
    s.setup()
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


def _records(serial: str, now: datetime, attack: bool) -> list[dict[str, Any]]:
    """Three days of a steady trader (book, order, order status) and, with ``attack``, in
    the last four minutes: attempts at a scope it lacks and a burst of book reads."""
    rng = random.Random(18)
    out: list[dict[str, Any]] = []

    def add(t: datetime, method: str, route: str, scope: str, deny: bool = False) -> None:
        out.append(
            ActionRecord(
                gateway="gw-1", seq=len(out), time=record_time(t), request_id=f"r{len(out)}",
                outcome="deny" if deny else "allow", method=method, route=route, scope=scope,
                check="scope-denied" if deny else None, http_status=403 if deny else 201,
                agent=AGENT, serial=serial, officer=OFFICER, environment=ENVIRONMENT,
            ).to_json()
        )  # fmt: skip

    start = now - timedelta(days=3)
    minute = 0
    while start + timedelta(minutes=minute) < now - timedelta(minutes=10):
        if rng.random() < 0.3:
            t = start + timedelta(minutes=minute, seconds=rng.uniform(0, 50))
            add(t, "GET", "/book", "read_book")
            add(t + timedelta(seconds=2), "POST", "/orders", "place_orders")
            add(t + timedelta(seconds=4), "GET", "/orders/{id}", "read_book")
        minute += 1
    if attack:
        t = now - timedelta(minutes=4)
        for i in range(8):
            add(t + timedelta(seconds=10 * i), "POST", "/admin/halt", "halt_trading", deny=True)
        for i in range(60):
            add(t + timedelta(seconds=100 + 2 * i), "GET", "/book", "read_book")
    return out


def _drift(s: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [s.agentca, "drift", *args], env=s.env, capture_output=True, text=True, timeout=120
    )


def _ocsp(s: Scenario, a: Agent) -> ocsp.OCSPResponse:
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(a.credential.certificate, a.credential.chain[0], hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    request = urllib.request.Request(
        s.ocsp_url + "/ocsp", data=der, headers={"Content-Type": "application/ocsp-request"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return ocsp.load_der_ocsp_response(reply.read())


def _post(s: Scenario, a: Agent) -> Any:
    headers = {"Content-Type": "application/json"}
    body = json.dumps(ORDER).encode()
    signed = a.sign("POST", s.gateway_url + "/orders", headers, body, auto_staple=False)
    headers.update(signed.headers)
    return send("POST", s.gateway_url + "/orders", headers, body)


def _ledger(s: Scenario, event: str) -> list[dict[str, Any]]:
    out = s.cli("ledger", "export", "--sign-checkpoint", "--agent", AGENT, "--event", event)
    return [json.loads(line) for line in out.splitlines()[1:]]


def test_attack_trace_holds_the_certificate_and_review_releases_it(
    scenario: Scenario, tmp_path: Path
) -> None:
    s = scenario
    a = s.new_agent()
    a.enroll(s.enrollment_token())
    a.refresh_staple()
    assert _post(s, a).status == 201
    serial = a.credential.serial_hex
    settings = tmp_path / "drift.toml"
    settings.write_text(SETTINGS)
    now = datetime.now(UTC)
    window = ["--since", record_time(now - timedelta(minutes=10)), "--until", record_time(now)]
    common = ["--settings", str(settings), *window, "--json"]

    # the same agent's ordinary records: scored, nothing raised, the certificate stays good
    quiet = tmp_path / "quiet.jsonl"
    quiet.write_text("".join(json.dumps(r) + "\n" for r in _records(serial, now, False)))
    ran = _drift(s, "run", "--records", str(quiet), *common)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["alerts"] == [] and summary["records"] > 1000

    # the attack: exit 16, held, and the gateway refuses the agent within a second
    attack = tmp_path / "attack.jsonl"
    attack.write_text("".join(json.dumps(r) + "\n" for r in _records(serial, now, True)))
    ran = _drift(s, "run", "--records", str(attack), *common)
    held_at = time.monotonic()
    assert ran.returncode == 16, ran.stderr
    alert = json.loads(ran.stdout)["alerts"][0]
    assert alert["agent"] == AGENT and alert["action"] == "hold"
    assert alert["held"] == [cli_serial(serial)]
    assert float(alert["score"]) >= 10
    named = {f["feature"] for f in alert["top_features"]}
    assert named & {"denials", "new_scopes", "transitions"}, alert["top_features"]
    log_line = json.loads(next(x for x in ran.stderr.splitlines() if '"agentca.drift"' in x))
    assert log_line["msg"] == "drift alert" and log_line["agent"] == AGENT
    while True:
        reply = _post(s, a)
        elapsed = time.monotonic() - held_at
        if reply.status != 201 or elapsed > 5:
            break
        time.sleep(0.01)
    assert reply.status == 401 and json.loads(reply.body)["check"] == "certificate-revoked"
    assert elapsed <= 1.0, f"the hold took {elapsed:.3f} s to reach the gateway"
    status = _ocsp(s, a)
    assert status.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert status.revocation_reason is x509.ReasonFlags.certificate_hold

    # the ledger: the alert, and the remediation (the hold) carrying the same evidence
    (entry,) = _ledger(s, "certificate.revoked")
    assert entry["body"]["reason"] == "certificateHold"
    evidence = entry["body"]["evidence"]["drift"]
    assert evidence["alert_id"] == alert["alert_id"] and evidence["score"] == alert["score"]
    assert evidence["window_end"] == alert["window_end"]
    assert evidence["top_features"] == alert["top_features"]
    (raised,) = _ledger(s, "drift.alert")
    assert raised["body"]["alert_id"] == alert["alert_id"]

    # the same run again raises nothing new and changes nothing
    again = _drift(s, "run", "--records", str(attack), *common)
    assert again.returncode == 0, again.stderr
    assert [x["action"] for x in json.loads(again.stdout)["alerts"]] == ["repeat"]

    # review: listed, released by the operator, good again at OCSP and the gateway
    listed = json.loads(_drift(s, "review", "--json").stdout)["alerts"]
    assert [x["id"] for x in listed] == [alert["alert_id"]]
    released = _drift(s, "review", "--release", serial, "--note", "false alarm", "--json")
    assert released.returncode == 0, released.stderr
    done = json.loads(released.stdout)
    assert done["decision"] == "released" and done["state"] == "issued"
    (lifted,) = _ledger(s, "certificate.hold_released")
    review = lifted["body"]["evidence"]["drift_review"]
    assert review == {
        "alert_id": alert["alert_id"], "agent": AGENT, "decision": "released",
        "note": "false alarm",
    }  # fmt: skip
    assert lifted["actor"] == done["reviewed_by"]
    assert _ocsp(s, a).certificate_status is ocsp.OCSPCertStatus.GOOD
    deadline = time.monotonic() + 5
    while (reply := _post(s, a)).status != 201 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reply.status == 201, reply.body
    assert json.loads(_drift(s, "review", "--json").stdout)["alerts"] == []
    missing = _drift(s, "review", "--release", serial)
    assert missing.returncode == 6 and "no open drift alert" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_drift_run_reads_the_cas_action_ledger(scenario: Scenario, tmp_path: Path) -> None:
    """Without ``--records``, ``agentca drift run`` scores the records gateways shipped to
    this CA (``POST /v1/actions``): the ordinary days raise nothing, the attack raises."""
    from tests.integration.action_support import GatewayKey, batch
    from tests.integration.http import call

    s = scenario
    key = GatewayKey()
    (tmp_path / "gw.pem").write_bytes(key.pem())
    s.cli("gateway", "add", "gw-1", "--public-key", str(tmp_path / "gw.pem"))
    token = json.loads(s.cli("apitoken", "create", "--role", "gateway", "--name", "gw-1", "--json"))
    settings = tmp_path / "drift.toml"
    settings.write_text(SETTINGS)
    now = datetime.now(UTC)
    window = ["--since", record_time(now - timedelta(minutes=10)), "--until", record_time(now)]
    common = ["--settings", str(settings), *window, "--mode", "alert", "--dry-run", "--json"]
    serial = "7f" * 10
    quiet = [ActionRecord.from_json(r) for r in _records(serial, now, False)]
    attack = [ActionRecord.from_json(r) for r in _records(serial, now, True)]
    assert attack[: len(quiet)] == quiet

    def ship(records: list[ActionRecord]) -> None:
        for i in range(0, len(records), 1000):
            sent = call(s.ca_url, "POST", "/v1/actions", batch("gw-1", records[i : i + 1000]),
                        token=token["token"])  # fmt: skip
            assert sent.status == 200, sent.body

    ship(quiet)
    ran = _drift(s, "run", *common)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["alerts"] == [] and summary["records"] == len(quiet)
    ship(attack[len(quiet) :])
    ran = _drift(s, "run", *common)
    assert ran.returncode == 16, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["records"] == len(attack)
    (alert,) = summary["alerts"]
    assert alert["agent"] == AGENT and alert["action"] == "alert" and alert["held"] == []
    # a dry run holds nothing: the CA's state and the ledger are unchanged
    assert json.loads(_drift(s, "review", "--json").stdout)["alerts"] == []
    # the same scores from an action-ledger export, read as it is
    export = tmp_path / "export.jsonl"
    s.cli(
        "ledger",
        "export",
        "--actions",
        "--sign-checkpoint",
        "--gateway",
        "gw-1",
        "--out",
        str(export),
    )
    again = _drift(s, "run", "--records", str(export), *common)
    assert again.returncode == 16, again.stderr
    (same,) = json.loads(again.stdout)["alerts"]
    assert same["score"] == alert["score"] and same["top_features"] == alert["top_features"]
    issuance = tmp_path / "issuance.jsonl"
    s.cli("ledger", "export", "--sign-checkpoint", "--out", str(issuance))
    wrong = _drift(s, "run", "--records", str(issuance), *common)
    assert wrong.returncode == 2 and "not an action export" in wrong.stderr, wrong.stderr
