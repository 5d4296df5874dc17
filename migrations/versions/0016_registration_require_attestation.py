"""A registration can require a runtime attestation at enrollment and renewal

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

``agents.require_attestation``: when true, the enrollment policy issues a certificate only
for a CSR that comes with a valid attestation of its key and provenance from a configured
attestor (decision 0051). Existing registrations get false: they keep enrolling as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column(
                "require_attestation", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("require_attestation")
