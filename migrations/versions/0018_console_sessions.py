"""Web console sessions

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

``console_sessions``: one row per console sign-in (decision 0054). The session id is stored
as its SHA-256 only; ``api_token_id`` binds the session to the API token it was exchanged
for, so a revoked or expired token ends its sessions; ``ended_at`` / ``ended_reason`` record
sign-out and timeouts (rows are never deleted).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("api_token_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["api_token_id"], ["api_tokens.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_hash"),
    )
    with op.batch_alter_table("console_sessions") as batch:
        batch.create_index(
            batch.f("ix_console_sessions_api_token_id"), ["api_token_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_index(batch.f("ix_console_sessions_api_token_id"))
    op.drop_table("console_sessions")
