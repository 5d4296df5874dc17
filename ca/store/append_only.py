"""Append-only tables, enforced by the database itself (every role, the owner included).

The issuance ledger's migration (0003) created the PostgreSQL trigger function
``agentca_ledger_is_append_only()``; later ledgers (the action ledger, 0017) put the same
guard on their tables through these statements, so every ledger refuses ``UPDATE``,
``DELETE`` and ``TRUNCATE`` the same way on PostgreSQL and SQLite.

A ledger's head row (its ``size``, the next ``seq``) is updated by every append, so it cannot
be append-only; :func:`grows_only_ddl` lets its ``size`` only grow (an append of ``n`` adds
``n``; taking the lock adds 0), and refuses deleting it once the ledger holds an entry (the
seeded empty head may be replaced, as ``db migrate-to`` does). On SQLite a ``size`` that is
not an integer is refused too (its type affinity would store ``'abc'``, which compares above
every number). Migration 0017 guards the action ledger's head, 0020 the issuance ledger's.
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


PG_HEAD_GUARD = "agentca_ledger_head_grows_only"
PG_HEAD_FUNCTION = f"""
CREATE FUNCTION {PG_HEAD_GUARD}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.size >= OLD.size THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND OLD.size = 0 THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'a ledger head only grows: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
"""The PostgreSQL trigger function of :func:`grows_only_ddl` (created once, migration 0017)."""


def grows_only_ddl(dialect: str, table: str) -> list[str]:
    """The statements that let a ledger head ``table`` (``id``, ``size``) only grow on
    ``dialect``; on PostgreSQL the function :data:`PG_HEAD_FUNCTION` must exist."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_grows_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_HEAD_GUARD}()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_GUARD}()",
            f"REVOKE DELETE, TRUNCATE ON {table} FROM PUBLIC",
        ]
    return [
        f"CREATE TRIGGER {table}_grows_only BEFORE UPDATE ON {table} "
        "WHEN NEW.id IS NOT OLD.id OR typeof(NEW.size) <> 'integer' OR NEW.size < OLD.size "
        "BEGIN SELECT RAISE(ABORT, 'a ledger head only grows: UPDATE refused'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN OLD.size <> 0 "
        "BEGIN SELECT RAISE(ABORT, 'a ledger head only grows: DELETE refused'); END",
    ]


def drop_grows_only_ddl(dialect: str, table: str) -> list[str]:
    """The statements that undo :func:`grows_only_ddl` (downgrades)."""
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_grows_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_grows_only",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
    ]
