"""``agentca db current`` / ``db upgrade`` against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from ca.store.db import head_revision
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def test_upgrade_then_current(db_url: str, tmp_path: Path) -> None:
    env = {"AGENTCA_DATABASE_URL": db_url}
    data_dir = tmp_path / "data"
    before = run_cli("db", "current", "--json", data_dir=data_dir, env=env)
    if db_url.startswith("sqlite"):  # a read command creates no database
        assert before.returncode != 0 and "run 'agentca init' first" in before.stderr
        assert not Path(db_url.removeprefix("sqlite:///")).exists()
    else:  # an empty PostgreSQL database: no schema yet
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout)["current"] is None
    up = run_cli("db", "upgrade", "--json", data_dir=data_dir, env=env)
    assert up.returncode == 0, up.stderr
    doc = json.loads(up.stdout)
    head = head_revision(db_url)
    assert doc["current"] == doc["head"] == head and doc["up_to_date"] is True
    assert doc["previous"] is None
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == head
            assert "issuers" in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    again = run_cli("db", "upgrade", "--json", data_dir=data_dir, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["previous"] == head
    table = run_cli("db", "current", data_dir=data_dir, env=env)
    assert table.returncode == 0 and f"current   {head}" in table.stdout


def test_current_never_prints_the_password(pg_url: str, tmp_path: Path) -> None:
    url = sa.engine.make_url(pg_url)
    if url.password is None:
        url = url.set(password="not-needed-by-trust-auth")
    shown = url.render_as_string(hide_password=False)
    result = run_cli(
        "db", "current", "--json", data_dir=tmp_path, env={"AGENTCA_DATABASE_URL": shown}
    )
    assert result.returncode == 0, result.stderr
    assert url.password not in result.stdout + result.stderr
    assert ":***@" in json.loads(result.stdout)["database"]
