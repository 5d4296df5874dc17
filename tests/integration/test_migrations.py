"""Alembic migrations run up and down on both backends and match the models exactly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ca.store.db import alembic_config, current_revision, make_engine, upgrade
from ca.store.models import Base


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        head = current_revision(engine)
        assert head is not None
        command.downgrade(alembic_config(db_url), "base")
        assert current_revision(engine) is None
        upgrade(db_url)
        assert current_revision(engine) == head
    finally:
        engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()
