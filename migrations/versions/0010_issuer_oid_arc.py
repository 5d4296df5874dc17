"""Issuers record their OID arc, and the previous arcs they still accept

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

The agent OID arc becomes a property of the CA (decision 0022). ``issuers.oid_arc`` is the
arc the CA issues under; ``issuers.previous_oid_arcs`` (JSON, empty for none) lists arcs used
before and until when they stay accepted.

Existing issuers get the legacy UUID arc ``2.25.40108673889173621464063845417476256764``,
because the certificates they issued carry it. One exception: a CA initialised after the
default moved to the RFC 5612 example arc (the same day as this revision) has issued under
that arc; when the issuing CA's newest certificate carries the example arc's provenance
extension, every issuer gets the example arc, and the legacy arc stays accepted until the
last certificate of that CA expires. The server default only fills existing rows: the CA
always names the arc of a row it writes (on SQLite, dropping a default would rebuild the
referenced ``issuers`` table, which its foreign keys refuse).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LEGACY_ARC = "2.25.40108673889173621464063845417476256764"
EXAMPLE_ARC = "1.3.6.1.4.1.32473.2026"
# DER of the OBJECT IDENTIFIER 1.3.6.1.4.1.32473.2026.1.1 (id-agentca-provenance, example arc)
EXAMPLE_PROVENANCE_DER = bytes.fromhex("060c2b0601040181fd598f6a0101")


def upgrade() -> None:
    with op.batch_alter_table("issuers") as batch:
        batch.add_column(
            sa.Column("oid_arc", sa.String(length=200), nullable=False, server_default=LEGACY_ARC)
        )
        batch.add_column(
            sa.Column("previous_oid_arcs", sa.Text(), nullable=False, server_default="")
        )
    _example_arc_cas()


def _example_arc_cas() -> None:
    """Issuers whose newest agent certificate is under the example arc are recorded so."""
    bind = op.get_bind()
    issuers = sa.table(
        "issuers",
        sa.column("id", sa.Integer()),
        sa.column("role", sa.String()),
        sa.column("oid_arc", sa.String()),
        sa.column("previous_oid_arcs", sa.Text()),
    )
    certs = sa.table(
        "certificates",
        sa.column("id", sa.Integer()),
        sa.column("issuer_id", sa.Integer()),
        sa.column("certificate_der", sa.LargeBinary()),
        sa.column("not_after", sa.DateTime()),
    )
    issuing = bind.execute(sa.select(issuers.c.id).where(issuers.c.role == "issuing")).scalars()
    for issuer_id in list(issuing):
        newest = bind.execute(
            sa.select(certs.c.certificate_der)
            .where(certs.c.issuer_id == issuer_id, certs.c.certificate_der.is_not(None))
            .order_by(certs.c.id.desc())
            .limit(1)
        ).scalar()
        if newest is None or EXAMPLE_PROVENANCE_DER not in bytes(newest):
            continue
        last = bind.execute(
            sa.select(sa.func.max(certs.c.not_after)).where(certs.c.issuer_id == issuer_id)
        ).scalar()
        previous = ""
        if last is not None:
            until = last if isinstance(last, datetime) else datetime.fromisoformat(str(last))
            until = until if until.tzinfo else until.replace(tzinfo=UTC)
            previous = json.dumps(
                [{"arc": LEGACY_ARC, "until": until.isoformat()}], separators=(",", ":")
            )
        bind.execute(issuers.update().values(oid_arc=EXAMPLE_ARC, previous_oid_arcs=previous))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 too): a batch rebuild would drop the
    # issuers table, which the certificates' foreign keys refuse once a CA exists
    op.drop_column("issuers", "previous_oid_arcs")
    op.drop_column("issuers", "oid_arc")
