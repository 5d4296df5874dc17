"""Responder certificates can be retired before they expire

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

``ocsp_signers.retired_at`` (decision 0047): responders trust pre-signed answers of every
valid responder certificate of an issuer, not only the newest, so an operator who suspects a
responder key needs a way to stop that at once: ``agentca ocsp rotate-signer
--retire-previous`` sets it on the older signers. NULL on every existing row (nothing retired).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ocsp_signers") as batch:
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ocsp_signers") as batch:
        batch.drop_column("retired_at")
