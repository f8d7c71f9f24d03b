"""Alembic environment: the connection is handed over by orchestrator.catalog.db (no alembic.ini needed)."""

from alembic import context

from orchestrator.catalog.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
