"""Console ledger verifications, and an index on certificates.issued_at

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

``console_verify_jobs``: one row per whole-ledger verification the web console runs in a
background thread (decision 0054), so that the progress page works whichever worker answers
it. The job id is stored as its SHA-256 only and bound to the console session that started
it; rows are deleted 10 minutes after the start. ``ix_certificates_issued_at`` serves the
dashboard's certificates issued in the last hour and day, which scanned the table before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_verify_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("ledger", sa.String(length=32), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("checked", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("failed_seq", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["console_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_hash"),
    )
    with op.batch_alter_table("console_verify_jobs") as batch:
        batch.create_index(
            batch.f("ix_console_verify_jobs_session_id"), ["session_id"], unique=False
        )
        batch.create_index(
            batch.f("ix_console_verify_jobs_started_at"), ["started_at"], unique=False
        )
    with op.batch_alter_table("certificates") as batch:
        batch.create_index("ix_certificates_issued_at", ["issued_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_issued_at")
    with op.batch_alter_table("console_verify_jobs") as batch:
        batch.drop_index(batch.f("ix_console_verify_jobs_started_at"))
        batch.drop_index(batch.f("ix_console_verify_jobs_session_id"))
    op.drop_table("console_verify_jobs")
