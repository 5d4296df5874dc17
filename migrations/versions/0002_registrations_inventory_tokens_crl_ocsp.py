"""registrations inventory tokens crl ocsp

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=True),
        sa.Column("officer", sa.String(length=254), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("model_type", sa.String(length=128), nullable=False),
        sa.Column("allowed_scopes", sa.Text(), nullable=False),
        sa.Column("allowed_model_digests", sa.Text(), nullable=False),
        sa.Column("allowed_prompt_digests", sa.Text(), nullable=False),
        sa.Column("allowed_key_types", sa.Text(), nullable=False),
        sa.Column("max_validity_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("model_type", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest", "environment", name="uq_models_digest_env"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_digest"), ["digest"], unique=False)

    op.create_table(
        "scopes",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "crl_state",
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("crl_number", sa.Integer(), nullable=False),
        sa.Column("last_full_number", sa.Integer(), nullable=True),
        sa.Column("last_full_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_change_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"],
            ["issuers.id"],
        ),
        sa.PrimaryKeyConstraint("issuer_id"),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrollment_tokens_agent_id"), ["agent_id"], unique=False
        )

    op.create_table(
        "ocsp_signers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("key_label", sa.String(length=128), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"],
            ["issuers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_label"),
    )
    with op.batch_alter_table("ocsp_signers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ocsp_signers_issuer_id"), ["issuer_id"], unique=False)

    op.create_table(
        "status_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("serial_hex", sa.String(length=42), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"],
            ["issuers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_certificates_agent_id"), ["agent_id"], unique=False)
        batch_op.create_foreign_key("fk_certificates_agent_id", "agents", ["agent_id"], ["id"])


def downgrade() -> None:

    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_constraint("fk_certificates_agent_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_certificates_agent_id"))
        batch_op.drop_column("agent_id")

    op.drop_table("status_changes")
    with op.batch_alter_table("ocsp_signers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ocsp_signers_issuer_id"))

    op.drop_table("ocsp_signers")
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_tokens_agent_id"))

    op.drop_table("enrollment_tokens")
    op.drop_table("crl_state")
    op.drop_table("scopes")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_digest"))

    op.drop_table("models")
    op.drop_table("api_tokens")
    op.drop_table("agents")
