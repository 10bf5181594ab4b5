"""hub plugin: hub credentials, triggers, deliveries, notifications; hub dataset refs on jobs

Revision ID: 0002_hub
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_hub"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # hf://datasets/org/name@revision/path.jsonl does not fit the 40 characters of a file id.
        batch_op.alter_column("training_file", existing_type=sa.String(length=40), type_=sa.String(length=512),
                              existing_nullable=False)
        batch_op.alter_column("validation_file", existing_type=sa.String(length=40), type_=sa.String(length=512),
                              existing_nullable=True)
        batch_op.add_column(sa.Column("dataset_revisions", JSON, nullable=True))
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=2048), nullable=True))

    op.create_table(
        "hub_credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_credentials")),
    )
    op.create_index("ix_hub_credentials_owner_id", "hub_credentials", ["owner", "id"], unique=False)

    op.create_table(
        "hub_triggers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("repo_id", sa.String(length=128), nullable=False),
        sa.Column("path_pattern", sa.String(length=256), nullable=True),
        sa.Column("template", JSON, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_triggers")),
    )
    op.create_index("ix_hub_triggers_repo_id", "hub_triggers", ["repo_id"], unique=False)
    op.create_index("ix_hub_triggers_owner_id", "hub_triggers", ["owner", "id"], unique=False)

    op.create_table(
        "hub_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.String(length=40), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["trigger_id"], ["hub_triggers.id"], name=op.f("fk_hub_deliveries_trigger_id_hub_triggers"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_deliveries")),
        sa.UniqueConstraint("trigger_id", "head_sha", name="uq_hub_deliveries_trigger_sha"),
    )

    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_notifications_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_job_id", "notifications", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notifications_job_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("hub_deliveries")
    op.drop_index("ix_hub_triggers_owner_id", table_name="hub_triggers")
    op.drop_index("ix_hub_triggers_repo_id", table_name="hub_triggers")
    op.drop_table("hub_triggers")
    op.drop_index("ix_hub_credentials_owner_id", table_name="hub_credentials")
    op.drop_table("hub_credentials")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("webhook_url")
        batch_op.drop_column("dataset_revisions")
        batch_op.alter_column("validation_file", existing_type=sa.String(length=512), type_=sa.String(length=40),
                              existing_nullable=True)
        batch_op.alter_column("training_file", existing_type=sa.String(length=512), type_=sa.String(length=40),
                              existing_nullable=False)
