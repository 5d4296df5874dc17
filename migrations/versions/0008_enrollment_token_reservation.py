"""Enrollment tokens released by failed reservations

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

``certificates.enrollment_token_id`` records the enrollment token a reservation consumed, so a
reservation that ends ``failed`` (signing or storing failed, or reconciliation after a crash)
releases its token in the same transaction (docs/decisions/0014-crash-safe-enrollment.md).
``uq_certificates_enrollment_token_live`` (unique among rows that have not failed) makes the
database itself refuse a second live certificate for one token. ``ix_certificates_status_
created_at`` serves the reconciliation scan. Reservations made before this revision have no
token recorded: their tokens stay used, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'failed'")


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("enrollment_token_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_certificates_enrollment_token_id",
            "enrollment_tokens",
            ["enrollment_token_id"],
            ["id"],
        )
    op.create_index(
        "uq_certificates_enrollment_token_live",
        "certificates",
        ["enrollment_token_id"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index("ix_certificates_status_created_at", "certificates", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_certificates_status_created_at", table_name="certificates")
    op.drop_index("uq_certificates_enrollment_token_live", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_constraint("fk_certificates_enrollment_token_id", type_="foreignkey")
        batch.drop_column("enrollment_token_id")
