"""hub namespace grants on API keys; the key that created each job and trigger

Revision ID: 0006_namespaces
Revises: 0005_priority_idempotency

Jobs and triggers from before this revision have no key_id: they publish with their owner's rights
alone (the owner's namespace), whichever key created them (hubtune.namespaces.rights_for).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_namespaces"
down_revision = "0005_priority_idempotency"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("namespaces", JSON, nullable=False, server_default=sa.text("'[]'")))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))
    with op.batch_alter_table("hub_triggers") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hub_triggers") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("namespaces")
