"""The action log through a real gateway shell: the order book (Flask, examples/orderbook.py)
as its own process with ``--action-log-dir``, the real CA and OCSP responder, and a real
agent. Allowed and denied requests become records with the right members and no body; the
log verifies offline with the gateway's public key (decision 0055)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import Agent
from agent.client import send
from examples.scenario import AGENT, ENVIRONMENT, OFFICER, Scenario
from gateway.action_log import keygen, main

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
GATEWAY = "orders-e2e"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("action-log") / "work", pg_module_url)
    s.setup()
    with s.servers(gateway=False, max_status_age=1.0, inventory_refresh=0.3):
        yield s


def wait_records(path: Path, n: int, timeout: float = 10.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def test_allowed_and_denied_requests_are_recorded_by_the_flask_shell(
    scenario: Scenario, tmp_path: Path
) -> None:
    public = tmp_path / "gateway-pub.pem"
    public.write_bytes(keygen(tmp_path / "gateway-key.pem"))
    log_dir = tmp_path / "actions"
    agent: Agent = scenario.new_agent()
    agent.enroll(scenario.enrollment_token())
    options = ("--gateway-id", GATEWAY, "--action-log-dir", str(log_dir),
               "--action-key-file", str(tmp_path / "gateway-key.pem"))  # fmt: skip
    with scenario.gateway("examples.orderbook", *options) as url:
        ok = agent.request(
            "POST",
            url + "/orders",
            json_body=ORDER,
            headers={"X-Request-ID": "e2e-order-1", "Agentca-Subject": "user:alice"},
        )
        assert ok.status == 201, ok.body
        halt = agent.request("POST", url + "/admin/halt", json_body={})
        assert halt.status == 403
        unsigned = send("GET", url + "/book", {"X-Request-ID": "x" * 300}, None)
        assert unsigned.status == 401
        health = send("GET", url + "/health", {}, None)
        assert health.status == 200  # public: not verified, not recorded
        records = wait_records(log_dir / "actions.log", 3)
    # the gateway stopped (SIGTERM): it wrote a final checkpoint
    text = (log_dir / "actions.log").read_bytes()
    assert b"101.5" not in text and b'"qty"' not in text  # no request body
    assert [r["seq"] for r in records] == [0, 1, 2]
    allow, deny, anonymous = records
    serial = agent.credential.serial_hex
    assert allow["outcome"] == "allow" and allow["http_status"] == 201
    assert allow["route"] == "/orders" and allow["scope"] == "submit_limit_order"
    assert allow["request_id"] == "e2e-order-1" and allow["subject"] == "user:alice"
    assert allow["agent"] == AGENT and allow["officer"] == OFFICER
    assert allow["environment"] == ENVIRONMENT and allow["serial"] == serial
    assert str(allow["content_digest"]).startswith("sha-256=:")
    assert len(str(allow["issuer"])) == 40 and allow["profile"] == "agentca"
    assert deny["outcome"] == "deny" and deny["check"] == "scope-denied"
    assert deny["http_status"] == 403 and deny["route"] == "/admin/halt"
    assert deny["scope"] == "halt_trading" and deny["serial"] == serial
    assert anonymous["check"] == "credentials-missing" and anonymous["route"] == "/book"
    assert "agent" not in anonymous and len(str(anonymous["request_id"])) == 32
    assert all(r["gateway"] == GATEWAY for r in records)
    assert main(["verify", str(log_dir), "--public-key", str(public), "--proof", "1"]) == 0
    checkpoints = (log_dir / "checkpoints.log").read_bytes().splitlines()
    assert json.loads(checkpoints[-1])["tree_size"] == 3


def test_a_ca_outage_spools_and_delivers_every_record_once(
    scenario: Scenario, tmp_path: Path
) -> None:
    from tests.support.action_ca import CaStandIn, FakeLedger, free_port

    keygen(tmp_path / "key.pem")
    (tmp_path / "token").write_text("gw-token\n")
    ledger = FakeLedger("orders-ship", "gw-token")
    ca = CaStandIn(ledger, free_port())  # the action ledger is down at first
    log_dir = tmp_path / "actions"
    agent: Agent = scenario.new_agent()
    agent.enroll(scenario.enrollment_token())
    options = ("--gateway-id", "orders-ship", "--action-log-dir", str(log_dir),
               "--action-key-file", str(tmp_path / "key.pem"), "--action-token-file",
               str(tmp_path / "token"), "--action-ca-url", ca.url,
               "--action-ship-interval", "0.1", "--action-checkpoint-seconds", "0.5")  # fmt: skip
    try:
        with scenario.gateway("examples.orderbook", *options) as url:
            for _ in range(5):  # the gateway keeps serving while it cannot ship
                assert agent.request("POST", url + "/orders", json_body=ORDER).status == 201
            assert len(wait_records(log_dir / "actions.log", 5)) == 5
            assert ledger.records == {}
            ca.start()  # the CA is back
            deadline = time.monotonic() + 30
            while len(ledger.records) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            ca.stop()  # and away again
            for _ in range(3):
                assert agent.request("GET", url + "/book").status == 200
            wait_records(log_dir / "actions.log", 8)
            time.sleep(0.5)
            ca.start()
            deadline = time.monotonic() + 30
            while shipped(log_dir) < 8 and time.monotonic() < deadline:
                time.sleep(0.1)  # (the cursor moves after the CA's answer, not with it)
    finally:
        ca.stop()
    lines = (log_dir / "actions.log").read_bytes().splitlines()
    assert len(lines) >= 8
    assert {seq: ledger.records[seq] for seq in range(8)} == dict(enumerate(lines[:8]))
    assert ledger.checkpoints_ok >= 1  # a checkpoint came with a batch, and it verified
    assert json.loads((log_dir / "shipped").read_bytes())["next_seq"] >= 8


def shipped(log_dir: Path) -> int:
    try:
        return int(json.loads((log_dir / "shipped").read_bytes())["next_seq"])
    except (OSError, ValueError):
        return 0
