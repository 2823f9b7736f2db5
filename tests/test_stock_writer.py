"""The one stock writer, on its own: large inputs, invariants, history only for changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import database_now, transaction
from app.models import ChangeType
from app.services import stock
from app.services.stock import WRITE_CHUNK, StockObservation, write_observations

ROWS = WRITE_CHUNK * 2 + 500


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(sql))).scalar_one())


async def test_more_observations_than_one_chunk_are_all_written_with_the_invariants(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, listed_stock) VALUES (:id, 0)"),
            [{"id": i} for i in range(1, ROWS + 1)],
        )
        # Another marketplace's stock counts in the variation's sum; locked stock is kept.
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock) VALUES (1, 4, 5, 0, 5), (2, 1, 0, 3, 0)"
            )
        )
    observations = [
        StockObservation(variation_id=i, quantity=i % 7, sku=f"SKU-{i}", publication_state=2)
        for i in range(1, ROWS + 1)
    ]

    async with transaction(engine) as conn:
        first = await write_observations(
            conn, marketplace_id=1, observations=observations, change_type=ChangeType.BULK_SYNC
        )
    async with transaction(engine) as conn:
        again = await write_observations(
            conn, marketplace_id=1, observations=observations, change_type=ChangeType.BULK_SYNC
        )

    assert (first.updated, first.created) == (ROWS, ROWS - 1)
    assert (again.updated, again.unchanged) == (0, ROWS)
    assert await count(engine, "SELECT COUNT(*) FROM marketplace_stock_history") == ROWS
    assert (
        await count(
            engine,
            "SELECT COUNT(*) FROM marketplace_stock WHERE marketplace_id = 1 AND available_stock <> "
            "CASE WHEN listed_stock > locked_stock THEN listed_stock - locked_stock ELSE 0 END",
        )
        == 0
    )
    assert (
        await count(
            engine,
            "SELECT COUNT(*) FROM variation v WHERE v.listed_stock <> (SELECT SUM(ms.listed_stock) "
            "FROM marketplace_stock ms WHERE ms.variation_id = v.id)",
        )
        == 0
    )
    assert await count(engine, "SELECT COUNT(*) FROM variation WHERE state = 2") == ROWS
    assert await count(engine, "SELECT listed_stock FROM variation WHERE id = 1") == 5 + 1


async def test_filling_an_empty_last_api_quantity_alone_writes_no_history_row(
    engine: AsyncEngine,
) -> None:
    # The seed database's rows: stock known, last_api_quantity never filled.
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, listed_stock) VALUES (:id, :stock)"),
            [{"id": 1, "stock": 4}, {"id": 2, "stock": 4}],
        )
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock, last_api_quantity) "
                "VALUES (1, 1, 4, 1, 3, NULL), (2, 1, 4, 1, 3, NULL)"
            )
        )
    observations = [
        StockObservation(variation_id=1, quantity=4, sku="SKU-1", publication_state=2),
        StockObservation(variation_id=2, quantity=6, sku="SKU-2", publication_state=2),
    ]

    async with transaction(engine) as conn:
        await write_observations(
            conn, marketplace_id=1, observations=observations, change_type=ChangeType.BULK_SYNC
        )

    assert (
        await count(
            engine, "SELECT COUNT(*) FROM marketplace_stock WHERE last_api_quantity IS NULL"
        )
        == 0
    )
    assert await count(engine, "SELECT COUNT(*) FROM marketplace_stock_history") == 1
    assert await count(engine, "SELECT variation_id FROM marketplace_stock_history") == 2


async def test_a_writer_of_the_same_variation_waits_for_the_one_that_read_its_row_first(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bulk-sync snapshot (older) reads the row; an addition's answer (newest) is written by
    # another transaction before the snapshot's upsert. The rows the snapshot read stay
    # locked (FOR UPDATE on MySQL, BEGIN IMMEDIATE on SQLite) until it commits, so the
    # addition lands after it. Unlocked, the snapshot would overwrite the newer value.
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO variation (id, listed_stock) VALUES (1, 4)"))
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock) VALUES (1, 1, 4, 0, 4)"
            )
        )
        snapshot_time = await database_now(conn)
    read_rows = stock._lock_rows
    newer: list[asyncio.Task[Any]] = []

    async def write_newer_value() -> None:
        async with transaction(engine) as conn:
            await write_observations(
                conn,
                marketplace_id=1,
                observations=[StockObservation(variation_id=1, quantity=9)],
                change_type=ChangeType.ADD_QUANTITY,
            )

    async def read_then_let_the_other_writer_try(conn: Any, **kwargs: Any) -> Any:
        rows = await read_rows(conn, **kwargs)
        if not newer:
            newer.append(asyncio.create_task(write_newer_value()))
            await asyncio.sleep(0.5)  # room for the other writer to commit, were it not held
        return rows

    monkeypatch.setattr(stock, "_lock_rows", read_then_let_the_other_writer_try)
    async with transaction(engine) as conn:
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=1, quantity=2, not_changed_since=snapshot_time)
            ],
            change_type=ChangeType.BULK_SYNC,
        )
    await newer[0]

    assert await count(engine, "SELECT listed_stock FROM marketplace_stock") == 9
    assert await count(engine, "SELECT listed_stock FROM variation WHERE id = 1") == 9
