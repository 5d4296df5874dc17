"""The auditor ledger end to end: real CLI exports tampered every way, database-enforced
immutability on PostgreSQL and SQLite, gap-free sequencing under concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.conftest import issue_args, run_cli, write_agent_csr
from wire.merkle import leaf_hash

MODEL, PROMPT = "a1" * 32, "c3" * 32


def ok(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> str:
    r = run_cli(*args, data_dir=data_dir, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def populate(data_dir: Path, env: dict[str, str] | None = None, agents: int = 2) -> None:
    ok("init", data_dir=data_dir, env=env)
    ok("scope", "add", "read_book", data_dir=data_dir, env=env)
    ok(
        "model",
        "add",
        MODEL,
        "--model-type",
        "m",
        "--environment",
        "prod",
        data_dir=data_dir,
        env=env,
    )
    for i in range(agents):
        name = f"agent{i}"
        ok(
            "agent",
            "register",
            name,
            "--officer",
            f"officer{i}@example.com",
            "--environment",
            "prod",
            "--model-type",
            "m",
            "--scope",
            "read_book",
            "--model-digest",
            MODEL,
            "--prompt-digest",
            PROMPT,
            data_dir=data_dir,
            env=env,
        )
        csr = data_dir.parent / f"{name}.csr"
        write_agent_csr(csr, name, MODEL, PROMPT)
        pem = ok(
            *issue_args(csr, name, MODEL, PROMPT, officer=f"officer{i}@example.com"),
            data_dir=data_dir,
            env=env,
        )
        from cryptography import x509

        serial = format(x509.load_pem_x509_certificate(pem.encode()).serial_number, "x")
        ok("revoke", serial, "--reason", "superseded", data_dir=data_dir, env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ledger")
    data = base / "data"
    populate(data)
    ok("ledger", "export", "--sign-checkpoint", "--out", str(base / "full.jsonl"), data_dir=data)
    ok("ledger", "export", "--agent", "agent1", "--out", str(base / "agent1.jsonl"), data_dir=data)
    ok("ledger", "export", "--format", "csv", "--out", str(base / "full.csv"), data_dir=data)
    ok(
        "ledger",
        "checkpoint",
        "--certificate",
        str(base / "audit.pem"),
        "--out",
        str(base / "cp.json"),
        data_dir=data,
    )
    return {
        "base": base,
        "data": data,
        "full": base / "full.jsonl",
        "agent1": base / "agent1.jsonl",
        "csv": base / "full.csv",
        "audit": base / "audit.pem",
        "cp": base / "cp.json",
    }


def verify(path: Path, audit: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("ledger", "verify", str(path), "--trust", str(audit), data_dir=path.parent)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def write(path: Path, content: list[str]) -> Path:
    path.write_text("".join(content))
    return path


def test_untouched_exports_verify(exported: dict[str, Path]) -> None:
    for key in ("full", "agent1", "csv"):
        r = verify(exported[key], exported["audit"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("OK:")
    assert "inclusion proofs" in verify(exported["agent1"], exported["audit"]).stdout
    entries = [json.loads(x) for x in lines(exported["agent1"])[1:]]
    assert entries and all(e["body"].get("agent") == "agent1" for e in entries)


def _failed_at(r: subprocess.CompletedProcess[str], seq: int | None, needle: str) -> None:
    assert r.returncode == 13, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    if seq is not None:
        assert f"(entry {seq})" in r.stderr, r.stderr


def test_changed_field_fails_at_that_entry(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    entry = json.loads(content[5])
    entry["actor"] = "someone-else"
    content[5] = json.dumps(entry) + "\n"
    _failed_at(
        verify(write(tmp_path / "x.jsonl", content), exported["audit"]), entry["seq"], "altered"
    )


def test_changed_field_with_recomputed_hash_breaks_the_signed_root(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    from ca.ledger.entries import LedgerEntry

    content = lines(exported["full"])
    entry = json.loads(content[4])
    entry["body"]["officer"] = "forged@example.com"
    entry["leaf_hash"] = LedgerEntry.from_json(entry).leaf_hash().hex()
    content[4] = json.dumps(entry) + "\n"
    _failed_at(
        verify(write(tmp_path / "x.jsonl", content), exported["audit"]),
        None,
        "does not match the signed root",
    )


def test_deleted_entry(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    del content[3]  # entry seq 2
    _failed_at(verify(write(tmp_path / "x.jsonl", content), exported["audit"]), 2, "missing")


def test_swapped_entries(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    content[3], content[4] = content[4], content[3]
    _failed_at(verify(write(tmp_path / "x.jsonl", content), exported["audit"]), 2, "found entry 3")


def test_inserted_entry(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    forged = json.loads(content[3])
    forged["body"] = {"note": "slipped in"}
    content.insert(4, json.dumps(forged) + "\n")
    _failed_at(
        verify(write(tmp_path / "x.jsonl", content), exported["audit"]),
        3,
        "out of order or repeated",
    )


def test_inserted_entry_with_renumbering(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    records = [json.loads(x) for x in content[1:]]
    forged = dict(records[2], body={"note": "slipped in"})
    records.insert(3, forged)
    for i, r in enumerate(records):
        r["seq"] = i
    out = [content[0]] + [json.dumps(r) + "\n" for r in records]
    _failed_at(verify(write(tmp_path / "x.jsonl", out), exported["audit"]), 3, "altered")


def test_truncated(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["full"])
    n = len(content) - 1
    _failed_at(
        verify(write(tmp_path / "x.jsonl", content[:-2]), exported["audit"]), n - 2, "truncated"
    )


def test_replaced_checkpoint(exported: dict[str, Path], tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from ca.ledger.entries import sign_checkpoint
    from wire.merkle import root_of

    content = lines(exported["full"])
    header = json.loads(content[0])
    # 1) same signer, but a root and size that are not the ledger's: signature fails
    header["checkpoint"]["tree_size"] -= 1
    bad = [json.dumps(header) + "\n", *content[1:-1]]
    _failed_at(
        verify(write(tmp_path / "a.jsonl", bad), exported["audit"]),
        None,
        "signature does not verify",
    )
    # 2) a consistent checkpoint re-signed by the forger's own key: not the trusted certificate
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forger")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    leaves = [bytes.fromhex(json.loads(x)["leaf_hash"]) for x in content[1:]]
    forged = sign_checkpoint(len(leaves), root_of(leaves), now, key, cert)
    header2 = json.loads(content[0])
    header2["checkpoint"] = forged.to_json()
    out = [json.dumps(header2) + "\n", *content[1:]]
    _failed_at(
        verify(write(tmp_path / "b.jsonl", out), exported["audit"]),
        None,
        "other than the trusted one",
    )


def test_filtered_export_tampering(exported: dict[str, Path], tmp_path: Path) -> None:
    content = lines(exported["agent1"])
    entry = json.loads(content[2])
    entry["proof"][0] = "00" * 32
    content[2] = json.dumps(entry) + "\n"
    _failed_at(
        verify(write(tmp_path / "f.jsonl", content), exported["audit"]),
        entry["seq"],
        "not included",
    )
    dropped = lines(exported["agent1"])
    del dropped[2]
    _failed_at(verify(write(tmp_path / "g.jsonl", dropped), exported["audit"]), None, "announces")


def test_consistency_between_checkpoints(exported: dict[str, Path], tmp_path: Path) -> None:
    old = exported["cp"]
    size = json.loads(old.read_text())["tree_size"]
    ok("token", "create", "agent0", data_dir=exported["data"])
    new = tmp_path / "new.json"
    ok(
        "ledger",
        "checkpoint",
        "--consistency-from",
        str(size),
        "--out",
        str(new),
        data_dir=exported["data"],
    )
    r = run_cli(
        "ledger",
        "consistency",
        str(old),
        str(new),
        "--trust",
        str(exported["audit"]),
        data_dir=tmp_path,
    )
    assert r.returncode == 0 and "consistent" in r.stdout, r.stderr
    doc = json.loads(new.read_text())
    doc["consistency"]["proof"][0] = "11" * 32
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    r = run_cli(
        "ledger",
        "consistency",
        str(old),
        str(tampered),
        "--trust",
        str(exported["audit"]),
        data_dir=tmp_path,
    )
    assert r.returncode != 0


# -- the database itself refuses changes --------------------------------------------------------
def _first_entry_engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def test_database_refuses_update_and_delete(tmp_path: Path, db_url: str) -> None:
    from ca.store.db import make_engine, upgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger_entries (seq, time, actor, event, body, leaf_hash) "
                    "VALUES (0, 't', 'a', 'e', '{}', :h)"
                ),
                {"h": leaf_hash(b"x")},
            )
        for statement in (
            "UPDATE ledger_entries SET actor = 'mallory'",
            "DELETE FROM ledger_entries",
        ):
            with pytest.raises(sa.exc.DBAPIError) as err, engine.begin() as conn:
                conn.execute(sa.text(statement))
            assert "append-only" in str(err.value)
        if engine.dialect.name == "postgresql":
            with pytest.raises(sa.exc.DBAPIError) as err, engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE ledger_entries"))
            assert "append-only" in str(err.value)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT actor FROM ledger_entries")).scalar() == "a"
    finally:
        engine.dispose()


# -- concurrency ---------------------------------------------------------------------------------
WORKER = r"""
import sys
from datetime import timedelta
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric import ec
from ca.requests import IssuanceRequest
from ca.config import Settings
from ca.extensions import Accountability, AgentExtensions, Authorization, Digest, Provenance
from ca.wiring import open_runtime
data, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rt = open_runtime(Settings(data_dir=Path(data), database_url=url))
ext = AgentExtensions(Provenance("m", Digest.sha256_hex("a1" * 32), Digest.sha256_hex("c3" * 32)),
                      Authorization(("read_book",)), Accountability("o@example.com", "prod"))
for i in range(n):
    k = ec.generate_private_key(ec.SECP256R1()).public_key()
    rt.authority.issue(IssuanceRequest(k, "concurrent", ext, timedelta(hours=1)), "worker")
rt.close()
"""


def test_concurrent_issuance_is_gap_free_and_verifies(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    env = {"AGENTCA_DATABASE_URL": pg_url}
    ok("init", data_dir=data, env=env)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(data), pg_url, "15"],
            cwd=Path(__file__).parents[2],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            seqs = [
                r[0] for r in conn.execute(sa.text("SELECT seq FROM ledger_entries ORDER BY seq"))
            ]
            events = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT event FROM ledger_entries WHERE event LIKE 'certificate.%'")
                )
            ]
    finally:
        engine.dispose()
    assert seqs == list(range(len(seqs)))
    assert events.count("certificate.issued") == 60 and events.count("certificate.reserved") == 60
    export = tmp_path / "export.jsonl"
    audit = tmp_path / "audit.pem"
    ok("ledger", "checkpoint", "--certificate", str(audit), data_dir=data, env=env)
    ok("ledger", "export", "--out", str(export), data_dir=data, env=env)
    r = verify(export, audit)
    assert r.returncode == 0, r.stderr


def test_scheduled_checkpoints_follow_the_ledger(tmp_path: Path) -> None:
    import os
    import time

    from tests.integration.conftest import AGENTCA

    data = tmp_path / "data"
    ok("init", data_dir=data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env["AGENTCA_DATA_DIR"] = str(data)
    proc = subprocess.Popen(
        [AGENTCA, "ledger", "checkpoint", "--every", "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.5)
        ok("scope", "add", "later_scope", data_dir=data)
        time.sleep(2.5)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    sizes = [int(line.split()[1]) for line in err.splitlines() if line.startswith("checkpoint:")]
    assert len(sizes) >= 2 and sizes == sorted(sizes) and sizes[-1] > sizes[0], err
