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


def test_0009_the_database_refuses_a_status_outside_cert_status(db_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import inspect

    upgrade(db_url)
    engine = make_engine(db_url)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    try:
        checks = inspect(engine).get_check_constraints("certificates")
        assert [c["name"] for c in checks] == ["ck_certificates_status"]
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO issuers (id, name, role, subject, key_label, key_type, "
                    "serial_hex, certificate_der, name_hash_sha1, key_hash_sha1, "
                    "name_hash_sha256, key_hash_sha256, not_before, not_after, active, "
                    "created_at) VALUES (1, 'issuing', 'issuing', 'CN=x', 'k', 'ec-p256', "
                    "'1', :b, :b, :b, :b, :b, :t, :t, true, :t)"
                ),
                {"b": b"x", "t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO certificates (issuer_id, serial_hex, status, agent_name, "
                    "subject, public_key_sha256, model_type, model_digest, prompt_digest, "
                    "scopes, officer, environment, not_before, not_after, requested_by, "
                    "created_at) VALUES (1, '2', 'pending', 'a', 'CN=a', :b, 'm', 'd', 'p', "
                    "'s', 'o@example.com', 'prod', :t, :t, 't', :t)"
                ),
                {"b": b"x", "t": now},
            )
        for status in ("issued", "revoked", "failed"):
            with engine.begin() as conn:
                conn.execute(text("UPDATE certificates SET status = :s"), {"s": status})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE certificates SET status = 'good'"))
    finally:
        engine.dispose()
