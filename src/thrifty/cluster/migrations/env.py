"""Alembic environment: runs migrations on the connection the store hands over."""

from alembic import context

from thrifty.cluster.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes its connection
    raise RuntimeError("run migrations through thrifty.cluster.store.Store, not the alembic CLI")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
