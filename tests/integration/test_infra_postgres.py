"""The test infrastructure itself: real PostgreSQL, per-test databases, outage control."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from tests.conftest import PgServer


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})


def test_postgresql_is_real_and_isolated(pg_url: str) -> None:
    engine = _engine(pg_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("select version()")).scalar_one()
            database = conn.execute(sa.text("select current_database()")).scalar_one()
            tables = conn.execute(
                sa.text(
                    "select count(*) from information_schema.tables where table_schema = 'public'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert version.startswith("PostgreSQL ")
    assert database == make_url(pg_url).database
    assert database.startswith("agentca_t_")
    assert tables == 0


def test_db_url_gives_a_working_database(db_url: str) -> None:
    engine = _engine(db_url) if db_url.startswith("postgresql") else sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (x integer)"))
            conn.execute(sa.text("insert into t values (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select x from t")).scalar_one() == 42
    finally:
        engine.dispose()


def test_pg_server_stop_and_start(pg_server: PgServer, pg_url: str) -> None:
    engine = _engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1

        pg_server.stop()
        assert not pg_server.is_running()
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("select 1"))

        pg_server.start()
        assert pg_server.is_running()
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()
