"""Inventory entries record the scheme of their model digest

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

``models.digest_scheme``: ``agentca-manifest-v1`` (agentca's weights manifest, every entry
made before) or ``oms-v1`` (the OpenSSF Model Signing root digest, decision 0049). The
enrollment policy certifies a model digest only under the scheme its entry was registered
with, so a CSR cannot relabel an OMS-registered digest as a manifest digest or back.
Existing rows get ``agentca-manifest-v1``: they stay usable exactly as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column(
                "digest_scheme",
                sa.String(32),
                nullable=False,
                server_default="agentca-manifest-v1",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("digest_scheme")
