"""Migration 0002: the watcher's tables and `order_sync` on an empty database, on the seed
application's MariaDB schema, and on a database the previous release (0001) migrated."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from app.db import create_engine, is_mysql
from app.migrate import run_migrations
from app.models import SEED_CHANGE_TYPES, ChangeType
from app.services.stock import StockObservation, write_observations
from tests.conftest import (
    MYSQL_SKIP_REASON,
    TEST_MYSQL_URL,
    mysql_database_url,
    recreate_mysql_database,
)
from tests.orders.support import WATCHER_TABLES
from tests.test_migrations import SEED_SQL, drop_mysql_database, load_sql_file

ORDER_COLUMNS = ("order_id", "order_item_id")


@pytest.fixture(params=["sqlite", "mysql"])
async def blank(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}")
        yield engine
        await engine.dispose()
        return
    if TEST_MYSQL_URL is None:
        pytest.skip(MYSQL_SKIP_REASON)
    url = mysql_database_url(f"orders_migration_{os.getpid()}")
    await recreate_mysql_database(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()
    await drop_mysql_database(url)


async def columns_of(engine: AsyncEngine) -> dict[str, set[str]]:
    def read(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        return {
            table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()
        }

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def change_types(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.connect() as conn:
        column_type = (
            await conn.execute(
                sa.text(
                    "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                    "DATABASE() AND TABLE_NAME = 'marketplace_stock_history' "
                    "AND COLUMN_NAME = 'change_type'"
                )
            )
        ).scalar_one()
    return tuple(re.findall(r"'((?:[^']|'')*)'", str(column_type)))


async def assert_watcher_schema(engine: AsyncEngine) -> None:
    """The tables with every column, `order_sync` allowed, and an order_sync row written."""
    present = await columns_of(engine)
    for name in WATCHER_TABLES:
        table = SQLModel.metadata.tables[name]
        assert set(table.columns.keys()) <= present.get(name, set()), name
    assert set(ORDER_COLUMNS) <= present["marketplace_stock_history"]
    if is_mysql(engine):
        assert ChangeType.ORDER_SYNC.value in await change_types(engine)
    async with engine.begin() as conn:
        variation_id = (
            await conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM variation"))
        ).scalar_one()
        await conn.execute(sa.text("INSERT INTO variation (id) VALUES (:id)"), {"id": variation_id})
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(
                    variation_id=variation_id, quantity=3, order_id=41, order_item_id=42
                )
            ],
            change_type=ChangeType.ORDER_SYNC,
        )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT change_type, order_id, order_item_id FROM marketplace_stock_history "
                    "WHERE variation_id = :id"
                ),
                {"id": variation_id},
            )
        ).one()
    assert tuple(row) == ("order_sync", 41, 42)


async def test_an_empty_database_gets_the_watcher_tables_and_order_sync(
    blank: AsyncEngine,
) -> None:
    await run_migrations(blank)

    await assert_watcher_schema(blank)


async def test_a_database_the_previous_release_migrated_gets_the_watcher_tables_and_order_sync(
    blank: AsyncEngine,
) -> None:
    """0001 as released: no watcher tables, no order columns in the history, no order_sync."""
    await run_migrations(blank)
    async with blank.begin() as conn:
        for name in WATCHER_TABLES:
            await conn.execute(sa.text(f"DROP TABLE {name}"))
        for column in ORDER_COLUMNS:
            await conn.execute(
                sa.text(f"ALTER TABLE marketplace_stock_history DROP COLUMN {column}")
            )
        if is_mysql(conn):
            released = [v for v in await change_types(blank) if v != ChangeType.ORDER_SYNC.value]
            values = ", ".join(f"'{value}'" for value in released)
            await conn.execute(
                sa.text(
                    f"ALTER TABLE marketplace_stock_history MODIFY change_type ENUM({values}) NOT NULL"
                )
            )
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    assert not set(WATCHER_TABLES) & set(await columns_of(blank))

    await run_migrations(blank)

    await assert_watcher_schema(blank)


async def test_the_seed_schema_gets_the_watcher_tables_and_order_sync_after_its_own_values(
    tmp_path: Path,
) -> None:
    if TEST_MYSQL_URL is None:
        pytest.skip(MYSQL_SKIP_REASON)
    url = mysql_database_url(f"orders_seed_{os.getpid()}")
    await recreate_mysql_database(url)
    engine = create_engine(url)
    try:
        await load_sql_file(engine, SEED_SQL)
        assert not set(WATCHER_TABLES) & set(await columns_of(engine))

        await run_migrations(engine)

        assert (await change_types(engine))[: len(SEED_CHANGE_TYPES)] == SEED_CHANGE_TYPES
        await assert_watcher_schema(engine)
    finally:
        await engine.dispose()
        await drop_mysql_database(url)
