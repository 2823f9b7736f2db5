"""Migration 0004 on a database the previous release (0003) migrated and filled: the order lines
keyed by (marketplace_id, line_id) and the update budget's rows per marketplace, every row kept
as marketplace 1's, on SQLite and MariaDB."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from app.db import is_mysql
from app.migrate import run_migrations
from tests.orders.test_migration import blank

__all__ = ["blank"]

ORDER_LINES = "backmarket_order_lines"
UPDATES = "backmarket_listing_updates"
BUDGET_INDEX = "ix_backmarket_listing_updates_marketplace_sent"
SEEN = datetime(2026, 12, 30, 10, 0, 0)


async def back_to_release_0003(engine: AsyncEngine) -> None:
    """The two tables as 0003 left them: order lines keyed by line_id alone, the budget's rows
    without a marketplace; then rows in both."""
    model = SQLModel.metadata.tables[ORDER_LINES]
    released = sa.Table(
        ORDER_LINES,
        sa.MetaData(),
        *(column._copy() for column in model.columns if column.name != "marketplace_id"),
    )
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"DROP TABLE {ORDER_LINES}"))
        await conn.run_sync(released.create)
        drop_index = f"DROP INDEX {BUDGET_INDEX}" + (f" ON {UPDATES}" if is_mysql(conn) else "")
        await conn.execute(sa.text(drop_index))
        await conn.execute(sa.text(f"ALTER TABLE {UPDATES} DROP COLUMN marketplace_id"))
        await conn.execute(
            sa.text(
                f"INSERT INTO {ORDER_LINES} (line_id, order_id, listing_id, sku, variation_id, "
                "quantity, state, created_at, seen_at, compensated_at, compensated_by) VALUES "
                "(7, 70, 700, 'SKU-7', 3, 1, 1, :seen, :seen, NULL, NULL), "
                "(8, 80, 800, 'SKU-8', 4, 2, 3, :seen, :seen, :seen, 'order_sync')"
            ),
            {"seen": SEEN},
        )
        await conn.execute(
            sa.text(f"INSERT INTO {UPDATES} (sent_at, listing_ref) VALUES (:seen, 'l-1')"),
            {"seen": SEEN},
        )
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))


async def primary_key_of(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: list(sa.inspect(sync).get_pk_constraint(table)["constrained_columns"])
        )


async def test_the_order_lines_of_release_0003_become_marketplace_1s_keyed_per_marketplace(
    blank: AsyncEngine,
) -> None:
    await run_migrations(blank)
    await back_to_release_0003(blank)
    assert await primary_key_of(blank, ORDER_LINES) == ["line_id"]

    await run_migrations(blank)

    assert await primary_key_of(blank, ORDER_LINES) == ["marketplace_id", "line_id"]
    async with blank.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    f"SELECT marketplace_id, line_id, order_id, listing_id, sku, variation_id, "
                    f"quantity, state, compensated_by FROM {ORDER_LINES} ORDER BY line_id"
                )
            )
        ).all()
        updates = (
            await conn.execute(sa.text(f"SELECT marketplace_id, listing_ref FROM {UPDATES}"))
        ).all()
    assert [tuple(row) for row in rows] == [
        (1, 7, 70, 700, "SKU-7", 3, 1, 1, None),
        (1, 8, 80, 800, "SKU-8", 4, 2, 3, "order_sync"),
    ]
    assert [tuple(row) for row in updates] == [(1, "l-1")]
    # Another marketplace's line 7 is its own; marketplace 1's line 7 stays one row.
    insert = sa.text(
        f"INSERT INTO {ORDER_LINES} (marketplace_id, line_id, order_id, quantity, state, "
        "seen_at) VALUES (:marketplace, 7, 1, 1, 1, :seen)"
    )
    async with blank.begin() as conn:
        await conn.execute(insert, {"marketplace": 4, "seen": SEEN})
    with pytest.raises(sa.exc.IntegrityError):
        async with blank.begin() as conn:
            await conn.execute(insert, {"marketplace": 1, "seen": SEEN})


async def test_migration_0004_run_on_a_current_database_changes_nothing(
    blank: AsyncEngine,
) -> None:
    await run_migrations(blank)
    async with blank.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))

    await run_migrations(blank)

    assert await primary_key_of(blank, ORDER_LINES) == ["marketplace_id", "line_id"]
    async with blank.connect() as conn:
        indexes = await conn.run_sync(
            lambda sync: {index["name"] for index in sa.inspect(sync).get_indexes(UPDATES)}
        )
    assert BUDGET_INDEX in indexes
