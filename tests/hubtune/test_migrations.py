"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from hubtune.db import engine_for
from hubtune.migrate import alembic_config
from hubtune.models import Base


def test_one_head():
    # Branches that were developed side by side must be merged before a release.
    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


def test_migrated_schema_matches_the_models(db_url):
    with engine_for(db_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"render_as_batch": True, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
