"""Runs the Alembic migrations on the service's own engine (`stock-sync migrate`, and at start-up)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import is_mysql
from app.services.locks import engine_lock_name

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK = "stock_sync:migrate"


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(_config(connection), "head")


def _is_at_head(connection: sa.Connection) -> bool:
    heads = ScriptDirectory.from_config(_config(connection)).get_heads()
    # Read directly: Alembic's own MigrationContext logs its set-up on every use.
    if not sa.inspect(connection).has_table("alembic_version"):
        return False
    current = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    return set(current) == set(heads)


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Whether the database has been migrated to the newest revision (read only)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_is_at_head)


async def run_migrations(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision; safe when several processes start at once."""
    async with engine.connect() as conn:
        if is_mysql(conn):
            # Several replicas starting together must not run the same DDL twice.
            got = (
                await conn.execute(
                    sa.text("SELECT GET_LOCK(:name, 120)"),
                    {"name": engine_lock_name(MIGRATION_LOCK, conn)},
                )
            ).scalar()
            if got != 1:
                raise RuntimeError("another process has held the migration lock for 120 s")
            await conn.commit()
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if is_mysql(conn):
                await conn.execute(
                    sa.text("SELECT RELEASE_LOCK(:name)"),
                    {"name": engine_lock_name(MIGRATION_LOCK, conn)},
                )
                await conn.commit()
