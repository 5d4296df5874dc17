"""Dropping the least-privilege roles a test created (PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ca.store.roles import DbRole, RoleNames


def drop_roles(url: str, names: RoleNames) -> None:
    """Drop each of ``names``'s roles that exists, with what it owns (connect as a superuser)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for role in DbRole:
                name = names.of(role)
                if conn.execute(
                    sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}
                ).first():
                    conn.exec_driver_sql(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
                    conn.exec_driver_sql(f'DROP OWNED BY "{name}"')
                    conn.exec_driver_sql(f'DROP ROLE "{name}"')
    finally:
        engine.dispose()
