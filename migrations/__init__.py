"""Alembic environment and versions, applied by `hubtune db upgrade` and at start-up."""
