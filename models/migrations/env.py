"""Alembic environment: migrations run on the connection the application hands over (async engine, run_sync)."""

from alembic import context

import models  # noqa: F401  (registers every table)
from models.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `identity-bot db upgrade` (models.db.Database.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
