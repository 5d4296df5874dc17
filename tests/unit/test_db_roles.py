"""The database-role catalogue and its SQL (decision 0028); PostgreSQL runs it in
tests/integration/test_db_roles.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ca.config import Settings
from ca.errors import CAError
from ca.store.models import Base
from ca.store.roles import TABLE_GRANTS, DbRole, RoleNames, role_statements

NAMES = RoleNames(owner="o", writer="w", ocsp="r", auditor="a")
REPO = Path(__file__).resolve().parents[2]


def test_every_table_of_the_schema_is_placed_in_the_catalogue() -> None:
    # a migration that adds a table fails here until the table's grants are decided
    assert set(TABLE_GRANTS) == {*Base.metadata.tables, "alembic_version"}


def test_the_writer_never_deletes_and_only_appends_to_the_ledger() -> None:
    for table, grants in TABLE_GRANTS.items():
        assert "DELETE" not in grants.get(DbRole.WRITER, frozenset()), table
        assert all(grants.get(r, frozenset()) <= {"SELECT"} for r in (DbRole.OCSP, DbRole.AUDITOR))
    for table in ("ledger_entries", "ledger_checkpoints", "status_changes"):
        assert "INSERT" in TABLE_GRANTS[table][DbRole.WRITER]
    assert TABLE_GRANTS["ledger_entries"][DbRole.WRITER] == {"SELECT", "INSERT"}
    assert TABLE_GRANTS["ledger_checkpoints"][DbRole.WRITER] == {"SELECT", "INSERT"}


def test_the_ocsp_role_reads_what_the_deployed_sql_file_grants() -> None:
    sql = (REPO / "deploy" / "ocsp-readonly-role.sql").read_text()
    grant = re.search(r"GRANT SELECT ON ([\w, ]+) TO agentca_ocsp", sql)
    assert grant is not None
    in_file = {t.strip() for t in grant.group(1).split(",")}
    in_catalogue = {t for t, g in TABLE_GRANTS.items() if DbRole.OCSP in g}
    assert in_file == in_catalogue


def test_statements_grant_the_catalogue_and_create_only_missing_roles() -> None:
    tables = sorted(TABLE_GRANTS)
    out = role_statements(NAMES, tables, "agentca", existing={"o", "w"})
    creates = [s for s in out if "CREATE ROLE" in s]
    assert len(creates) == 2 and '"r"' in creates[0] and '"a"' in creates[1]
    assert 'GRANT INSERT, SELECT ON "public"."ledger_entries" TO "w"' in out
    assert 'GRANT SELECT ON "public"."certificates" TO "r"' in out
    assert not any('"certificates" TO "a"' in s for s in out)
    assert 'ALTER ROLE "r" SET default_transaction_read_only = on' in out
    assert 'ALTER ROLE "a" SET default_transaction_read_only = on' in out
    # every non-owner role loses what it held before it is granted the catalogue
    for who in ("w", "r", "a"):
        revoke = out.index(f'REVOKE ALL ON ALL TABLES IN SCHEMA "public" FROM "{who}"')
        first_grant = next(
            i for i, s in enumerate(out) if s.endswith(f'TO "{who}"') and 'ON "public".' in s
        )
        assert revoke < first_grant


def test_a_table_outside_the_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match="intruder"):
        role_statements(NAMES, ["certificates", "intruder"], "agentca")


@pytest.mark.parametrize("bad", ['x"; DROP TABLE certificates; --', "Agentca", "", "a b"])
def test_an_identifier_that_is_not_plain_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        role_statements(RoleNames(bad, "w", "r", "a"), [], "agentca")
    with pytest.raises(ValueError):
        role_statements(NAMES, [], bad)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("db_writer_role", "Bad-Name"),
        ("db_ocsp_role", "pg_read_all_data"),
        ("db_auditor_role", "postgres"),
        ("db_owner_role", "x" * 64),
        ("db_writer_role", "agentca_ocsp"),  # the same role twice
    ],
)
def test_role_settings_are_checked_when_built(setting: str, value: str) -> None:
    with pytest.raises(CAError):
        Settings(**{setting: value})  # type: ignore[arg-type]
