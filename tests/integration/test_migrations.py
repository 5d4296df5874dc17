"""Alembic migrations run up and down on both backends and match the models exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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


def _issuer_rows(engine: Any, now: datetime, der: bytes | None) -> None:
    insert = text(
        "INSERT INTO issuers (id, name, role, parent_id, subject, key_label, key_type, "
        "serial_hex, certificate_der, name_hash_sha1, key_hash_sha1, name_hash_sha256, "
        "key_hash_sha256, not_before, not_after, active, created_at) VALUES (:id, :n, :n, :p, "
        "'CN=x', :n, 'ec-p256', '1', :b, :b, :b, :b, :b, :t, :t, true, :t)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"id": 1, "n": "root", "p": None, "b": b"x", "t": now})
        conn.execute(insert, {"id": 2, "n": "issuing", "p": 1, "b": b"x", "t": now})
        if der is not None:
            conn.execute(
                text(
                    "INSERT INTO certificates (issuer_id, serial_hex, status, agent_name, "
                    "subject, public_key_sha256, model_type, model_digest, prompt_digest, "
                    "scopes, officer, environment, not_before, not_after, requested_by, "
                    "created_at, certificate_der) VALUES (2, '2', 'issued', 'a', 'CN=a', :b, "
                    "'m', 'd', 'p', 's', 'o@example.com', 'prod', :t, :t, 't', :t, :der)"
                ),
                {"b": b"x", "t": now, "der": der},
            )


def _arcs(engine: Any) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, oid_arc, previous_oid_arcs FROM issuers ORDER BY id")
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def test_0010_existing_issuers_get_the_legacy_arc_their_certificates_carry(db_url: str) -> None:
    from ca.oids import LEGACY_ARC
    from wire import der

    upgrade(db_url, "0009")
    engine = make_engine(db_url)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    legacy_cert = b"\x30..." + der.encode_oid(LEGACY_ARC.provenance.dotted_string)
    try:
        _issuer_rows(engine, now, legacy_cert)
        upgrade(db_url, "0010")
        assert _arcs(engine) == [
            ("root", LEGACY_ARC.dotted, ""),
            ("issuing", LEGACY_ARC.dotted, ""),
        ]
        command.downgrade(alembic_config(db_url), "0009")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM issuers")).scalar_one() == 2
    finally:
        engine.dispose()


def test_0010_a_ca_already_issuing_under_the_example_arc_keeps_it(db_url: str) -> None:
    """A CA initialised between the move of the default arc and 0010 issued under the example
    arc: it keeps that arc, and the legacy arc stays accepted until its last certificate."""
    from ca.arcs import decode_previous
    from ca.oids import DEFAULT_ARC, LEGACY_ARC
    from wire import der

    upgrade(db_url, "0009")
    engine = make_engine(db_url)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    try:
        _issuer_rows(engine, now, b"\x30..." + der.encode_oid(DEFAULT_ARC.provenance.dotted_string))
        upgrade(db_url, "0010")
        rows = _arcs(engine)
        assert [(n, a) for n, a, _ in rows] == [
            ("root", DEFAULT_ARC.dotted),
            ("issuing", DEFAULT_ARC.dotted),
        ]
        for _, _, previous in rows:
            (kept,) = decode_previous(previous)
            assert kept.arc == LEGACY_ARC and kept.until == now
    finally:
        engine.dispose()
