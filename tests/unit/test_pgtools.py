"""Database URLs handed to pg_dump/pg_restore and to 'db migrate-to': never a password in argv."""

from __future__ import annotations

import pytest

from ca.errors import CAError
from ca.store.pgtools import conninfo
from cli.db_migrate_commands import target_url


def test_conninfo_drops_the_password_and_quotes_values() -> None:
    info = conninfo("postgresql+psycopg://owner:s3cret@db.internal:5433/agentca?sslmode=require")
    assert "s3cret" not in info
    assert info == "host='db.internal' port='5433' dbname='agentca' user='owner' sslmode='require'"
    assert conninfo("postgresql://u@h/d?password=x") == "host='h' dbname='d' user='u'"
    assert conninfo("postgresql://u@h/it's") == "host='h' dbname='it\\'s' user='u'"


def test_conninfo_refuses_sqlite() -> None:
    with pytest.raises(CAError, match="not a PostgreSQL"):
        conninfo("sqlite:///x.db")


@pytest.mark.parametrize(
    "url", ["postgresql://u:pw@h/d", "postgresql://u@h/d?password=pw"], ids=["netloc", "query"]
)
def test_a_password_in_argv_is_refused(url: str) -> None:
    with pytest.raises(CAError, match="carries a password") as err:
        target_url(url)
    assert "pw" not in str(err.value)


def test_a_url_without_password_passes() -> None:
    assert target_url("postgresql://owner@db/agentca") == "postgresql://owner@db/agentca"
