"""OCSP answers signed ahead of demand, shared by every responder

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``ocsp_responses``: one pre-signed answer per certificate (decision 0038), written by the CA
side's presigner and read by the responders (the OCSP role gets SELECT on it). A new table:
existing data is untouched; a responder without rows signs on demand as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ocsp_responses",
        sa.Column("issuer_id", sa.Integer, sa.ForeignKey("issuers.id"), primary_key=True),
        sa.Column("serial_hex", sa.String(42), primary_key=True),
        sa.Column("cert_id_der", sa.LargeBinary, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("cert_status", sa.String(16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.Integer, nullable=True),
        sa.Column("signer_id", sa.Integer, nullable=False),
        sa.Column("this_update", sa.BigInteger, nullable=False),
        sa.Column("next_update", sa.BigInteger, nullable=False),
        sa.Column("refresh_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ocsp_responses_refresh_at", "ocsp_responses", ["refresh_at"])


def downgrade() -> None:
    op.drop_index("ix_ocsp_responses_refresh_at", table_name="ocsp_responses")
    op.drop_table("ocsp_responses")
