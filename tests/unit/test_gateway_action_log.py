"""The gateway's action log (decision 0055): records built from real verifier decisions,
appended crash-safely, recovered, checkpointed and verified offline; every edit is caught."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.staple import Staple
from gateway import StaticInventory, StatusChecker, Verifier
from gateway.action_log import (
    CHECKPOINTS,
    CURSOR,
    HEAD,
    RECORDS,
    ActionLog,
    ActionLogError,
    keygen,
    load_private_key,
    main,
    scan,
)
from gateway.action_record import UNMATCHED, request_id
from gateway.httpsig import RequestView
from gateway.verifier import Decision
from tests.support.gateway_pki import T0, Clock, Pki, make_agent, model_digest, view
from wire.actions import ActionRecord, GatewayCheckpoint
from wire.merkle import leaf_hash, verify_inclusion

GATEWAY = "orders-1"
SCOPE = "submit_limit_order"
BODY = b'{"side":"buy","price":"101.5","qty":"2"}'
URL = "http://gw.local/orders?venue=x"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway-key.pem"
    keygen(path)
    return path


def public_pem(key_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pub.pem"
    out.write_bytes(
        load_private_key(key_file)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return out


def open_log(directory: Path, key_file: Path, **kw: Any) -> ActionLog:
    kw.setdefault("checkpoint_seconds", 3600.0)
    kw.setdefault("checkpoint_records", 1000)
    return ActionLog(directory, GATEWAY, key_file, **kw)


class Env:
    """A verifier with an action log, and a real agent signing requests for it."""

    def __init__(self, pki: Pki, tmp: Path, actions: ActionLog) -> None:
        self.pki, self.clock = pki, Clock()
        self.agent = make_agent(tmp / "agent", pki, self.clock)
        status = StatusChecker(refresh=False, clock=self.clock, fetch=False)
        self.actions = actions
        self.verifier = Verifier(
            [pki.root],
            StaticInventory([model_digest().hex()]),
            status,
            clock=self.clock,
            audience="http://gw.local",
            trust_domain="agentca.local",
            actions=actions,
        )

    def request(self, headers: dict[str, str] | None = None, body: bytes = BODY) -> RequestView:
        cert = self.agent.credential.certificate
        der = self.pki.ocsp_response(cert, this_update=self.clock())
        self.agent.staple = Staple(der, "good", T0, None, self.clock())
        send = {"Content-Type": "application/json", **(headers or {})}
        signed = self.agent.sign("POST", URL, send, body, auto_staple=False, auto_renew=False)
        return view("POST", URL, {**send, **signed.headers}, body)

    def decide(self, req: RequestView, scope: str | None = SCOPE, status: int = 201) -> Decision:
        d = self.verifier.evaluate(req, scope)
        self.verifier.log(d, req, status if d.allowed else d.http_status, "/orders")
        return d


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / RECORDS).read_bytes().splitlines()]


def test_allow_and_deny_become_records_with_their_members_and_no_body(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    with open_log(tmp_path / "log", key_file) as actions:
        env = Env(pki, tmp_path, actions)
        allowed = env.decide(env.request({"X-Request-ID": "req-42"}))
        assert allowed.allowed
        denied = env.decide(env.request(), scope="halt_trading")
        assert denied.denial is not None and denied.denial.check.value == "scope-denied"
        assert actions.flush()
    text = (tmp_path / "log" / RECORDS).read_bytes()
    assert b"101.5" not in text and b"venue" not in text  # no body, no query
    allow, deny = records(tmp_path / "log")
    ident = allowed.identity
    assert ident is not None
    ski = pki.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert allow["seq"] == 0 and deny["seq"] == 1
    assert allow["gateway"] == GATEWAY and allow["request_id"] == "req-42"
    assert allow["outcome"] == "allow" and "check" not in allow and allow["http_status"] == 201
    assert allow["method"] == "POST" and allow["route"] == "/orders"
    assert allow["scope"] == SCOPE and allow["profile"] == "agentca"
    assert allow["agent"] == ident.name and allow["spiffe_id"] == ident.spiffe_id
    assert allow["serial"] == ident.serial and allow["officer"] == ident.officer
    assert allow["issuer"] == ski.hex()
    assert allow["environment"] == "production" and allow["model_type"] == ident.model_type
    assert allow["model_digest"] == ident.model_digest
    assert allow["prompt_digest"] == ident.prompt_digest
    assert allow["content_digest"].startswith("sha-256=:")
    assert "subject" not in allow and "attested_by" not in allow
    assert deny["outcome"] == "deny" and deny["check"] == "scope-denied"
    assert deny["http_status"] == 403 and "halt_trading" in deny["detail"]
    assert deny["scope"] == "halt_trading"
    assert len(deny["request_id"]) == 32  # generated: the request carried none
    for raw in (allow, deny):
        assert ActionRecord.from_json(raw).to_json() == raw


def test_a_signed_delegated_subject_is_recorded_an_unsigned_one_is_not(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    with open_log(tmp_path / "log", key_file) as actions:
        env = Env(pki, tmp_path, actions)
        signed = env.request({"Agentca-Subject": "user:alice@enterprise.io"})
        assert env.decide(signed).allowed
        plain = env.request()
        forged = RequestView(
            plain.method,
            plain.path,
            plain.query,
            {**plain.headers, "agentca-subject": "user:mallory"},
            plain.body,
            plain.authority,
            plain.scheme,
        )
        assert env.decide(forged).allowed  # not covered: verified, but not a subject
        assert actions.flush()
    first, second = records(tmp_path / "log")
    assert first["subject"] == "user:alice@enterprise.io"
    assert "subject" not in second


def test_request_ids_are_taken_only_when_well_formed() -> None:
    assert request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in ("", " x", "a" * 129, "x\ny", "é", "-starts-with-dash"):
        made = request_id(bad)
        assert made != bad and len(made) == 32 and int(made, 16) >= 0
    assert request_id(None) != request_id(None)


def test_unmatched_routes_and_oversized_values_are_bounded(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    with open_log(tmp_path / "log", key_file) as actions:
        env = Env(pki, tmp_path, actions)
        req = RequestView("X" * 200, "/orders/12345", "", {"content-digest": "x" * 5000}, b"")
        d = env.verifier.evaluate(req, None)
        env.verifier.log(d, req, d.http_status)  # no route template
        assert actions.flush()
    (rec,) = records(tmp_path / "log")
    assert rec["route"] == UNMATCHED and "12345" not in json.dumps(rec)
    assert len(rec["method"]) == 32 and rec["method"].endswith("...")
    assert "content_digest" not in rec  # too long to keep whole: not kept at all
    assert rec["check"] == "credentials-missing" and rec["http_status"] == 401


def fill(actions: ActionLog, env: Env, n: int, each: bool = False) -> None:
    for _ in range(n):
        env.decide(env.request())
        if each:
            assert actions.flush()
    assert actions.flush()


def test_reopen_continues_the_sequence_and_checkpoints_verify(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file, checkpoint_records=3) as actions:
        env = Env(pki, tmp_path, actions)
        fill(actions, env, 7, each=True)
        assert actions.size == 7
    with open_log(directory, key_file, checkpoint_records=3) as actions:
        env.verifier.actions = actions
        fill(actions, env, 2)
        assert actions.size == 9
    assert [r["seq"] for r in records(directory)] == list(range(9))
    found = scan(directory, GATEWAY, [load_private_key(key_file).public_key()], require_keys=True)
    sizes = [cp.tree_size for cp in found.checkpoints]
    assert sizes == [3, 6, 7, 9]  # every 3 records, and one at each close
    assert found.size == 9 and found.unverified == 0


def test_a_torn_final_record_is_cut_and_a_complete_one_kept(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file, checkpoint_records=2) as actions:
        fill(actions, Env(pki, tmp_path, actions), 3, each=True)  # checkpoints of 2 and 3
    path = directory / RECORDS
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    path.write_bytes(whole + lines[0][:40])  # a crash in mid-write of record 3
    with open_log(directory, key_file) as actions:
        assert actions.size == 3
    assert path.read_bytes() == whole
    path.write_bytes(b"".join(lines[:2]) + lines[2][:-1])  # record 2 without its newline
    # (a crash before the checkpoint of 3 records was written: the files as they were then)
    cps = (directory / CHECKPOINTS).read_bytes().splitlines(keepends=True)
    (directory / CHECKPOINTS).write_bytes(cps[0])
    first = json.loads(cps[0])
    head = {"root_hash": first["root_hash"], "tree_size": first["tree_size"]}
    (directory / HEAD).write_text(json.dumps(head))
    with open_log(directory, key_file) as actions:
        assert actions.size == 3
    assert path.read_bytes() == whole


def edited(directory: Path, key_file: Path, tmp_path: Path) -> str:
    with pytest.raises(ActionLogError) as opening:
        open_log(directory, key_file).close()
    code = main(["verify", str(directory), "--public-key", str(public_pem(key_file, tmp_path))])
    assert code == 1
    return str(opening.value)


@pytest.mark.parametrize("edit", ["change", "delete", "swap", "noncanonical", "checkpoint"])
def test_an_edited_log_is_refused_naming_the_problem(
    pki: Pki, tmp_path: Path, key_file: Path, edit: str
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file, checkpoint_records=2) as actions:
        fill(actions, Env(pki, tmp_path, actions), 5)
    path = directory / RECORDS
    lines = path.read_bytes().splitlines(keepends=True)
    if edit == "change":  # still canonical, still seq 1: only the checkpoint can tell
        rec = json.loads(lines[1])
        rec["http_status"] = 200
        lines[1] = ActionRecord.from_json(rec).leaf_bytes() + b"\n"
        expected = "does not match records"
    elif edit == "delete":
        del lines[1]
        expected = "line 2 holds record seq 2"
    elif edit == "swap":
        lines[1], lines[2] = lines[2], lines[1]
        expected = "line 2 holds record seq 2"
    elif edit == "noncanonical":
        lines[3] = lines[3].replace(b'{"agent"', b'{ "agent"')
        expected = "canonical"
    else:
        cps = (directory / CHECKPOINTS).read_bytes().splitlines(keepends=True)
        cp = json.loads(cps[0])
        cp["timestamp"] = "2000-01-01T00:00:00.000000Z"  # re-dated: the signature says no
        cps[0] = json.dumps(cp, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        (directory / CHECKPOINTS).write_bytes(b"".join(cps))
        expected = "signature"
    path.write_bytes(b"".join(lines))
    assert expected in edited(directory, key_file, tmp_path)


def test_removed_checkpointed_records_are_refused(pki: Pki, tmp_path: Path, key_file: Path) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file) as actions:
        fill(actions, Env(pki, tmp_path, actions), 4)
    lines = (directory / RECORDS).read_bytes().splitlines(keepends=True)
    (directory / RECORDS).write_bytes(b"".join(lines[:3]))  # the last one dropped, whole
    assert "records were removed" in edited(directory, key_file, tmp_path)


def test_verify_needs_the_right_key_and_proves_inclusion(
    pki: Pki, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file) as actions:
        fill(actions, Env(pki, tmp_path, actions), 6)
    other = tmp_path / "other.pem"
    other.write_bytes(keygen(tmp_path / "other-key.pem", "ed25519"))
    assert main(["verify", str(directory), "--public-key", str(other)]) == 1
    assert "was not given" in capsys.readouterr().err
    pub = public_pem(key_file, tmp_path)
    assert main(["verify", str(directory), "--public-key", str(pub), "--proof", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["records"] == 6 and report["checkpointed_records"] == 6
    (proof,) = report["proofs"]
    line = (directory / RECORDS).read_bytes().splitlines()[4]
    assert base64.b64decode(proof["leaf_hash"]) == leaf_hash(line)
    cp = json.loads((directory / CHECKPOINTS).read_bytes().splitlines()[-1])
    assert proof["root_hash"] == cp["root_hash"]
    assert verify_inclusion(
        leaf_hash(line),
        4,
        6,
        [base64.b64decode(p) for p in proof["proof"]],
        base64.b64decode(cp["root_hash"]),
    )


def test_ed25519_checkpoints(pki: Pki, tmp_path: Path) -> None:
    key_file = tmp_path / "ed.pem"
    pub_pem = keygen(key_file, "ed25519")
    assert b"BEGIN PUBLIC KEY" in pub_pem
    assert isinstance(load_private_key(key_file), ed25519.Ed25519PrivateKey)
    with ActionLog(tmp_path / "log", GATEWAY, key_file) as actions:
        fill(actions, Env(pki, tmp_path, actions), 2)
        cp = actions.checkpoint_now()
    assert isinstance(cp, GatewayCheckpoint) and cp.tree_size == 2
    (tmp_path / "pub.pem").write_bytes(pub_pem)
    assert main(["verify", str(tmp_path / "log"), "--public-key", str(tmp_path / "pub.pem")]) == 0


def test_keygen_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.pem"
    assert main(["keygen", "--out", str(out)]) == 0
    assert "BEGIN PUBLIC KEY" in capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o600
    before = out.read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2
    assert out.read_bytes() == before


def test_full_spool_fails_closed_and_reopens_once_shipped(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file, max_unshipped_records=3) as actions:
        env = Env(pki, tmp_path, actions)
        fill(actions, env, 3)
        assert actions.refusing is not None and "not yet acknowledged" in actions.refusing
        d = env.decide(env.request())
        assert d.denial is not None and d.denial.check.value == "action-log-unavailable"
        assert d.http_status == 503
        from gateway.problems import Check, Denied

        refused = Decision(False, denial=Denied(Check.PATH, "dot segment"))
        env.verifier.log(refused, RequestView("GET", "/a/../b", "", {}), 400)  # by a shell
        assert actions.flush() and actions.size == 3 and actions.dropped == 2
        actions.mark_shipped(2)
        assert actions.refusing is None
        assert env.decide(env.request()).allowed
        assert actions.flush() and actions.size == 4
    assert json.loads((directory / CURSOR).read_bytes()) == {"next_seq": 2}
    with open_log(directory, key_file, max_unshipped_records=3) as actions:
        assert actions.shipped == 2 and actions.refusing is None


def test_one_process_per_log_and_one_gateway_per_directory(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file) as actions:
        with pytest.raises(ActionLogError, match="open in another process"):
            open_log(directory, key_file)
        fill(actions, Env(pki, tmp_path, actions), 1)
    with pytest.raises(ActionLogError, match="belongs to gateway"):
        ActionLog(directory, "orders-2", key_file).close()
    with pytest.raises(ActionLogError, match="gateway identifier"):
        ActionLog(directory, "bad id", key_file)


def test_a_key_of_another_kind_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "p384.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(ActionLogError, match="P-256 or Ed25519"):
        ActionLog(tmp_path / "log", GATEWAY, path)


def test_shipping_reads_back_the_bytes_on_disk(pki: Pki, tmp_path: Path, key_file: Path) -> None:
    with open_log(tmp_path / "log", key_file) as actions:
        fill(actions, Env(pki, tmp_path, actions), 600)  # more than one index step
        lines = (tmp_path / "log" / RECORDS).read_bytes().splitlines()
        assert actions.read(0, 1000) == lines
        assert actions.read(300, 5) == lines[300:305]
        assert actions.read(599, 10) == lines[599:]
        assert actions.read(600, 10) == []
        assert len(actions.read(10, 1000, max_bytes=len(lines[10]) * 3 + 3)) == 3


def test_a_log_inherited_across_fork_refuses_in_the_child(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    with open_log(tmp_path / "log", key_file) as actions:
        env = Env(pki, tmp_path, actions)
        req = env.request()
        pid = os.fork()
        if pid == 0:  # the child: the writer thread and the lock are the parent's
            d = env.verifier.evaluate(req, SCOPE)
            ok = d.denial is not None and d.denial.check.value == "action-log-unavailable"
            os._exit(0 if ok and actions.refusing and "forked" in actions.refusing else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert actions.refusing is None and env.decide(req).allowed


def test_the_fast_record_bytes_are_the_codecs(pki: Pki, tmp_path: Path, key_file: Path) -> None:
    from gateway.action_record import build_record, record_bytes
    from gateway.problems import Check, Denied
    from gateway.verifier import _LogLine

    with open_log(tmp_path / "log", key_file) as actions:
        env = Env(pki, tmp_path, actions)
        allowed = env.request({"Agentca-Subject": "user:alice", "X-Request-ID": "r-1"})
        d = env.verifier.evaluate(allowed, SCOPE)
        lines = [
            _LogLine(d, allowed, 1_800_000_000.123456, 201, "/orders"),
            _LogLine(d, allowed, 1_800_000_000.0, None, None),
            _LogLine(d, allowed, 1_800_000_000.0, 999, "/x" * 600),
            _LogLine(
                Decision(False, denial=Denied(Check.ERROR, "é" * 2000), scope="s"),
                RequestView("GET", "/", "", {"x-request-id": "r-2"}),
                0.5,
                500,
                "/",
            ),
        ]
        for seq, line in enumerate(lines):
            assert record_bytes(line, GATEWAY, seq) == build_record(line, GATEWAY, seq).leaf_bytes()


DISK_FULL = """
import json, os, resource, signal, sys
from pathlib import Path
from gateway.action_log import ActionLog, RECORDS, keygen
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, _LogLine

base = Path(sys.argv[1])
keygen(base / "k.pem")
def line(n):
    d = Decision(False, denial=Denied(Check.SCOPE, "no"), scope="s")
    return _LogLine(d, RequestView("GET", "/", "", {"x-request-id": f"r{n}"}), 1e9 + n, 403, "/")
out = {}
with ActionLog(base / "log", "disk-1", base / "k.pem") as actions:
    for n in range(5):
        actions.append(line(n))
    assert actions.flush()
    size = (base / "log" / RECORDS).stat().st_size
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # the disk is full
    for n in range(5, 10):
        actions.append(line(n))
    out["flushed_while_full"] = actions.flush(1.0)
    out["refusing"] = actions.refusing
    out["size_while_full"] = (base / "log" / RECORDS).stat().st_size == size
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    out["flushed_after"] = actions.flush(5.0)
    out["refusing_after"] = actions.refusing
with ActionLog(base / "log", "disk-1", base / "k.pem") as actions:
    out["reopened_size"] = actions.size
print(json.dumps(out))
"""


def test_a_full_disk_refuses_requests_and_loses_no_queued_decision(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["flushed_while_full"] is False and out["size_while_full"] is True
    assert "cannot be written" in out["refusing"]
    assert out["flushed_after"] is True and out["refusing_after"] is None
    assert out["reopened_size"] == 10


def test_removed_checkpoints_are_refused_not_signed_over(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    """The review's tamper: edit a record and remove the checkpoints that cover it. The log
    must not open (else the gateway signs the edit at its next checkpoint)."""
    directory = tmp_path / "log"
    with open_log(directory, key_file, checkpoint_records=2) as actions:
        fill(actions, Env(pki, tmp_path, actions), 4, each=True)
    path = directory / RECORDS
    lines = path.read_bytes().splitlines(keepends=True)
    original = (directory / CHECKPOINTS).read_bytes()
    record = json.loads(lines[3])
    record["agent"] = "someone-else"
    lines[3] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    (directory / CHECKPOINTS).unlink()
    with pytest.raises(ActionLogError, match="holds no such checkpoint"):
        open_log(directory, key_file)
    (directory / CHECKPOINTS).write_bytes(original.splitlines(keepends=True)[0])  # the first
    with pytest.raises(ActionLogError, match="holds no such checkpoint"):
        open_log(directory, key_file)
    (directory / HEAD).unlink()
    (directory / CHECKPOINTS).unlink()
    with pytest.raises(ActionLogError, match="no head file"):
        open_log(directory, key_file)
    (directory / HEAD).write_text('{"root_hash":"","tree_size":0}')  # a head of nothing
    with pytest.raises(ActionLogError, match="4 records but no checkpoint"):
        open_log(directory, key_file)
    assert path.read_bytes() == b"".join(lines)  # refused without changing anything


def test_checkpoints_of_another_key_are_refused_unless_a_previous_key(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    directory = tmp_path / "log"
    with open_log(directory, key_file) as actions:
        fill(actions, Env(pki, tmp_path, actions), 2)
    new_key = tmp_path / "new-key.pem"
    keygen(new_key, "ed25519")
    with pytest.raises(ActionLogError, match="which was not given"):
        open_log(directory, new_key)
    old = load_private_key(key_file).public_key()
    with open_log(directory, new_key, previous_keys=[old]) as actions:  # a rotated key
        fill(actions, Env(pki, tmp_path, actions), 1)
    with pytest.raises(ActionLogError, match="which was not given"):
        open_log(directory, new_key)
    with open_log(directory, new_key, previous_keys=[old]) as actions:
        assert actions.size == 3 and actions.latest_checkpoint() is not None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused(tmp_path: Path, key_file: Path, mode: int) -> None:
    key_file.chmod(mode)
    with pytest.raises(ActionLogError, match=f"mode {mode:04o}.*chmod 600"):
        ActionLog(tmp_path / "log", GATEWAY, key_file)
    key_file.chmod(0o400)
    ActionLog(tmp_path / "log", GATEWAY, key_file).close()


def test_a_flood_without_credentials_cannot_fill_the_spool_for_agents(
    pki: Pki, tmp_path: Path, key_file: Path
) -> None:
    """The review's flood: the CA is away (nothing ships), clients without credentials send
    far more requests than the spool holds, and an agent keeps working throughout."""
    directory = tmp_path / "log"
    with open_log(directory, key_file, max_unshipped_records=200) as actions:
        env = Env(pki, tmp_path, actions)
        anonymous = view("POST", URL, {"Content-Type": "application/json"}, BODY)
        served = 0
        for _round in range(20):
            for _ in range(100):
                d = env.verifier.evaluate(anonymous, SCOPE)
                assert d.denial is not None and d.denial.check.value == "credentials-missing"
                env.verifier.log(d, anonymous, d.http_status, "/orders")
            assert actions.flush()
            assert actions.refusing is None, actions.refusing
            assert env.decide(env.request()).allowed  # the agent is served ...
            served += 1
        assert actions.flush()
        assert actions.summarised == 0  # (counted, the summary record not yet due)
        assert actions.checkpoint_now() is not None  # a flush point writes the summary
        assert actions.summarised == 2000 - actions.max_anonymous
    found = records(directory)
    agents = [r for r in found if r.get("agent")]
    assert len(agents) == served == 20  # ... and recorded, every time
    singles = [r for r in found if r.get("check") == "credentials-missing"]
    assert len(singles) == actions.max_anonymous == 50  # a quarter of the bound
    (summary,) = [r for r in found if r.get("check") == "unauthenticated-summary"]
    assert summary["outcome"] == "deny" and "credentials-missing 1950" in summary["detail"]
    with open_log(directory, key_file, max_unshipped_records=200) as actions:
        assert len(actions._anonymous) == 51  # the budget's use is counted again on open
        actions.mark_shipped(actions.size)
        assert not actions._anonymous
