"""A runtime attestation statement yields one certificate (decision 0051, "Changed").

Revision ID: 0021
Revises: 0020

``certificates.attestation_sha256`` is the SHA-256 (hex) of the signed claims of the
attestation a certificate was issued on, the value its ``AgentAttestation`` extension records.
``uq_certificates_attestation_live`` (unique among rows that have not failed) makes the
database refuse a second live certificate on one statement: a statement used once cannot
enroll the same key again within its window, with another token or as a renewal. A reservation
that fails releases the statement with its token, so the agent's retry still succeeds.
Certificates issued before this revision have no value recorded (their statements have
expired: a statement lives at most an hour).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'failed'")


def upgrade() -> None:
    # a plain ADD COLUMN (no batch copy): SQLite keeps the table and its triggers
    op.add_column("certificates", sa.Column("attestation_sha256", sa.String(64), nullable=True))
    op.create_index(
        "uq_certificates_attestation_live",
        "certificates",
        ["attestation_sha256"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_certificates_attestation_live", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("attestation_sha256")
