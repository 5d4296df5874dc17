"""The action ledger through the real ``agentca`` CLI on SQLite and PostgreSQL (decision
0056): register a gateway and its token, ship over HTTP with that token, export with every
filter, verify offline, fail verification on every tampering, cross-check the gateway's log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ca.api.app import create_app
from ca.config import Settings
from ca.wiring import open_runtime
from tests.integration.action_support import GatewayKey, batch, record, records
from tests.integration.conftest import run_cli
from tests.integration.http import call, serve_in_thread
from wire.actions import ActionRecord

VERIFY_FAILED = 13


@dataclass
class Shipped:
    data: Path
    env: dict[str, str]
    work: Path
    log: list[ActionRecord]
    key: GatewayKey
    trust: Path

    def cli(self, *args: str) -> Any:
        return run_cli(*args, data_dir=self.data, env=self.env)

    def ok(self, *args: str) -> str:
        r = self.cli(*args)
        assert r.returncode == 0, r.stderr
        return str(r.stdout)

    def export(self, name: str, *filters: str) -> Path:
        out = self.work / name
        self.ok("ledger", "export", "--actions", *filters, "--out", str(out), "--force")
        return out

    def verify(self, path: Path) -> Any:
        return self.cli("ledger", "verify", str(path), "--trust", str(self.trust), "--json")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shipped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shipped]:
    work = tmp_path_factory.mktemp(f"actions-cli-{request.param}")
    data = work / "data"
    env: dict[str, str] = {}
    if request.param == "postgresql":
        env["AGENTCA_DATABASE_URL"] = request.getfixturevalue("pg_module_url")
    r = run_cli("init", data_dir=data, env=env)
    assert r.returncode == 0, r.stderr
    key = GatewayKey()
    (work / "gw.pem").write_bytes(key.pem())
    added = run_cli(
        "gateway",
        "add",
        "gw1",
        "--public-key",
        str(work / "gw.pem"),
        "--json",
        data_dir=data,
        env=env,
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["key_id"] == key.key_id
    made = run_cli(
        "apitoken", "create", "--role", "gateway", "--name", "gw1", "--json", data_dir=data, env=env
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    log = records("gw1", 0, 30)
    log[7] = record("gw1", 7, agent="agent7")
    url = env.get("AGENTCA_DATABASE_URL")
    settings = Settings(data_dir=data, database_url=url) if url else Settings(data_dir=data)
    rt = open_runtime(settings)
    try:
        with serve_in_thread(create_app(settings, runtime_factory=lambda: rt)) as base:
            for start, end in ((0, 12), (12, 30)):
                cp = key.checkpoint("gw1", log[:end])
                reply = call(
                    base, "POST", "/v1/actions", batch("gw1", log[start:end], cp), token=token
                )
                assert reply.status == 200, reply.body
                assert reply.json["checkpoint"] == "consistent"
    finally:
        rt.close()
    chain = run_cli("chain", data_dir=data, env=env)
    assert chain.returncode == 0, chain.stderr
    (work / "chain.pem").write_text(chain.stdout)
    signed = run_cli("ledger", "checkpoint", "--actions", "--json", data_dir=data, env=env)
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["ledger"] == "agentca-actions"
    yield Shipped(data, env, work, log, key, work / "chain.pem")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("filters", "expect"),
    [
        ((), lambda r: True),
        (("--agent", "agent7"), lambda r: r.agent == "agent7"),
        (
            (
                "--since",
                "2026-12-07T09:10:00Z",
                "--until",
                "2026-12-07T09:20:00Z",
                "--outcome",
                "allow",
            ),
            lambda r: 10 <= r.seq < 20 and r.outcome == "allow",
        ),
    ],
)
def test_exports_hold_what_the_filters_say_and_verify_offline(
    shipped: Shipped, filters: tuple[str, ...], expect: Any
) -> None:
    path = shipped.export("export.jsonl", *filters)
    header, *lines = _lines(path)
    assert header["format"] == "agentca-action-export"
    assert header["checkpoint"]["ledger"] == "agentca-actions"
    wanted = [r.to_json() for r in shipped.log if expect(r)]
    assert [line["record"] for line in lines] == wanted and wanted
    assert all("proof" in line for line in lines) == bool(filters)
    r = shipped.verify(path)
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["ok"] and verdict["entries"] == len(wanted)
    # a filtered export says plainly that it does not prove completeness
    assert verdict["complete"] is not bool(filters) and verdict["filtered"] is bool(filters)
    assert sorted(verdict["filter"] or ()) == sorted(header["filter"] or ())
    text = shipped.cli("ledger", "verify", str(path), "--trust", str(shipped.trust))
    assert text.returncode == 0 and text.stdout.startswith("OK: ")
    caveat = "NOT that it holds every matching record: records may have been left out"
    assert (caveat in text.stdout) is bool(filters), text.stdout


def test_csv_export_verifies(shipped: Shipped) -> None:
    out = shipped.work / "export.csv"
    shipped.ok(
        "ledger",
        "export",
        "--actions",
        "--format",
        "csv",
        "--agent",
        "agent0",
        "--out",
        str(out),
        "--force",
    )
    assert out.read_text().startswith("#")
    r = shipped.verify(out)
    assert r.returncode == 0, r.stderr


def _fails(shipped: Shipped, path: Path, words: str) -> str:
    r = shipped.cli("ledger", "verify", str(path), "--trust", str(shipped.trust))
    assert r.returncode == VERIFY_FAILED, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("FAILED") and words in line, line
    return line


def test_tampering_fails_at_the_record(shipped: Shipped) -> None:
    head, *full = _lines(shipped.export("full.jsonl"))
    fhead, *filtered = _lines(shipped.export("agent0.jsonl", "--agent", "agent0"))
    work = shipped.work

    def fails(name: str, header: dict[str, Any], lines: list[dict[str, Any]], words: str) -> None:
        _fails(shipped, _write(work / name, [header, *lines]), words)

    changed = [dict(line) for line in full]
    changed[4] = {**changed[4], "record": {**changed[4]["record"], "outcome": "allow"}}
    changed[4]["record"].pop("check", None)
    fails("t1.jsonl", head, changed, "record 4 was altered")
    fails("t2.jsonl", head, full[:3] + full[4:], "record 3 is missing")
    fails("t3.jsonl", head, [*full[:3], full[4], full[3], *full[5:]], "record 3 is missing")
    fails("t3b.jsonl", head, full[:-1], "truncated")
    no_proof = [dict(line) for line in filtered]
    no_proof[2].pop("proof")
    fails("t4.jsonl", fhead, no_proof, f"record {no_proof[2]['seq']} is not included")
    moved = [dict(line) for line in filtered]
    moved[1] = {**moved[1], "seq": moved[1]["seq"] + 1}
    fails("t5.jsonl", fhead, moved, "is not included")
    fails("t6.jsonl", fhead, filtered[:2] + filtered[3:], "announces")
    liar = {**fhead, "filter": {"agent": "agent1"}}  # agent0's records under agent1's name
    fails("t6b.jsonl", liar, filtered, f"record {filtered[0]['seq']} does not match the export's")
    fails("t6c.jsonl", {**fhead, "filter": False, "count": 0}, [], "filter is malformed")
    forged = {**head, "checkpoint": {**head["checkpoint"], "tree_size": 29}}
    fails("t7.jsonl", forged, full[:29], "signature")


def test_an_issuance_checkpoint_never_verifies_an_action_export(shipped: Shipped) -> None:
    head, *full = _lines(shipped.export("full2.jsonl"))
    issuance = json.loads(shipped.ok("ledger", "checkpoint"))
    swapped = [{**head, "checkpoint": issuance}, *full]
    _fails(shipped, _write(shipped.work / "t8.jsonl", swapped), "ledger 'agentca'")
    relabelled = [{**head, "checkpoint": {**issuance, "ledger": "agentca-actions"}}, *full]
    _fails(shipped, _write(shipped.work / "t9.jsonl", relabelled), "signature")


def test_crosscheck_finds_every_checkpointed_record(shipped: Shipped) -> None:
    ok = json.loads(shipped.ok("ledger", "crosscheck", "--gateway", "gw1", "--json"))
    assert ok["ok"] and ok["records_held"] == 30
    assert [c["status"] for c in ok["checkpoints"]] == ["consistent", "consistent"]
    logdir = shipped.work / "gwlog"
    logdir.mkdir(exist_ok=True)
    cps = [shipped.key.checkpoint("gw1", shipped.log[:n]).to_json() for n in (5, 17, 30)]
    _write(logdir / "checkpoints.log", cps)
    r = shipped.cli("ledger", "crosscheck", "--gateway", "gw1", "--gateway-log", str(logdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: all 30 checkpointed records")
    # the gateway logged record 30 but never delivered it
    unshipped = [*shipped.log, record("gw1", 30)]
    _write(logdir / "checkpoints.log", [*cps, shipped.key.checkpoint("gw1", unshipped).to_json()])
    r = shipped.cli(
        "ledger", "crosscheck", "--gateway", "gw1", "--gateway-log", str(logdir), "--json"
    )
    assert r.returncode == VERIFY_FAILED
    verdict = json.loads(r.stdout)
    assert not verdict["ok"] and verdict["checkpoints"][-1]["status"] == "missing"
    assert "holds 30 of the 31" in r.stderr
    # the gateway's log holds a different record 9 than the CA received
    other = list(shipped.log)
    other[9] = record("gw1", 9, agent="ghost")
    _write(logdir / "checkpoints.jsonl", [shipped.key.checkpoint("gw1", other).to_json()])
    r = shipped.cli(
        "ledger",
        "crosscheck",
        "--gateway",
        "gw1",
        "--gateway-log",
        str(logdir / "checkpoints.jsonl"),
    )
    assert r.returncode == VERIFY_FAILED and "inconsistent" in r.stderr
    # a checkpoint not signed by the registered key
    _write(logdir / "checkpoints.log", [GatewayKey().checkpoint("gw1", shipped.log).to_json()])
    r = shipped.cli("ledger", "crosscheck", "--gateway", "gw1", "--gateway-log", str(logdir))
    assert r.returncode == VERIFY_FAILED and "bad-signature" in r.stderr


def test_crosscheck_reads_a_real_gateway_log_directory(shipped: Shipped) -> None:
    """Review: ``--gateway-log DIR`` read ``checkpoints.jsonl``, but the gateway writes
    ``checkpoints.log``. A directory made by the real ``gateway.action_log.ActionLog`` (real
    verifier decisions, checkpointed, closed), its records shipped to the CA over HTTP."""
    from cryptography.hazmat.primitives import serialization

    from gateway import StaticInventory, StatusChecker, Verifier
    from gateway.action_log import CHECKPOINTS, RECORDS, ActionLog, keygen, load_private_key
    from tests.support.gateway_pki import Clock, Pki, view

    work = shipped.work / "real-gateway"
    work.mkdir()
    keygen(work / "key.pem")
    public = load_private_key(work / "key.pem").public_key()
    (work / "pub.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    shipped.ok("gateway", "add", "gw-real", "--public-key", str(work / "pub.pem"))
    made = json.loads(
        shipped.ok("apitoken", "create", "--role", "gateway", "--name", "gw-real", "--json")
    )
    logdir = work / "actions"
    pki, clock = Pki.create(), Clock()
    with ActionLog(logdir, "gw-real", work / "key.pem", checkpoint_seconds=3600) as actions:
        verifier = Verifier(
            [pki.root],
            StaticInventory([]),
            StatusChecker(refresh=False, clock=clock, fetch=False),
            clock=clock,
            audience="http://gw.local",
            trust_domain="agentca.local",
            actions=actions,
        )
        for size in (3, 5):  # requests without credentials: real denials, then a checkpoint
            while actions.size < size:
                req = view("POST", "http://gw.local/orders", {"X-Request-ID": f"r-{size}"})
                decision = verifier.evaluate(req, "submit_limit_order")
                assert not decision.allowed
                verifier.log(decision, req, decision.http_status, "/orders")
                assert actions.flush()
            assert actions.checkpoint_now() is not None
    assert sorted(p.name for p in logdir.iterdir()) >= sorted([CHECKPOINTS, RECORDS])
    lines = (logdir / CHECKPOINTS).read_text().splitlines()
    assert [json.loads(line)["tree_size"] for line in lines][-2:] == [3, 5]
    logged = [
        ActionRecord.from_json(json.loads(line))
        for line in (logdir / RECORDS).read_text().splitlines()
    ]
    assert len(logged) == 5

    def crosscheck(*args: str) -> Any:
        return shipped.cli("ledger", "crosscheck", "--gateway", "gw-real", *args, "--json")

    url = shipped.env.get("AGENTCA_DATABASE_URL")
    data = shipped.data
    settings = Settings(data_dir=data, database_url=url) if url else Settings(data_dir=data)
    rt = open_runtime(settings)
    try:
        with serve_in_thread(create_app(settings, runtime_factory=lambda: rt)) as base:
            sent = call(
                base, "POST", "/v1/actions", batch("gw-real", logged[:3]), token=made["token"]
            )
            assert sent.status == 200, sent.body
            # the gateway's checkpoint of 5 covers records the CA does not hold yet
            r = crosscheck("--gateway-log", str(logdir))
            assert r.returncode == VERIFY_FAILED, r.stderr
            assert [c["status"] for c in json.loads(r.stdout)["checkpoints"]][-2:] == [
                "consistent",
                "missing",
            ]
            sent = call(
                base, "POST", "/v1/actions", batch("gw-real", logged[3:]), token=made["token"]
            )
            assert sent.status == 200, sent.body
    finally:
        rt.close()
    for given in (logdir, logdir / CHECKPOINTS):  # the directory, or the file itself
        r = crosscheck("--gateway-log", str(given))
        assert r.returncode == 0, r.stderr
        verdict = json.loads(r.stdout)
        assert verdict["ok"] and verdict["records_held"] == 5
        assert {c["status"] for c in verdict["checkpoints"]} == {"consistent"}
    # a directory that is no gateway log is named as such
    r = shipped.cli("ledger", "crosscheck", "--gateway", "gw-real", "--gateway-log", str(work))
    assert r.returncode == 2 and "holds no checkpoints.log" in r.stderr


def test_gateway_commands_and_their_refusals(shipped: Shipped) -> None:
    listed = [json.loads(line) for line in shipped.ok("gateway", "list", "--json").splitlines()]
    assert [(g["name"], g["enabled"], g["next_seq"]) for g in listed if g["name"] == "gw1"] == [
        ("gw1", True, 30)
    ]
    again = shipped.cli(
        "gateway", "add", "gw1", "--public-key", str(shipped.work / "gw.pem"), "--json"
    )
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    (shipped.work / "other.pem").write_bytes(GatewayKey().pem())
    other = shipped.cli("gateway", "add", "gw1", "--public-key", str(shipped.work / "other.pem"))
    assert other.returncode == 7 and "another key" in other.stderr
    (shipped.work / "rsa.pem").write_text("not a key")
    bad = shipped.cli("gateway", "add", "gw2", "--public-key", str(shipped.work / "rsa.pem"))
    assert bad.returncode == 2 and "not a public key" in bad.stderr
    orphan = shipped.cli("apitoken", "create", "--role", "gateway", "--name", "nobody")
    assert orphan.returncode == 6 and "gateway add nobody" in orphan.stderr
    for args in (
        ("gateway", "--help"),
        ("gateway", "add", "--help"),
        ("gateway", "list", "--help"),
        ("gateway", "disable", "--help"),
        ("ledger", "crosscheck", "--help"),
        ("ledger", "export", "--help"),
    ):
        assert "--json" in shipped.ok(*args) or args == ("gateway", "--help")
    assert shipped.cli("ledger", "export", "--route", "/x").returncode == 2


def test_the_scheduler_signs_the_action_ledger_too(shipped: Shipped) -> None:
    import os
    import subprocess
    import time

    from tests.integration.conftest import AGENTCA

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update({"AGENTCA_DATA_DIR": str(shipped.data), **shipped.env})
    proc = subprocess.Popen(
        [AGENTCA, "ledger", "checkpoint", "--every", "1", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    ledgers = {json.loads(line)["ledger"]: json.loads(line) for line in out.splitlines()}
    assert set(ledgers) == {"agentca", "agentca-actions"}, out
    listed = [json.loads(line) for line in shipped.ok("gateway", "list", "--json").splitlines()]
    held = sum(g["next_seq"] for g in listed)  # gw1's 30, and any other test's gateways
    assert held >= 30 and ledgers["agentca-actions"]["tree_size"] == held
