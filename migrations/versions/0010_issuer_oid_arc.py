"""Issuers record their OID arc, and the previous arcs they still accept

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

The agent OID arc becomes a property of the CA (decision 0022). ``issuers.oid_arc`` is the
arc the CA issues under; every existing issuer gets the legacy UUID arc
``2.25.40108673889173621464063845417476256764``, because the certificates it has issued carry
it (a CA moves with ``agentca oid-arc set``). ``issuers.previous_oid_arcs`` (JSON, empty for
none) lists arcs used before and until when they stay accepted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LEGACY_ARC = "2.25.40108673889173621464063845417476256764"


def upgrade() -> None:
    with op.batch_alter_table("issuers") as batch:
        batch.add_column(
            sa.Column("oid_arc", sa.String(length=200), nullable=False, server_default=LEGACY_ARC)
        )
        batch.add_column(
            sa.Column("previous_oid_arcs", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("issuers") as batch:  # new rows always name their arc
        batch.alter_column("oid_arc", existing_type=sa.String(length=200), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("issuers") as batch:
        batch.drop_column("previous_oid_arcs")
        batch.drop_column("oid_arc")
