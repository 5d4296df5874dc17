"""Certificate status is a typed column: the database refuses values outside CertStatus

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

``certificates.status`` stays a VARCHAR(16) holding the same four values (``pending``,
``issued``, ``revoked``, ``failed``), so existing rows and the OCSP and CRL queries are
unchanged; the model maps it to ``ca.records.CertStatus`` and this revision adds the CHECK
constraint that makes the database refuse anything else. A row holding another value makes
the upgrade fail rather than be rewritten.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ck_certificates_status"
CONDITION = "status IN ('pending', 'issued', 'revoked', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.create_check_constraint(NAME, CONDITION)


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_constraint(NAME, type_="check")
