"""Alembic migrations run up and down on both backends and match the models exactly."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

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


def test_0007_keys_existing_agents_and_keeps_look_alikes_registered_before_it(db_url: str) -> None:
    """Existing rows get ``name_key``; look-alikes registered earlier survive, new ones cannot."""
    upgrade(db_url, "0005")
    engine = make_engine(db_url)
    insert = text(
        "INSERT INTO agents (name, officer, environment, model_type, allowed_scopes, "
        "allowed_model_digests, allowed_prompt_digests, allowed_key_types, max_validity_seconds, "
        "status, created_at, updated_at) VALUES (:n, 'o@example.com', 'prod', 'm', 's', 'a', 'b', "
        "'ec-p256', 60, 'active', :t, :t)"
    )
    now = "2026-12-01 00:00:00"
    try:
        with engine.begin() as conn:
            for name in ("AgentA", "agenta", "other"):
                conn.execute(insert, {"n": name, "t": now})
        upgrade(db_url, "0007")
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, name, name_key, allowed_config_digests FROM agents ORDER BY id")
            ).all()
        first, second, other = rows
        assert (first.name_key, other.name_key) == ("agenta", "other")
        assert second.name_key == f"agenta#{second.id}"
        assert {r.allowed_config_digests for r in rows} == {""}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO agents (name, name_key, officer, environment, model_type, "
                    "allowed_scopes, allowed_model_digests, allowed_prompt_digests, "
                    "allowed_key_types, max_validity_seconds, status, created_at, updated_at) "
                    "VALUES ('AGENTA', 'agenta', 'o@example.com', 'prod', 'm', 's', 'a', 'b', "
                    "'ec-p256', 60, 'active', :t, :t)"
                ),
                {"t": now},
            )
        command.downgrade(alembic_config(db_url), "0005")
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM agents ORDER BY id")).scalars().all()
        assert names == ["AgentA", "agenta", "other"]
    finally:
        engine.dispose()
