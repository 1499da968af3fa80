"""Alembic environment: runs against the connection `runtime.store.migrate` hands it."""

from __future__ import annotations

from alembic import context

from runtime.store import access_models  # noqa: F401  (registers its tables on Base)
from runtime.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
