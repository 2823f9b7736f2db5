"""Alembic environment: always run through app.migrate, which hands over an open connection."""

from alembic import context
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers the tables on the metadata)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
