"""The action ledger: gateway decisions, their checkpoints, and the gateways that ship them

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Issue 18, decision 0056. ``action_records`` is append-only in the database (the same guard as
``ledger_entries``), numbered gap-free by the single ``action_ledger_head`` row and identified
per gateway by ``(gateway, gateway_seq)``. ``action_checkpoints`` (signed by the audit key) are
append-only too. ``gateway_checkpoints`` settle once: a trigger lets ``status`` move from
``pending`` to ``consistent`` or ``inconsistent`` and refuses every other change and any delete.
``action_ledger_head.size`` only grows. A ``gateways`` row is never deleted and its name, key
and creation time never change: the only change is disabling it (``disabled_at`` from NULL to
a time, once), so every change of who may ship, and with which key, is a ledger event
(``gateway.registered``, ``gateway.disabled``), never a silent ``UPDATE``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ca.store.append_only import (
    PG_HEAD_FUNCTION,
    append_only_ddl,
    drop_append_only_ddl,
    drop_grows_only_ddl,
    grows_only_ddl,
)

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

APPEND_ONLY = ("action_records", "action_checkpoints")

_SETTLED_COLUMNS = (
    "id",
    "gateway",
    "tree_size",
    "root_hash",
    "timestamp",
    "signature",
    "key_id",
    "received_at",
)
PG_SETTLE_ONCE = [
    """
    CREATE FUNCTION agentca_gateway_checkpoint_settles_once() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.status = 'pending'
           AND NEW.status IN ('pending', 'consistent', 'inconsistent')
           AND ROW(NEW.id, NEW.gateway, NEW.tree_size, NEW.root_hash, NEW.timestamp,
                   NEW.signature, NEW.key_id, NEW.received_at)
               IS NOT DISTINCT FROM
               ROW(OLD.id, OLD.gateway, OLD.tree_size, OLD.root_hash, OLD.timestamp,
                   OLD.signature, OLD.key_id, OLD.received_at) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'a gateway checkpoint settles once: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER gateway_checkpoints_settle_once BEFORE UPDATE OR DELETE
    ON gateway_checkpoints FOR EACH ROW
    EXECUTE FUNCTION agentca_gateway_checkpoint_settles_once()
    """,
    """
    CREATE TRIGGER gateway_checkpoints_no_truncate BEFORE TRUNCATE ON gateway_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION agentca_ledger_is_append_only()
    """,
    "REVOKE DELETE, TRUNCATE ON gateway_checkpoints FROM PUBLIC",
]
_CHANGED = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _SETTLED_COLUMNS)
SQLITE_SETTLE_ONCE = [
    f"""
    CREATE TRIGGER gateway_checkpoints_settle_once BEFORE UPDATE ON gateway_checkpoints
    WHEN OLD.status <> 'pending'
         OR NEW.status NOT IN ('pending', 'consistent', 'inconsistent') OR {_CHANGED}
    BEGIN SELECT RAISE(ABORT, 'a gateway checkpoint settles once: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER gateway_checkpoints_no_delete BEFORE DELETE ON gateway_checkpoints
    BEGIN SELECT RAISE(ABORT, 'a gateway checkpoint settles once: DELETE refused'); END
    """,
]

_FIXED_COLUMNS = ("id", "name", "public_key_der", "key_id", "created_at")
_NEW = ", ".join(f"NEW.{c}" for c in _FIXED_COLUMNS)
_OLD = ", ".join(f"OLD.{c}" for c in _FIXED_COLUMNS)
PG_GATEWAY_FIXED = [
    f"""
    CREATE FUNCTION agentca_gateway_only_disabled() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND ROW({_NEW}) IS NOT DISTINCT FROM ROW({_OLD})
           AND (OLD.disabled_at IS NULL OR NEW.disabled_at IS NOT DISTINCT FROM OLD.disabled_at)
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'a gateway registration only changes by being disabled: % refused',
            TG_OP USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER gateways_only_disabled BEFORE UPDATE OR DELETE ON gateways
    FOR EACH ROW EXECUTE FUNCTION agentca_gateway_only_disabled()
    """,
    """
    CREATE TRIGGER gateways_no_truncate BEFORE TRUNCATE ON gateways
    FOR EACH STATEMENT EXECUTE FUNCTION agentca_ledger_is_append_only()
    """,
    "REVOKE DELETE, TRUNCATE ON gateways FROM PUBLIC",
]
_FIXED_CHANGED = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FIXED_COLUMNS)
SQLITE_GATEWAY_FIXED = [
    f"""
    CREATE TRIGGER gateways_only_disabled BEFORE UPDATE ON gateways
    WHEN {_FIXED_CHANGED}
         OR (OLD.disabled_at IS NOT NULL AND NEW.disabled_at IS NOT OLD.disabled_at)
    BEGIN
        SELECT RAISE(ABORT,
            'a gateway registration only changes by being disabled: UPDATE refused');
    END
    """,
    """
    CREATE TRIGGER gateways_no_delete BEFORE DELETE ON gateways
    BEGIN
        SELECT RAISE(ABORT,
            'a gateway registration only changes by being disabled: DELETE refused');
    END
    """,
]


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key_der", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_gateways_key_id"), "gateways", ["key_id"], unique=False)
    op.create_table(
        "action_records",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("gateway_seq", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.String(length=32), nullable=False),
        sa.Column("agent", sa.String(length=1024), nullable=True),
        sa.Column("serial", sa.String(length=1024), nullable=True),
        sa.Column("officer", sa.String(length=1024), nullable=True),
        sa.Column("method", sa.String(length=1024), nullable=False),
        sa.Column("route", sa.String(length=1024), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("scope", sa.String(length=1024), nullable=True),
        sa.Column("failed_check", sa.String(length=1024), nullable=True),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("gateway", "gateway_seq", name="uq_action_records_gateway_seq"),
    )
    for column in ("time", "outcome"):
        op.create_index(op.f(f"ix_action_records_{column}"), "action_records", [column])
    # Equality filters on strings of up to 1,024 characters (4 KiB of UTF-8): a B-tree entry
    # is limited to about 2.7 KB on PostgreSQL, a hash index entry is not.
    for column in ("agent", "officer", "route"):
        op.create_index(
            op.f(f"ix_action_records_{column}"),
            "action_records",
            [column],
            postgresql_using="hash",
        )
    op.create_table(
        "action_ledger_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "action_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("signer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["signer_id"], ["audit_signers.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_action_checkpoints_tree_size"), "action_checkpoints", ["tree_size"])
    op.create_table(
        "gateway_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_gateway_checkpoints_gateway"), "gateway_checkpoints", ["gateway"])
    op.create_index(op.f("ix_gateway_checkpoints_status"), "gateway_checkpoints", ["status"])
    op.execute("INSERT INTO action_ledger_head (id, size) VALUES (1, 0)")
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in append_only_ddl(dialect, table):
            op.execute(statement)
    for statement in PG_SETTLE_ONCE if dialect == "postgresql" else SQLITE_SETTLE_ONCE:
        op.execute(statement)
    for statement in PG_GATEWAY_FIXED if dialect == "postgresql" else SQLITE_GATEWAY_FIXED:
        op.execute(statement)
    if dialect == "postgresql":
        op.execute(PG_HEAD_FUNCTION)
    for statement in grows_only_ddl(dialect, "action_ledger_head"):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in drop_append_only_ddl(dialect, table):
            op.execute(statement)
    for statement in drop_grows_only_ddl(dialect, "action_ledger_head"):
        op.execute(statement)
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS gateways_only_disabled ON gateways")
        op.execute("DROP TRIGGER IF EXISTS gateways_no_truncate ON gateways")
        op.execute("DROP FUNCTION IF EXISTS agentca_gateway_only_disabled()")
        op.execute("DROP FUNCTION IF EXISTS agentca_ledger_head_grows_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS gateways_only_disabled")
        op.execute("DROP TRIGGER IF EXISTS gateways_no_delete")
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS gateway_checkpoints_settle_once ON gateway_checkpoints")
        op.execute("DROP TRIGGER IF EXISTS gateway_checkpoints_no_truncate ON gateway_checkpoints")
        op.execute("DROP FUNCTION IF EXISTS agentca_gateway_checkpoint_settles_once()")
    else:
        op.execute("DROP TRIGGER IF EXISTS gateway_checkpoints_settle_once")
        op.execute("DROP TRIGGER IF EXISTS gateway_checkpoints_no_delete")
    for table in ("gateway_checkpoints", "action_checkpoints", "action_ledger_head"):
        op.drop_table(table)
    op.drop_table("action_records")
    op.drop_table("gateways")
