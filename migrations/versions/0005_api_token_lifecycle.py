"""API token lifecycle: expiry, who created and revoked a token, last use

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01

Tokens created before this revision never expired; they get an expiry 90 days (the default
lifetime) after the upgrade, so existing clients keep working and are renewed by then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

LEGACY_TTL = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=160), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_by", sa.String(length=160), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table(
        "api_tokens",
        sa.column("expires_at", sa.DateTime(timezone=True)),
        sa.column("created_by", sa.String()),
    )
    expires = datetime.now(UTC) + LEGACY_TTL
    if op.get_bind().dialect.name == "sqlite":  # naive UTC there, as ca.store.types stores it
        expires = expires.replace(tzinfo=None)
    op.execute(tokens.update().values(expires_at=expires, created_by="unknown (before 0005)"))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("created_by", existing_type=sa.String(length=160), nullable=False)
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("revoked_by")
        batch.drop_column("expires_at")
        batch.drop_column("created_by")
