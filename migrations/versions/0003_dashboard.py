"""dashboard: indexes for the jobs page filters and the finished-per-hour chart

Revision ID: 0003_dashboard
Revises: 0001
"""
from __future__ import annotations

from alembic import op

revision = "0003_dashboard"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (owner, id) and (status, id) exist since 0001; the model filter and the throughput window need theirs.
    op.create_index("ix_jobs_model_id", "jobs", ["model", "id"], unique=False)
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_model_id", table_name="jobs")
