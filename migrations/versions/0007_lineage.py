"""jobs.lineage: the earlier job or checkpoint a job continues from

Revision ID: 0007_lineage
Revises: 0006_namespaces

A job whose `model` is one of its owner's fine-tuned models or checkpoints records its parent and the
base it trains on (hubtune.lineage). Jobs from before this revision have none: they started from a
hub model.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_lineage"
down_revision = "0006_namespaces"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lineage", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lineage")
