"""``agentca db migrate-to``: a CA on the embedded SQLite moved to a real PostgreSQL
(decision 0032), then run there: the same listings, ledger export and OCSP answers, and new
rows get fresh ids (sequences set past the copied ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.populated_ca import (
    AGENTS,
    PopulatedCA,
    certificate_rows,
    check_issues,
    check_ocsp,
    listing,
    populate,
    tables_of,
)

pytestmark = pytest.mark.integration


def test_migrate_to_postgres_then_run_there(pg_url: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ca = populate(tmp_path / "data", {}, work)
    sqlite_url = f"sqlite:///{ca.data_dir / 'agentca.sqlite3'}"
    before = listing(ca)
    assert ca.cli("ledger", "export", "--out", str(work / "sqlite.jsonl")).returncode == 0

    with_password = pg_url.replace("postgres@", "postgres:secret@", 1)
    refused = ca.cli("db", "migrate-to", with_password)
    assert refused.returncode == 2 and "carries a password" in refused.stderr
    assert "secret" not in refused.stderr
    url_file = tmp_path / "target.url"
    url_file.write_text(pg_url + "\n")
    url_file.chmod(0o644)
    refused = ca.cli("db", "migrate-to", str(url_file))
    assert refused.returncode == 10 and "chmod 600" in refused.stderr, refused.stderr
    url_file.chmod(0o600)

    dry = ca.cli("db", "migrate-to", str(url_file), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["changed"] is False
    assert plan["tables"]["certificates"] == 3 and plan["tables"]["enrollment_tokens"] == 1
    assert tables_of(pg_url) == []  # a dry run writes nothing, not even the schema

    done = ca.cli("db", "migrate-to", str(url_file), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["tables"] == plan["tables"] and doc["target_migrated"] is True
    assert doc["sequences"]["certificates"] == 4  # past the three copied ids
    assert certificate_rows(pg_url) == certificate_rows(sqlite_url)
    again = ca.cli("db", "migrate-to", str(url_file))
    assert again.returncode == 7 and "not empty" in again.stderr, again.stderr

    pg = {"AGENTCA_DATABASE_URL": pg_url}
    on_pg = PopulatedCA(ca.data_dir, pg, work, ca.pems, ca.serials)
    assert listing(on_pg) == before
    assert on_pg.cli("ledger", "export", "--out", str(work / "pg.jsonl")).returncode == 0
    assert (work / "pg.jsonl").read_bytes() == (work / "sqlite.jsonl").read_bytes()
    verify = on_pg.cli(
        "ledger", "verify", str(work / "pg.jsonl"), "--trust", str(work / "root.pem")
    )
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stderr
    check_ocsp(on_pg, pg)
    # new rows in every table the CA writes to: no duplicate key anywhere
    serial = check_issues(on_pg, "on-postgres")
    for args in (
        ("revoke", serial, "--reason", "superseded"),
        ("token", "create", AGENTS[0]),
        ("apitoken", "create", "after-move", "--role", "read-only"),
        ("ledger", "checkpoint", "--out", str(work / "cp-pg.json")),
    ):
        result = on_pg.cli(*args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
    assert len(certificate_rows(pg_url)) == 4
