"""The issuance ledger's head only grows, as the action ledger's does (decision 0056).

Revision ID: 0020
Revises: 0019

``ledger_head.size`` is the issuance ledger's next ``seq``; every append adds to it. It had
no guard: an ``UPDATE ledger_head SET size = 0`` (or a ``DELETE``) by any role that may
append would make the next entries reuse numbers. Now it gets the same triggers as
``action_ledger_head`` (``ca.store.append_only.grows_only_ddl``). On SQLite both heads'
triggers are re-created so that a ``size`` that is not an integer is refused as well.
"""

from __future__ import annotations

from alembic import op

from ca.store.append_only import drop_grows_only_ddl, grows_only_ddl

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in drop_grows_only_ddl(dialect, "action_ledger_head"):
            op.execute(statement)
        for statement in grows_only_ddl(dialect, "action_ledger_head"):
            op.execute(statement)
    for statement in grows_only_ddl(dialect, "ledger_head"):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in drop_grows_only_ddl(dialect, "ledger_head"):
        op.execute(statement)
