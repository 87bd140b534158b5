"""Alembic environment: always called by `revenipe.storage.database.migrate_to_latest`,
which hands over an open connection (no alembic.ini, no URL of its own)."""

from __future__ import annotations

from alembic import context

from revenipe.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through revenipe.storage.database.migrate_to_latest")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
