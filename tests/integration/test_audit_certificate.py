"""The audit certificate end to end with the real CLI, SoftHSM2 and SQLite: printed from the
database alone, rotated in the HSM, and ledgers signed before and after a rotation verified
offline against the CA root; each refusal with its reason (decision 0027)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.ledger.entries import sign_checkpoint
from ca.ledger.store import ExportFilter
from ca.ledger.trust import is_ca
from ca.wiring import Runtime
from tests.integration.conftest import run_cli
from tests.unit.test_ledger_trust import Hierarchy

NO_HSM = {"AGENTCA_PKCS11_MODULE": "/nonexistent/libsofthsm2.so"}


def ok(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> str:
    r = run_cli(*args, data_dir=data_dir, env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def tree_state(*roots: Path) -> dict[str, float]:
    """Every file under ``roots`` with its modification time."""
    out: dict[str, float] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath, f)
                out[str(p)] = p.stat().st_mtime
    return out


def pem_certs(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def openssl_serial(cert: x509.Certificate) -> str:
    digits = format(cert.serial_number, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA whose ledger holds checkpoints signed before and after an audit rotation, and
    the auditor's copies of everything (outside the data directory)."""
    base = tmp_path_factory.mktemp("audit")
    data = base / "data"
    auditor = base / "auditor"
    auditor.mkdir()
    ok("init", data_dir=data)
    ok("scope", "add", "read_book", data_dir=data)
    before_first = run_cli("audit", "certificate", data_dir=data)
    ok("ledger", "checkpoint", "--out", str(auditor / "cp-old.json"), data_dir=data)
    ok("audit", "certificate", "--out", str(auditor / "audit-old.pem"), data_dir=data)
    ok("ledger", "export", "--out", str(auditor / "old.jsonl"), data_dir=data)
    old_size = json.loads((auditor / "cp-old.json").read_text())["tree_size"]
    rotated = ok("audit", "rotate-certificate", "--yes", "--json", data_dir=data)
    (auditor / "rotated.json").write_text(rotated)
    ok("scope", "add", "write_book", data_dir=data)
    ok(
        "ledger",
        "checkpoint",
        "--consistency-from",
        str(old_size),
        "--out",
        str(auditor / "cp-new.json"),
        data_dir=data,
    )
    ok("ledger", "export", "--out", str(auditor / "new.jsonl"), data_dir=data)
    ok(
        "ledger",
        "export",
        "--event",
        "audit.certificate_rotated",
        "--out",
        str(auditor / "rotations.jsonl"),
        data_dir=data,
    )
    ok("chain", "--root-only", "--out", str(auditor / "root.pem"), data_dir=data)
    ok("audit", "certificate", "--chain", "--out", str(auditor / "bundle.pem"), data_dir=data)
    (base / "before-first.txt").write_text(f"{before_first.returncode}\n{before_first.stderr}")
    return {"base": base, "data": data, "auditor": auditor}


def test_no_certificate_before_the_first_checkpoint(ca: dict[str, Path]) -> None:
    code, stderr = (ca["base"] / "before-first.txt").read_text().split("\n", 1)
    assert code == "6"
    assert "no audit certificate yet: the first 'agentca ledger checkpoint' creates it" in stderr


def test_printed_from_the_database_without_hsm_and_creating_nothing(
    ca: dict[str, Path], tmp_path: Path
) -> None:
    before = tree_state(ca["data"], tmp_path)
    pem = ok("audit", "certificate", data_dir=ca["data"], env=NO_HSM)
    (cert,) = pem_certs(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "agentca ledger audit"
    )
    chain = pem_certs(ok("audit", "certificate", "--chain", data_dir=ca["data"], env=NO_HSM))
    assert [c.subject for c in chain[1:]] == [c.subject for c in chain[1:] if is_ca(c)]
    assert chain[0] == cert and len(chain) == 3
    assert chain[2] == pem_certs((ca["auditor"] / "root.pem").read_text())[0]
    assert tree_state(ca["data"], tmp_path) == before
    # the control: the same environment does keep the HSM away from commands that need it
    r = run_cli("ledger", "checkpoint", data_dir=ca["data"], env=NO_HSM)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_json_fields(ca: dict[str, Path]) -> None:
    data = json.loads(ok("audit", "certificate", "--json", data_dir=ca["data"], env=NO_HSM))
    cert = x509.load_pem_x509_certificate(data["pem"].encode())
    assert data["serial"] == openssl_serial(cert)
    assert data["subject"] == cert.subject.rfc4514_string()
    assert data["issuer"] == cert.issuer.rfc4514_string()
    assert data["not_before"].endswith("Z") and data["not_after"].endswith("Z")
    assert data["not_after"][:10] == cert.not_valid_after_utc.strftime("%Y-%m-%d")
    assert len(data["fingerprint_sha256"]) == 64


def test_out_refuses_to_overwrite_unless_forced(ca: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "audit.pem"
    out.write_text("keep me")
    r = run_cli("audit", "certificate", "--out", str(out), data_dir=ca["data"])
    assert r.returncode == 7 and "exists: not overwriting" in r.stderr
    assert out.read_text() == "keep me"
    ok("audit", "certificate", "--out", str(out), "--force", data_dir=ca["data"])
    assert pem_certs(out.read_text())


def test_checkpoint_certificate_option_no_longer_overwrites_silently(
    ca: dict[str, Path], tmp_path: Path
) -> None:
    cert = tmp_path / "audit.pem"
    cert.write_text("keep me")
    r = run_cli("ledger", "checkpoint", "--certificate", str(cert), data_dir=ca["data"])
    assert r.returncode == 7 and f"{cert} exists" in r.stderr
    assert cert.read_text() == "keep me"
    fresh = tmp_path / "fresh.pem"
    r = run_cli("ledger", "checkpoint", "--certificate", str(fresh), data_dir=ca["data"])
    assert r.returncode == 0 and f"audit certificate written to {fresh}" in r.stderr


def test_rotation_made_a_new_chained_certificate_and_a_ledger_entry(ca: dict[str, Path]) -> None:
    auditor = ca["auditor"]
    rotated = json.loads((auditor / "rotated.json").read_text())
    old = pem_certs((auditor / "audit-old.pem").read_text())[0]
    new = x509.load_pem_x509_certificate(rotated["pem"].encode())
    assert rotated["changed"] is True
    assert rotated["previous_serial"] == openssl_serial(old)
    assert new != old and new.public_key() != old.public_key()
    issuing = pem_certs((auditor / "bundle.pem").read_text())[1]
    new.verify_directly_issued_by(issuing)
    old.verify_directly_issued_by(issuing)
    assert pem_certs((auditor / "bundle.pem").read_text())[0] == new  # now the current one
    lines = (auditor / "rotations.jsonl").read_text().splitlines()
    header, entries = json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
    assert [e["event"] for e in entries] == ["audit.certificate_rotated"]
    body = entries[0]["body"]
    assert body["previous_serial"] == format(old.serial_number, "x")
    assert body["serial"] == format(new.serial_number, "x")
    assert entries[0]["actor"].startswith("cli:")
    # the export carries both audit certificates, the chain and the arcs
    assert len(header["audit"]["certificates"]) == 2 and len(header["audit"]["chain"]) == 2


def test_dry_run_changes_nothing(ca: dict[str, Path]) -> None:
    before = ok("audit", "certificate", data_dir=ca["data"])
    plan = json.loads(
        ok("audit", "rotate-certificate", "--dry-run", "--json", data_dir=ca["data"], env=NO_HSM)
    )
    assert plan["changed"] is False and plan["dry_run"] is True
    assert plan["previous_serial"] == openssl_serial(pem_certs(before)[0])
    assert ok("audit", "certificate", data_dir=ca["data"]) == before


@pytest.fixture()
def offline(ca: dict[str, Path], tmp_path: Path) -> Path:
    """The auditor's files alone: a copy outside any data directory, whose data directory
    does not exist (no database, no HSM)."""
    copy = tmp_path / "auditor"
    shutil.copytree(ca["auditor"], copy)
    return copy


def verify(
    offline: Path, export: str, *extra: str, trust: str = "root.pem"
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "ledger",
        "verify",
        str(offline / export),
        "--trust",
        str(offline / trust),
        *extra,
        data_dir=offline / "no-such-data-dir",
        env=NO_HSM,
    )


def test_old_and_new_checkpoints_verify_against_the_root_offline(offline: Path) -> None:
    for export in ("old.jsonl", "new.jsonl", "rotations.jsonl"):
        r = verify(offline, export)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("OK:")
    old = json.loads((offline / "old.jsonl").read_text().splitlines()[0])["checkpoint"]
    new = json.loads((offline / "new.jsonl").read_text().splitlines()[0])["checkpoint"]
    assert old["certificate_pem"] != new["certificate_pem"]  # signed by two audit keys
    r = run_cli(
        "ledger",
        "consistency",
        str(offline / "cp-old.json"),
        str(offline / "cp-new.json"),
        "--trust",
        str(offline / "root.pem"),
        data_dir=offline / "no-such-data-dir",
        env=NO_HSM,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: consistent")
    assert not (offline / "no-such-data-dir").exists()


def test_kept_checkpoint_files_verify_alone(offline: Path) -> None:
    for name in ("cp-old.json", "cp-new.json"):
        r = verify(offline, name)
        assert r.returncode == 0, r.stderr
        assert "verifies (a tree head only" in r.stdout
    doc = json.loads((offline / "cp-old.json").read_text())
    doc["tree_size"] += 1
    (offline / "cp-forged.json").write_text(json.dumps(doc))
    r = verify(offline, "cp-forged.json")
    assert r.returncode == 13
    assert "FAILED: the checkpoint signature does not verify" in r.stderr


def test_pinning_the_old_audit_certificate_still_verifies_its_export(offline: Path) -> None:
    assert verify(offline, "old.jsonl", trust="audit-old.pem").returncode == 0
    r = verify(offline, "new.jsonl", trust="audit-old.pem")
    assert r.returncode == 13
    assert "signed by a certificate other than the trusted one" in r.stderr


def test_verify_json(offline: Path) -> None:
    r = verify(offline, "new.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["errors"] == []
    assert data["checkpoints"] == 1 and data["entries"] == data["tree_size"] > 0
    assert data["anchor"]["mode"] == "ca"
    assert data["anchor"]["subjects"] == [
        pem_certs((offline / "root.pem").read_text())[0].subject.rfc4514_string()
    ]


def _resign(
    offline: Path,
    name: str,
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    extra_chain: list[x509.Certificate],
    at: str = "2027-01-01T00:00:00Z",
) -> str:
    """A copy of new.jsonl whose checkpoint is re-signed by ``signer`` (same tree) at ``at``
    (inside the validity of the test hierarchy's certificates unless moved)."""
    from datetime import datetime

    lines = (offline / "new.jsonl").read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    cp = header["checkpoint"]
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    cert, key = signer
    forged = sign_checkpoint(cp["tree_size"], bytes.fromhex(cp["root_hash"]), when, key, cert)
    header["checkpoint"] = forged.to_json()
    header["audit"]["chain"] += [
        c.public_bytes(serialization.Encoding.PEM).decode() for c in extra_chain
    ]
    (offline / name).write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return name


def test_foreign_root_is_refused(offline: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ok("init", data_dir=other)
    ok("chain", "--root-only", "--out", str(offline / "foreign-root.pem"), data_dir=other)
    r = verify(offline, "new.jsonl", "--json", trust="foreign-root.pem")
    assert r.returncode == 13
    assert "does not chain to the trusted certificate at the checkpoint's time" in r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False and "does not chain" in data["errors"][0]


def test_certificate_without_the_audit_eku_is_refused(offline: Path) -> None:
    test_ca = Hierarchy("test")
    (offline / "test-root.pem").write_bytes(test_ca.root.public_bytes(serialization.Encoding.PEM))
    name = _resign(offline, "no-eku.jsonl", test_ca.without_eku(), [test_ca.issuing])
    r = verify(offline, name, trust="test-root.pem")
    assert r.returncode == 13
    assert "FAILED: the audit certificate (CN=not an audit key) does not carry the " in r.stderr
    assert "ledger-signing EKU id-kp-agentcaLedgerSigning" in r.stderr
    # the control: the same forgery with an audit certificate of that CA verifies
    good = _resign(offline, "test-ca.jsonl", test_ca.audit(), [test_ca.issuing])
    assert verify(offline, good, trust="test-root.pem").returncode == 0


def test_checkpoint_outside_the_audit_validity_is_refused(offline: Path) -> None:
    test_ca = Hierarchy("test")
    (offline / "test-root.pem").write_bytes(test_ca.root.public_bytes(serialization.Encoding.PEM))
    name = _resign(
        offline, "late.jsonl", test_ca.audit(), [test_ca.issuing], at="2030-01-01T00:00:00Z"
    )
    r = verify(offline, name, trust="test-root.pem")
    assert r.returncode == 13
    assert (
        "FAILED: the checkpoint was signed at 2030-01-01T00:00:00.000000Z, outside the audit "
        "certificate's validity (2026-12-31T00:00:00Z to 2029-04-05T00:00:00Z)"
    ) in r.stderr


def test_tampered_entry_is_refused(offline: Path) -> None:
    lines = (offline / "new.jsonl").read_text().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["actor"] = "someone-else"
    lines[2] = json.dumps(entry) + "\n"
    (offline / "tampered.jsonl").write_text("".join(lines))
    r = verify(offline, "tampered.jsonl")
    assert r.returncode == 13
    assert f"FAILED (entry {entry['seq']}): entry {entry['seq']} was altered" in r.stderr


def test_a_checkpoint_near_expiry_rotates_first_and_both_verify(ca_runtime: Runtime) -> None:
    from datetime import timedelta

    from ca.ledger.audit import audit_certificates
    from ca.ledger.signer import AUDIT_VALIDITY, ROTATE_BEFORE
    from ca.ledger.trust import LedgerTrust, checkpoint_problem

    rt = ca_runtime
    first = rt.checkpoints.checkpoint()
    again = rt.checkpoints.checkpoint()
    assert again.certificate_der == first.certificate_der  # not due: no rotation
    start = rt.authority.clock()
    rt.authority.clock = lambda: start + AUDIT_VALIDITY - ROTATE_BEFORE + timedelta(days=1)
    late = rt.checkpoints.checkpoint()
    assert late.certificate_der != first.certificate_der
    with rt.sessions() as s:
        assert len(audit_certificates(s)) == 2
    tail = list(
        rt.ledger.entries(rt.ledger.size(), ExportFilter(event="audit.certificate_rotated"))
    )
    assert [(e.actor, e.event) for e, _ in tail] == [("system", "audit.certificate_rotated")]
    issuing, root = rt.authority.chain()
    trust = LedgerTrust((root,), (issuing,))
    assert checkpoint_problem(first, trust) is None
    assert checkpoint_problem(late, trust) is None
