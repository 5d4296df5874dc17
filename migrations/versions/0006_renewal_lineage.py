"""Renewal lineage and single-use renewal proofs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``renewed_from_id`` links a renewal to the certificate it replaced, ``lineage_id`` to the first
certificate of the chain (NULL on that first certificate), and ``renewal_proof_sha256`` (unique)
records the SHA-256 of the accepted renewal statement so a proof is used at most once.
Certificates issued before this revision have no lineage: each is its own root.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("renewed_from_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("lineage_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("renewal_proof_sha256", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            "fk_certificates_renewed_from_id", "certificates", ["renewed_from_id"], ["id"]
        )
        batch.create_foreign_key(
            "fk_certificates_lineage_id", "certificates", ["lineage_id"], ["id"]
        )
        batch.create_unique_constraint(
            "uq_certificates_renewal_proof_sha256", ["renewal_proof_sha256"]
        )
        batch.create_index("ix_certificates_renewed_from_id", ["renewed_from_id"], unique=False)
        batch.create_index("ix_certificates_lineage_id", ["lineage_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_lineage_id")
        batch.drop_index("ix_certificates_renewed_from_id")
        batch.drop_constraint("uq_certificates_renewal_proof_sha256", type_="unique")
        batch.drop_constraint("fk_certificates_lineage_id", type_="foreignkey")
        batch.drop_constraint("fk_certificates_renewed_from_id", type_="foreignkey")
        batch.drop_column("renewal_proof_sha256")
        batch.drop_column("lineage_id")
        batch.drop_column("renewed_from_id")
