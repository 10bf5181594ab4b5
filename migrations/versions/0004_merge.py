"""merge the hub and dashboard branches of the schema

Revision ID: 0004_merge
Revises: 0002_hub, 0003_dashboard
"""
from __future__ import annotations

revision = "0004_merge"
down_revision = ("0002_hub", "0003_dashboard")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
