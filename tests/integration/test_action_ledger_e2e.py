"""Issue 18's end-to-end must-show with real parts only: a real agent calls the real order-book
gateway (its own process, ``--action-log-dir``, shipping to the CA); the records land in the
gateway's log and, through ``POST /v1/actions`` of a real ``agentca serve`` on PostgreSQL, in
the CA's action ledger. The CA's action endpoint is stopped for a while: the gateway keeps
serving, spools, and delivers every record exactly once when it returns. The export verifies
offline; changing, deleting or reordering one record fails at that record; a record a second
gateway logged and checkpointed but never delivered is found by ``ledger crosscheck``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import Agent
from agent.client import send
from examples.scenario import Scenario, free_port
from gateway.action_log import CHECKPOINTS, RECORDS, keygen
from tests.integration.http import call
from wire.actions import ActionBatch, ActionRecord

pytestmark = pytest.mark.integration

ORDER = {"side": "buy", "price": "100.25", "qty": "1"}
VERIFY_FAILED = 13


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("actions-e2e") / "work", pg_module_url)
    s.setup()
    with s.servers(gateway=False, max_status_age=1.0, inventory_refresh=0.3):
        yield s


def _register_gateway(s: Scenario, name: str) -> tuple[Path, Path]:
    """A gateway key made by ``python -m gateway.action_log keygen``'s code, registered with
    ``agentca gateway add``; its own ``--role gateway`` token in a 0600 file."""
    key, pub = s.work / f"{name}-key.pem", s.work / f"{name}-pub.pem"
    pub.write_bytes(keygen(key))
    s.cli("gateway", "add", name, "--public-key", str(pub))
    token = json.loads(s.cli("apitoken", "create", "--role", "gateway", "--name", name, "--json"))
    token_file = s.work / f"{name}.token"
    token_file.write_text(token["token"] + "\n")
    os.chmod(token_file, 0o600)
    return key, token_file


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _next_seq(log_dir: Path) -> int:
    try:
        return int(json.loads((log_dir / "shipped").read_bytes())["next_seq"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _action_ca(s: Scenario, port: int) -> Any:
    """Another ``agentca serve`` on the scenario's database: the CA the gateway ships to."""
    return s._process(
        f"action-ca-{port}-{time.monotonic_ns()}",
        [s.agentca, "serve", "--workers", "1", "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
    )


def _verify(s: Scenario, path: Path, trust: Path) -> Any:
    import subprocess

    return subprocess.run(
        [s.agentca, "ledger", "verify", str(path), "--trust", str(trust)],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _crosscheck(s: Scenario, name: str, log_dir: Path) -> Any:
    import subprocess

    return subprocess.run(
        [s.agentca, "ledger", "crosscheck", "--gateway", name, "--gateway-log", str(log_dir),
         "--json"],
        env=s.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_gateway_records_reach_the_ca_ledger_once_and_verify_offline(scenario: Scenario) -> None:
    s = scenario
    key, token_file = _register_gateway(s, "orders-e2e")
    log_dir = s.work / "orders-e2e-actions"
    port = free_port()
    agent: Agent = s.new_agent()
    agent.enroll(s.enrollment_token())
    options = ("--gateway-id", "orders-e2e", "--action-log-dir", str(log_dir),
               "--action-key-file", str(key), "--action-token-file", str(token_file),
               "--action-ca-url", f"http://127.0.0.1:{port}", "--action-ship-interval", "0.1",
               "--action-checkpoint-seconds", "0.5")  # fmt: skip
    with s.gateway("examples.orderbook", *options) as url:
        with _action_ca(s, port):
            for i in range(4):
                reply = agent.request(
                    "POST", url + "/orders", json_body=ORDER, headers={"X-Request-ID": f"o-{i}"}
                )
                assert reply.status == 201, reply.body
            assert agent.request("POST", url + "/admin/halt", json_body={}).status == 403
            assert send("GET", url + "/book", {}, None).status == 401
            assert _wait(lambda: _next_seq(log_dir) >= 6), _next_seq(log_dir)
        # the CA is away: the gateway keeps serving and spools
        for i in range(5):
            reply = agent.request(
                "POST", url + "/orders", json_body=ORDER, headers={"X-Request-ID": f"away-{i}"}
            )
            assert reply.status == 201, reply.body
        assert _wait(lambda: len((log_dir / RECORDS).read_bytes().splitlines()) >= 11)
        time.sleep(1.0)  # several shipping attempts fail meanwhile
        assert _next_seq(log_dir) == 6
        with _action_ca(s, port):  # back on the same address
            assert _wait(lambda: _next_seq(log_dir) >= 11), _next_seq(log_dir)
            time.sleep(0.6)  # one more checkpoint, shipped with an empty batch or the next
    # the gateway stopped; its log is what it decided, in order
    logged = _lines(log_dir / RECORDS)
    assert len(logged) == 11 and [r["seq"] for r in logged] == list(range(11))
    assert [r["outcome"] for r in logged].count("deny") == 2
    assert sum(r.get("request_id", "").startswith("away-") for r in logged) == 5

    # the CA's ledger: every record exactly once, byte-for-byte the gateway's
    (s.work / "chain.pem").write_text(s.cli("chain") + "\n")
    s.cli("ledger", "checkpoint", "--actions")
    out = s.work / "orders-e2e.jsonl"
    s.cli("ledger", "export", "--actions", "--gateway", "orders-e2e", "--out", str(out))
    header, *entries = _lines(out)
    assert header["filter"] == {"gateway": "orders-e2e"} and header["count"] == 11
    held = [e["record"] for e in entries]
    assert [r["seq"] for r in held] == list(range(11))  # none lost, none twice
    assert held == logged
    ok = _verify(s, out, s.work / "chain.pem")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stdout + ok.stderr

    # every checkpoint the gateway signed is matched by the CA's ledger
    r = _crosscheck(s, "orders-e2e", log_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["ok"] and verdict["records_held"] == 11
    assert len(verdict["checkpoints"]) >= 2

    # one record changed, deleted or moved: verification fails at that record
    full = _lines(s.work / _full_export(s))
    head, rows = full[0], full[1:]
    k = 4
    changed = [dict(row) for row in rows]
    changed[k] = {**changed[k], "record": {**changed[k]["record"], "http_status": 200}}
    cases = {
        "changed": (changed, f"record {rows[k]['seq']} was altered"),
        "deleted": (rows[:k] + rows[k + 1 :], f"record {rows[k]['seq']} is missing"),
        "reordered": (
            [*rows[:k], rows[k + 1], rows[k], *rows[k + 2 :]],
            f"record {rows[k]['seq']} is missing",
        ),
    }
    for name, (tampered, words) in cases.items():
        path = s.work / f"tampered-{name}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in [head, *tampered]))
        r = _verify(s, path, s.work / "chain.pem")
        assert r.returncode == VERIFY_FAILED, (name, r.stdout, r.stderr)
        assert words in r.stderr, (name, r.stderr)


def _full_export(s: Scenario) -> str:
    s.cli("ledger", "export", "--actions", "--out", str(s.work / "all.jsonl"), "--force")
    return "all.jsonl"


def test_a_record_the_gateway_never_delivered_is_found_by_the_crosscheck(
    scenario: Scenario,
) -> None:
    """A second real gateway logs and checkpoints three decisions; only two reach the CA
    (delivered with its own token, as a gateway that drops one would). The CA cannot see the
    gap by itself, but ``ledger crosscheck`` against the gateway's signed checkpoints does."""
    s = scenario
    key, token_file = _register_gateway(s, "orders-drop")
    log_dir = s.work / "orders-drop-actions"
    agent: Agent = s.new_agent()
    agent.enroll(s.enrollment_token())
    options = ("--gateway-id", "orders-drop", "--action-log-dir", str(log_dir),
               "--action-key-file", str(key), "--action-checkpoint-seconds", "0.3")  # fmt: skip
    with s.gateway("examples.orderbook", *options) as url:
        for i in range(3):
            reply = agent.request(
                "POST", url + "/orders", json_body=ORDER, headers={"X-Request-ID": f"d-{i}"}
            )
            assert reply.status == 201, reply.body
        assert _wait(lambda: len(_lines(log_dir / RECORDS)) >= 3)
    checkpoints = _lines(log_dir / CHECKPOINTS)
    assert checkpoints[-1]["tree_size"] == 3  # the gateway signed for all three
    logged = _lines(log_dir / RECORDS)
    token = token_file.read_text().strip()
    records = [ActionRecord.from_json(r) for r in logged]
    body = ActionBatch("orders-drop", tuple(records[:2])).to_json()  # the third is dropped
    sent = call(s.ca_url, "POST", "/v1/actions", body, token=token)
    assert sent.status == 200, sent.body
    r = _crosscheck(s, "orders-drop", log_dir)
    assert r.returncode == VERIFY_FAILED, r.stdout + r.stderr
    verdict = json.loads(r.stdout)
    assert not verdict["ok"] and verdict["records_held"] == 2
    assert verdict["checkpoints"][-1]["status"] == "missing"
    assert "holds 2 of the 3" in r.stderr, r.stderr
    # once the record arrives, the same check passes
    body = ActionBatch("orders-drop", tuple(records[2:])).to_json()
    sent = call(s.ca_url, "POST", "/v1/actions", body, token=token)
    assert sent.status == 200, sent.body
    r = _crosscheck(s, "orders-drop", log_dir)
    assert r.returncode == 0, r.stdout + r.stderr
