"""Alembic environment: runs on the connection `hub.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from hub.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `storelink-hub migrate`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
