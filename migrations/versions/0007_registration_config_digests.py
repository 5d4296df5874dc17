"""Registrations: allowed config digests, and a look-alike-proof key for agent names

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

``allowed_config_digests`` starts empty for existing registrations, so from this revision on
they refuse a CSR that declares a config digest (none of them was ever checked before; an
operator lists the digests to accept with PATCH /v1/agents/<name>).

``name_key`` is ``ca.names.identifier_key(name)`` (NFKC, UTS #39 confusables, case folding)
under a unique constraint, so ``agenta`` cannot be registered next to ``AgentA``, even by two
concurrent requests. Existing rows that already collide are kept: every row after the first
(by id) gets ``<key>#<id>``, which no new name can produce, and the collision is reported.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from ca.names import identifier_key

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("allowed_config_digests", sa.Text(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("name_key", sa.String(length=160), nullable=True))
    agents = sa.table(
        "agents", sa.column("id", sa.Integer()), sa.column("name"), sa.column("name_key")
    )
    bind = op.get_bind()
    seen: dict[str, str] = {}
    for row_id, name in bind.execute(sa.select(agents.c.id, agents.c.name).order_by(agents.c.id)):
        key = identifier_key(name)
        if key in seen:
            log.warning(
                "agent %r looks like %r: both kept, new look-alikes refused", name, seen[key]
            )
            key = f"{key}#{row_id}"
        else:
            seen[key] = name
        bind.execute(agents.update().where(agents.c.id == row_id).values(name_key=key))
    with op.batch_alter_table("agents") as batch:
        batch.alter_column("name_key", existing_type=sa.String(length=160), nullable=False)
        batch.create_unique_constraint("uq_agents_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint("uq_agents_name_key", type_="unique")
        batch.drop_column("name_key")
        batch.drop_column("allowed_config_digests")
