"""issuers and certificates

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "issuers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("key_label", sa.String(length=128), nullable=False),
        sa.Column("key_type", sa.String(length=16), nullable=False),
        sa.Column("serial_hex", sa.String(length=42), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("name_hash_sha1", sa.LargeBinary(length=20), nullable=False),
        sa.Column("key_hash_sha1", sa.LargeBinary(length=20), nullable=False),
        sa.Column("name_hash_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_hash_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["issuers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_label"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("serial_hex", sa.String(length=42), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agent_name", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("public_key_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("model_type", sa.String(length=128), nullable=False),
        sa.Column("model_digest", sa.String(length=128), nullable=False),
        sa.Column("prompt_digest", sa.String(length=128), nullable=False),
        sa.Column("config_digest", sa.String(length=128), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("officer", sa.String(length=254), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=True),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.Integer(), nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["issuer_id"],
            ["issuers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint_sha256"),
        sa.UniqueConstraint("issuer_id", "serial_hex", name="uq_certificates_issuer_serial"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index("ix_certificates_agent_name", ["agent_name"], unique=False)
        batch_op.create_index("ix_certificates_model_digest", ["model_digest"], unique=False)
        batch_op.create_index("ix_certificates_officer", ["officer"], unique=False)
        batch_op.create_index("ix_certificates_prompt_digest", ["prompt_digest"], unique=False)
        batch_op.create_index(
            "ix_certificates_status_not_after", ["status", "not_after"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_status_not_after")
        batch_op.drop_index("ix_certificates_prompt_digest")
        batch_op.drop_index("ix_certificates_officer")
        batch_op.drop_index("ix_certificates_model_digest")
        batch_op.drop_index("ix_certificates_agent_name")

    op.drop_table("certificates")
    op.drop_table("issuers")
