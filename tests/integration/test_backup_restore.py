"""``agentca backup create/verify/restore`` on real PostgreSQL (and the embedded SQLite) and a
real SoftHSM2 token (decision 0032).

A CA with history is backed up, then restored into a new data directory and an empty
database, its own token directory hidden meanwhile: every certificate record is the same
(counts and per-serial DER digests), the ledger exports byte for byte as before and a fresh
checkpoint verifies with 'ledger verify --trust root.pem', OCSP answers good, revoked and on
hold, and the restored token's issuing key signs a new certificate. A backup with one byte
flipped is refused by verify and restore with one line and a non-zero exit.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import register_for_issue, run_cli
from tests.integration.populated_ca import (
    AGENTS,
    MODEL,
    PROMPT,
    PopulatedCA,
    certificate_rows,
    check_issues,
    check_ledger,
    check_ocsp,
    listing,
    populate,
    tables_of,
)

pytestmark = pytest.mark.integration


def _sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'agentca.sqlite3'}"


@pytest.fixture(scope="module")
def backed_up(
    pg_module_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PopulatedCA, str, Path, dict[str, object]]]:
    """A populated CA on PostgreSQL, its database URL, and a backup of it with the create
    command's JSON."""
    data_dir = tmp_path_factory.mktemp("backup-postgresql")
    work = tmp_path_factory.mktemp("backup-work")
    url, env = pg_module_url, {"AGENTCA_DATABASE_URL": pg_module_url}
    ca = populate(data_dir, env, work)
    result = ca.cli("ledger", "export", "--out", str(work / "before.jsonl"))
    assert result.returncode == 0, result.stderr
    out = work / "backup"
    result = ca.cli("backup", "create", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    yield ca, url, out, json.loads(result.stdout)


def test_create_writes_a_manifest_of_every_file(
    backed_up: tuple[PopulatedCA, str, Path, dict[str, object]],
) -> None:
    ca, _url, out, doc = backed_up
    manifest = json.loads((out / "manifest.json").read_text())
    assert doc["manifest"] == manifest
    files = manifest["files"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(files)
    assert manifest["database"]["file"] in files
    assert any(name.startswith("token/") and name.endswith(".object") for name in files)
    assert manifest["tables"]["certificates"] == 3 and manifest["ledger"]["checkpoint"]
    assert {i["role"] for i in manifest["issuers"]} == {"root", "issuing"}
    assert not any("secrets" in name or name.endswith(".pin") for name in files)  # no PINs
    assert (out / "manifest.json").stat().st_mode & 0o077 == 0
    verify = ca.cli("backup", "verify", str(out), "--manifest-sha256", str(doc["manifest_sha256"]))
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stderr


def test_restore_is_intact_and_the_ca_still_signs(
    backed_up: tuple[PopulatedCA, str, Path, dict[str, object]],
    pg_url: str,
    tmp_path: Path,
) -> None:
    source, source_url, out, _doc = backed_up
    data_dir = tmp_path / "restored"
    data_dir.mkdir(mode=0o700)
    shutil.copytree(source.data_dir / "secrets", data_dir / "secrets")  # the secret store's part
    url, env = pg_url, {"AGENTCA_DATABASE_URL": pg_url}
    restored = PopulatedCA(data_dir, env, source.work, source.pems, source.serials)
    before = listing(source)
    hidden = source.data_dir / "hsm" / "tokens.hidden"
    (source.data_dir / "hsm" / "tokens").rename(hidden)  # the restored CA must use its own copy
    try:
        result = restored.cli("backup", "restore", str(out), "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["changed"] is True and doc["missing_pin_files"] == []
        assert doc["token"]["dir"] == str(data_dir / "hsm" / "tokens")
        assert certificate_rows(url) == certificate_rows(source_url)
        assert len(certificate_rows(url)) == 3
        assert listing(restored) == before
        export = source.work / "restored.jsonl"
        result = restored.cli("ledger", "export", "--out", str(export))
        assert result.returncode == 0, result.stderr
        assert export.read_bytes() == (source.work / "before.jsonl").read_bytes()
        check_ledger(restored, source.work / "restored-signed.jsonl")
        check_ocsp(restored, env)
        check_issues(restored, "after-restore")
        again = restored.cli("backup", "restore", str(out))
        assert again.returncode == 7 and "not empty" in again.stderr, again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        hidden.rename(source.data_dir / "hsm" / "tokens")


def test_a_flipped_byte_is_refused(
    backed_up: tuple[PopulatedCA, str, Path, dict[str, object]],
    pg_url: str,
    tmp_path: Path,
) -> None:
    _source, _url, out, doc = backed_up
    manifest = json.loads((out / "manifest.json").read_text())
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    dump = bad / manifest["database"]["file"]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    data_dir = tmp_path / "target"
    env = {"AGENTCA_DATABASE_URL": pg_url}
    for args in (("backup", "verify", str(bad)), ("backup", "restore", str(bad))):
        result = run_cli(*args, data_dir=data_dir, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"agentca: error: backup {bad} refused: {dump.name} does not match its SHA-256 in "
            "the manifest [bad-request]"
        ]
        assert result.stdout == ""
    assert not (data_dir / "hsm").exists()  # nothing restored
    assert tables_of(pg_url) == []
    # a manifest rewritten to match is caught by the digest recorded at creation
    assert doc["manifest_sha256"] != "0" * 64
    result = run_cli(
        "backup", "verify", str(out), "--manifest-sha256", "0" * 64, data_dir=data_dir, env=env
    )
    assert result.returncode == 2 and "expected SHA-256" in result.stderr, result.stderr


def test_sqlite_backup_round_trip(tmp_path: Path) -> None:
    """The embedded SQLite default: SQLite's online backup, restored into a new data dir."""
    source = PopulatedCA(tmp_path / "source", {}, tmp_path)
    assert source.cli("init").returncode == 0
    assert source.cli("chain", "--root-only", "--out", str(tmp_path / "root.pem")).returncode == 0
    chain = source.cli("chain").stdout
    (tmp_path / "issuing.pem").write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])
    register_for_issue(source.data_dir, AGENTS[1], MODEL, PROMPT)
    check_issues(source, "before")
    out = tmp_path / "backup"
    result = source.cli("backup", "create", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "sqlite, schema" in result.stdout and "SoftHSM2 token files" in result.stdout
    assert {p.name for p in out.iterdir() if p.is_file()} == {"database.sqlite3", "manifest.json"}
    restored = PopulatedCA(tmp_path / "restored", {}, tmp_path)
    restored.data_dir.mkdir(mode=0o700)
    shutil.copytree(source.data_dir / "secrets", restored.data_dir / "secrets")
    result = restored.cli("backup", "restore", str(out))
    assert result.returncode == 0, result.stderr
    assert certificate_rows(_sqlite_url(restored.data_dir)) == certificate_rows(
        _sqlite_url(source.data_dir)
    )
    shutil.rmtree(source.data_dir)  # the restored CA needs nothing of the source
    check_issues(restored, "after")
    assert len(certificate_rows(_sqlite_url(restored.data_dir))) == 2
    again = restored.cli("backup", "restore", str(out))
    assert again.returncode == 7 and "--force" in again.stderr, again.stderr
    forced = restored.cli("backup", "restore", str(out), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    kept = json.loads(forced.stdout)["kept_aside"]
    assert len(kept) >= 2 and all(Path(k).exists() for k in kept)  # renamed aside, not deleted
    assert len(certificate_rows(_sqlite_url(restored.data_dir))) == 1  # the backup's state
    data = bytearray((out / "database.sqlite3").read_bytes())
    data[-100] ^= 0x80
    (out / "database.sqlite3").write_bytes(bytes(data))
    result = restored.cli("backup", "verify", str(out))
    assert result.returncode == 2 and "database.sqlite3 does not match" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
