"""Append-only tables, enforced by the database itself (every role, the owner included).

The issuance ledger's migration (0003) created the PostgreSQL trigger function
``agentca_ledger_is_append_only()``; later ledgers (the action ledger, 0017) put the same
guard on their tables through these statements, so every ledger refuses ``UPDATE``,
``DELETE`` and ``TRUNCATE`` the same way on PostgreSQL and SQLite.
"""

from __future__ import annotations

PG_GUARD = "agentca_ledger_is_append_only"


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """The statements that make ``table`` append-only on ``dialect`` (``postgresql`` or
    ``sqlite``); the PostgreSQL guard function must exist (migration 0003)."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_GUARD}()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_GUARD}()",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC",
        ]
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the agentca ledger is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the agentca ledger is append-only: DELETE refused'); END",
    ]


def drop_append_only_ddl(dialect: str, table: str) -> list[str]:
    """The statements that undo :func:`append_only_ddl` (downgrades)."""
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_no_update ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
    ]


def trigger_names(dialect: str, table: str) -> tuple[str, ...]:
    """The triggers :func:`append_only_ddl` creates on ``table`` (for checks after a restore)."""
    suffixes = (
        ("no_truncate", "no_update") if dialect == "postgresql" else ("no_delete", "no_update")
    )
    return tuple(f"{table}_{s}" for s in suffixes)
