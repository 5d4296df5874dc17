"""Enrollment tokens can be revoked before they are used

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

``enrollment_tokens.revoked_at`` / ``revoked_by``: an operator withdraws a token that was
handed out by mistake or leaked (``agentca token revoke``); a revoked token never enrolls.
Both columns are nullable and new, so existing rows stay usable as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_by", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.drop_column("revoked_by")
        batch.drop_column("revoked_at")
