"""Inventory entries record the OMS signature that admitted them

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

``models.signed_by`` (the configured producer whose key or CA verified the bundle),
``signature_method`` (``key`` or ``certificate``), ``signer`` (the key's SHA-256 or the leaf
certificate's subject), ``signature_sha256`` and ``signature_bundle`` (the bundle as given,
so anyone can verify it again). All empty for an unsigned entry (every entry made before).
Decision 0052.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("signed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("signature_method", sa.String(16), nullable=True))
        batch.add_column(sa.Column("signer", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signature_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("signature_bundle", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        for name in (
            "signature_bundle",
            "signature_sha256",
            "signer",
            "signature_method",
            "signed_by",
        ):
            batch.drop_column(name)
