"""Least-privilege database roles on a real PostgreSQL (decision 0028).

``agentca db roles`` creates the owner, CA writer, OCSP reader and auditor roles; the owner
migrates the schema; each role then holds exactly the catalogue's privileges
(``ca.store.roles.TABLE_GRANTS``), what it must not do PostgreSQL refuses, and the CA runs its
whole cycle (init, registration, issuance, revocation, CRL, ledger checkpoint) connected as the
writer alone.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ca.store.roles import TABLE_GRANTS, RoleNames, grant_snapshot
from tests.integration.conftest import issue_args, register_for_issue, run_cli, write_agent_csr
from tests.support.pg_roles import drop_roles

INSUFFICIENT_PRIVILEGE = "42501"
READ_ONLY_TRANSACTION = "25006"


@pytest.fixture
def roles(pg_url: str) -> Iterator[RoleNames]:
    """Four role names of this test only (roles are cluster-wide), dropped afterwards."""
    tag = secrets.token_hex(3)
    names = RoleNames(
        owner=f"t{tag}_owner", writer=f"t{tag}_ca", ocsp=f"t{tag}_ocsp", auditor=f"t{tag}_aud"
    )
    yield names
    drop_roles(pg_url, names)


def _as(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(False)


def _env(names: RoleNames, database_url: str, migration_url: str = "") -> dict[str, str]:
    env = {
        "AGENTCA_DATABASE_URL": database_url,
        "AGENTCA_DB_OWNER_ROLE": names.owner,
        "AGENTCA_DB_WRITER_ROLE": names.writer,
        "AGENTCA_DB_OCSP_ROLE": names.ocsp,
        "AGENTCA_DB_AUDITOR_ROLE": names.auditor,
    }
    if migration_url:
        env["AGENTCA_MIGRATION_DATABASE_URL"] = migration_url
    return env


def _sqlstate(url: str, statement: str) -> str | None:
    """Run ``statement`` (rolled back) and return the SQLSTATE it failed with, or None."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            try:
                conn.exec_driver_sql(statement)
            except DBAPIError as exc:
                return str(getattr(exc.orig, "sqlstate", "?"))
            finally:
                conn.rollback()
    finally:
        engine.dispose()
    return None


def _create_roles(pg_url: str, names: RoleNames, tmp_path: Path) -> None:
    """Step 1 of the documented order, on an empty database: the roles (as a superuser)."""
    admin = _env(names, pg_url, migration_url=pg_url)
    first = run_cli("db", "roles", "--json", data_dir=tmp_path / "admin", env=admin)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["created"] == [names.owner, names.writer, names.ocsp, names.auditor]
    assert doc["tables"] == 0 and doc["changed"] is True
    assert "db upgrade" in first.stderr  # no schema yet: what to run next


def _provision(pg_url: str, names: RoleNames, tmp_path: Path, *, roles_exist: bool = False) -> None:
    """The documented order: roles (superuser), upgrade (owner), roles again (superuser)."""
    admin = _env(names, pg_url, migration_url=pg_url)
    if not roles_exist:
        _create_roles(pg_url, names, tmp_path)
    up = run_cli(
        "db",
        "upgrade",
        "--json",
        data_dir=tmp_path / "owner",
        env=_env(names, pg_url, migration_url=_as(pg_url, names.owner)),
    )
    assert up.returncode == 0, up.stderr
    second = run_cli("db", "roles", "--json", data_dir=tmp_path / "admin", env=admin)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["tables"] == len(TABLE_GRANTS)


def test_each_role_holds_exactly_the_catalogue(
    pg_url: str, roles: RoleNames, tmp_path: Path
) -> None:
    _provision(pg_url, roles, tmp_path)
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            privileges, owners, configs = grant_snapshot(conn, roles)
    finally:
        engine.dispose()
    expected = {
        (table, roles.of(role), privilege)
        for table, grants in TABLE_GRANTS.items()
        for role, held in grants.items()
        for privilege in held
    }
    held = {row for row in privileges if row[1] != roles.owner}  # owners hold all, implicitly
    sequences = {row for row in held if row[0].endswith("_seq")}
    assert held - sequences == expected
    # the writer's INSERTs draw ids from sequences: USAGE and SELECT, on nothing else
    assert sequences and {(r[1], r[2]) for r in sequences} == {
        (roles.writer, "USAGE"),
        (roles.writer, "SELECT"),
    }
    tables = {table for table, owner in owners if owner == roles.owner}
    assert set(TABLE_GRANTS) <= tables  # the owner owns every table (and their sequences)
    assert f"{roles.ocsp}:default_transaction_read_only=on" in configs
    assert f"{roles.auditor}:default_transaction_read_only=on" in configs
    assert f"{roles.writer}:" in configs  # the writer's sessions are ordinary

    again = run_cli(
        "db", "roles", "--json", data_dir=tmp_path / "admin",
        env=_env(roles, pg_url, migration_url=pg_url),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False and "no change" in again.stderr


def test_what_each_role_must_not_do_postgresql_refuses(
    pg_url: str, roles: RoleNames, tmp_path: Path
) -> None:
    _provision(pg_url, roles, tmp_path)
    writer, ocsp, auditor, owner = (
        _as(pg_url, roles.writer),
        _as(pg_url, roles.ocsp),
        _as(pg_url, roles.auditor),
        _as(pg_url, roles.owner),
    )
    denied = INSUFFICIENT_PRIVILEGE
    # the CA writer: no DDL, no DELETE anywhere, the ledger is append-only
    assert _sqlstate(writer, "CREATE TABLE intruder (x int)") == denied
    assert _sqlstate(writer, "DELETE FROM certificates") == denied
    assert _sqlstate(writer, "TRUNCATE status_changes") == denied
    assert _sqlstate(writer, "UPDATE ledger_entries SET seq = seq") == denied
    assert _sqlstate(writer, "DELETE FROM ledger_checkpoints") == denied
    assert _sqlstate(writer, "DROP TABLE agents") == denied
    assert _sqlstate(writer, "SELECT count(*) FROM api_tokens") is None
    # the OCSP reader: its five tables, read-only
    for table in ("issuers", "certificates", "status_changes", "ocsp_signers", "ocsp_responses"):
        assert _sqlstate(ocsp, f"SELECT count(*) FROM {table}") is None
    for table in ("api_tokens", "enrollment_tokens", "agents", "ledger_entries"):
        assert _sqlstate(ocsp, f"SELECT count(*) FROM {table}") == denied
    assert _sqlstate(ocsp, "UPDATE certificates SET status = status") == READ_ONLY_TRANSACTION
    assert _sqlstate(ocsp, "DELETE FROM ocsp_responses") in (denied, READ_ONLY_TRANSACTION)
    assert _sqlstate(ocsp, "CREATE TEMP TABLE t (x int)") == READ_ONLY_TRANSACTION
    # the auditor: the ledger and the certificates anchoring it, nothing else, read-only
    for table in ("ledger_entries", "ledger_checkpoints", "ledger_head", "audit_signers"):
        assert _sqlstate(auditor, f"SELECT count(*) FROM {table}") is None
    for table in ("api_tokens", "agents", "certificates", "enrollment_tokens"):
        assert _sqlstate(auditor, f"SELECT count(*) FROM {table}") == denied
    assert _sqlstate(auditor, "INSERT INTO scopes (name) VALUES ('x')") is not None
    # the owner migrates: it may create (rolled back here)
    assert _sqlstate(owner, "CREATE TABLE later (x int)") is None


def test_the_ca_runs_as_the_writer_alone(pg_url: str, roles: RoleNames, tmp_path: Path) -> None:
    writer_env = _env(roles, _as(pg_url, roles.writer))
    data_dir = tmp_path / "ca"
    _create_roles(pg_url, roles, tmp_path)
    # before the owner migrated, the writer may not: one clear line naming db upgrade
    early = run_cli("init", data_dir=data_dir, env=writer_env)
    assert early.returncode == 10, early.stderr
    assert "agentca db upgrade" in early.stderr and "Traceback" not in early.stderr
    assert early.stderr.count("\n") == 1
    _provision(pg_url, roles, tmp_path, roles_exist=True)

    init = run_cli("init", data_dir=data_dir, env=writer_env)
    assert init.returncode == 0, init.stderr
    model, prompt = "ab" * 32, "cd" * 32
    register_for_issue(data_dir, "writer-agent", model, prompt, env=writer_env)
    csr = tmp_path / "a.csr"
    write_agent_csr(csr, "writer-agent", model, prompt)
    issued = run_cli(
        *issue_args(csr, "writer-agent", model, prompt), data_dir=data_dir, env=writer_env
    )
    assert issued.returncode == 0, issued.stderr
    serial = format(x509.load_pem_x509_certificate(issued.stdout.encode()).serial_number, "x")
    revoked = run_cli(
        "revoke", serial, "--reason", "keyCompromise", data_dir=data_dir, env=writer_env
    )
    assert revoked.returncode == 0, revoked.stderr
    crl = run_cli("crl", "publish", data_dir=data_dir, env=writer_env)
    assert crl.returncode == 0, crl.stderr
    checkpoint = run_cli("ledger", "checkpoint", data_dir=data_dir, env=writer_env)
    assert checkpoint.returncode == 0, checkpoint.stderr
    beat = run_cli("db", "heartbeat", "--once", "--json", data_dir=data_dir, env=writer_env)
    assert beat.returncode == 0 and json.loads(beat.stdout) == {"beats": 1, "changed": True}
    health = run_cli("doctor", "--json", data_dir=data_dir, env=writer_env)
    checks = {c["check"]: c for c in json.loads(health.stdout)["checks"]}
    assert checks["roles"]["status"] == "ok", checks  # connected as the writer role
    # what the writer wrote, the auditor role reads back
    engine = sa.create_engine(_as(pg_url, roles.auditor), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            kinds = set(conn.execute(sa.text("SELECT event FROM ledger_entries")).scalars())
    finally:
        engine.dispose()
    assert {"certificate.issued", "certificate.revoked"} <= kinds
