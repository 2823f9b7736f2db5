"""The one stock writer, on its own: large inputs, invariants, history only for changes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import database_now, transaction
from app.models import ChangeType
from app.services import stock
from app.services.stock import WRITE_CHUNK, StockObservation, StockRow, write_observations

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


async def rows_of(engine: AsyncEngine, table: str, order: str = "id") -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))).mappings()
        )


async def now_of(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        return stored(await database_now(conn))


def stored(value: Any) -> datetime:
    """A stored time read back as a datetime (MariaDB) or an ISO string (SQLite)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def to_second(value: Any) -> datetime:
    """For the TIMESTAMP columns, which keep whole seconds on MariaDB."""
    return stored(value).replace(microsecond=0)


async def insert_stock_rows(engine: AsyncEngine, values: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                f"locked_stock, available_stock, last_api_quantity, stock_changed_at) VALUES {values}"
            )
        )


async def test_history_rows_name_their_stock_row_the_change_and_what_made_it(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, sku, state, listed_stock) VALUES (:id, :sku, 2, 4)"
            ),
            [{"id": 1, "sku": "SKU-1"}, {"id": 2, "sku": "SKU-2"}],
        )
    await insert_stock_rows(engine, "(1, 1, 4, 1, 3, 4, NULL)")
    # Variation 2 has stock on another marketplace only: its new row here is another row.
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (id, variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock) VALUES (1000, 2, 4, 1, 0, 1)"
            )
        )
    before = await now_of(engine)

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(
                    variation_id=1, quantity=9, reference_id="ref-1", order_id=11, order_item_id=12
                ),
                StockObservation(variation_id=2, quantity=2, reference_id="ref-2"),
            ],
            change_type=ChangeType.ORDER_SYNC,
            sync_run_id=77,
            idempotency_key="key-9",
            notes="watcher: order 11",
        )
    after = await now_of(engine)

    stock = {
        row["variation_id"]: row
        for row in await rows_of(engine, "marketplace_stock")
        if row["marketplace_id"] == 1
    }
    history = await rows_of(engine, "marketplace_stock_history", order="variation_id")
    assert [dict(h) | {"id": None, "created_at": None, "updated_at": None} for h in history] == [
        {
            "id": None,
            "marketplace_stock_id": stock[1]["id"],
            "variation_id": 1,
            "marketplace_id": 1,
            "listed_stock_before": 4,
            "listed_stock_after": 9,
            "locked_stock_before": 1,
            "locked_stock_after": 1,
            "available_stock_before": 3,
            "available_stock_after": 8,
            "quantity_change": 5,
            "change_type": "order_sync",
            "reference_id": "ref-1",
            "notes": "watcher: order 11",
            "sync_run_id": 77,
            "idempotency_key": "key-9",
            "order_id": 11,
            "order_item_id": 12,
            "created_at": None,
            "updated_at": None,
        },
        {
            "id": None,
            "marketplace_stock_id": stock[2]["id"],
            "variation_id": 2,
            "marketplace_id": 1,
            "listed_stock_before": 0,
            "listed_stock_after": 2,
            "locked_stock_before": 0,
            "locked_stock_after": 0,
            "available_stock_before": 0,
            "available_stock_after": 2,
            "quantity_change": 2,
            "change_type": "order_sync",
            "reference_id": "ref-2",
            "notes": "watcher: order 11",
            "sync_run_id": 77,
            "idempotency_key": "key-9",
            "order_id": None,
            "order_item_id": None,
            "created_at": None,
            "updated_at": None,
        },
    ]
    written = result.rows[1].last_synced_at
    assert written is not None
    assert before <= written <= after
    for variation_id in (1, 2):
        assert to_second(stock[variation_id]["last_synced_at"]) == to_second(written)
        assert to_second(stock[variation_id]["updated_at"]) == to_second(written)
        assert stock[variation_id]["last_api_quantity"] == stock[variation_id]["listed_stock"]
    assert to_second(stock[2]["created_at"]) == to_second(written)
    assert stock[1]["created_at"] is None
    # A new row is stamped by the writer; an updated one again by the change trigger, later.
    assert stored(stock[2]["stock_changed_at"]) == written
    assert stored(stock[1]["stock_changed_at"]) >= written
    assert {stored(h["created_at"]) for h in history} == {written}
    assert {to_second(h["updated_at"]) for h in history} == {to_second(written)}
    assert (stock[1]["locked_stock"], stock[1]["available_stock"]) == (1, 8)
    assert (result.updated, result.created, result.unchanged, result.skipped_newer) == (2, 1, 0, 0)
    assert result.rows == {
        1: StockRow(1, 1, 9, 1, 8, 9, written),
        2: StockRow(2, 1, 2, 0, 2, 2, written),
    }
    variations = {row["id"]: row for row in await rows_of(engine, "variation")}
    assert (variations[1]["listed_stock"], variations[2]["listed_stock"]) == (9, 2 + 1)
    assert to_second(variations[1]["updated_at"]) == to_second(written)


async def test_an_unchanged_row_is_only_stamped_as_synced(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, sku, state, listed_stock) VALUES (1, 'S', 2, 4)")
        )
    await insert_stock_rows(engine, "(1, 1, 4, 1, 3, 4, '2024-01-02 03:04:05')")
    before = await now_of(engine)

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[StockObservation(variation_id=1, quantity=4)],
            change_type=ChangeType.REFRESH,
        )

    [row] = await rows_of(engine, "marketplace_stock")
    assert to_second(row["last_synced_at"]) >= to_second(before)
    assert stored(row["stock_changed_at"]) == datetime(2024, 1, 2, 3, 4, 5)
    assert (row["listed_stock"], row["available_stock"]) == (4, 3)
    assert (result.updated, result.unchanged) == (0, 1)
    assert result.rows[1] == StockRow(1, 1, 4, 1, 3, 4, result.rows[1].last_synced_at)
    assert await count(engine, "SELECT COUNT(*) FROM marketplace_stock_history") == 0


async def test_filling_last_api_quantity_keeps_the_time_of_the_last_stock_change(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO variation (id, listed_stock) VALUES (1, 4)"))
    await insert_stock_rows(engine, "(1, 1, 4, 0, 4, NULL, '2024-01-02 03:04:05')")

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[StockObservation(variation_id=1, quantity=4)],
            change_type=ChangeType.BULK_SYNC,
        )

    [row] = await rows_of(engine, "marketplace_stock")
    assert stored(row["stock_changed_at"]) == datetime(2024, 1, 2, 3, 4, 5)
    assert row["last_api_quantity"] == 4
    assert (result.updated, result.created, result.unchanged) == (1, 0, 0)


async def test_a_row_changed_exactly_at_the_read_is_written_and_one_changed_after_is_kept(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, listed_stock) VALUES (:id, 4)"),
            [{"id": 1}, {"id": 2}, {"id": 3}],
        )
    await insert_stock_rows(
        engine,
        "(1, 1, 4, 1, 3, 4, '2024-01-02 03:04:05'), (2, 1, 4, 1, 3, 4, '2024-01-02 03:04:06'),"
        " (3, 1, 4, 1, 3, 4, '2024-01-02 03:04:04')",
    )
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE marketplace_stock SET last_synced_at = '2024-01-02 03:04:07' "
                "WHERE variation_id = 2"
            )
        )
    read_at = datetime(2024, 1, 2, 3, 4, 5)

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=v, quantity=7, not_changed_since=read_at)
                for v in (1, 2, 3)
            ],
            change_type=ChangeType.REFRESH,
        )

    stock = {row["variation_id"]: row for row in await rows_of(engine, "marketplace_stock")}
    assert [stock[v]["listed_stock"] for v in (1, 2, 3)] == [7, 4, 7]
    assert (result.updated, result.skipped_newer) == (2, 1)
    assert result.skipped_variation_ids == {2}
    skipped = result.rows[2]
    assert skipped == StockRow(2, 1, 4, 1, 3, 4, skipped.last_synced_at)
    assert stored(skipped.last_synced_at) == datetime(2024, 1, 2, 3, 4, 7)


async def test_a_new_row_is_written_whatever_the_time_of_the_read(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO variation (id, listed_stock) VALUES (1, 0)"))

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=1, quantity=3, not_changed_since=datetime(2000, 1, 1))
            ],
            change_type=ChangeType.REFRESH,
        )

    assert (result.updated, result.created, result.skipped_newer) == (1, 1, 0)
    assert await count(engine, "SELECT listed_stock FROM marketplace_stock") == 3


async def test_a_dry_run_computes_the_rows_and_writes_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, sku, state, listed_stock) VALUES (:id, 'S', 2, 4)"),
            [{"id": 1}, {"id": 2}, {"id": 3}],
        )
    await insert_stock_rows(engine, "(1, 1, 4, 1, 3, 4, NULL), (2, 1, 4, 0, 4, 4, NULL)")

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=1, quantity=0, sku="NEW", publication_state=3),
                StockObservation(variation_id=2, quantity=4),
                StockObservation(variation_id=3, quantity=5),
            ],
            change_type=ChangeType.BULK_SYNC,
            dry_run=True,
        )

    assert (result.updated, result.created, result.unchanged) == (2, 1, 1)
    assert result.rows[1].available_stock == 0
    assert result.rows[3] == StockRow(3, 1, 5, 0, 5, 5, result.rows[3].last_synced_at)
    stock = await rows_of(engine, "marketplace_stock")
    assert [(r["variation_id"], r["listed_stock"], r["last_synced_at"]) for r in stock] == [
        (1, 4, None),
        (2, 4, None),
    ]
    assert await count(engine, "SELECT COUNT(*) FROM marketplace_stock_history") == 0
    assert await count(engine, "SELECT COUNT(*) FROM variation WHERE sku = 'S' AND state = 2") == 3


async def test_the_last_observation_of_a_variation_wins_and_a_deleted_variation_is_skipped(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO variation (id, listed_stock) VALUES (1, 0)"))

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=99, quantity=8),
                StockObservation(variation_id=1, quantity=3),
                StockObservation(variation_id=1, quantity=6),
            ],
            change_type=ChangeType.BULK_SYNC,
        )

    assert (result.updated, result.created) == (1, 1)
    assert set(result.rows) == {1}
    assert await count(engine, "SELECT listed_stock FROM marketplace_stock") == 6
    assert await count(engine, "SELECT COUNT(*) FROM marketplace_stock_history") == 1


async def test_the_feed_changes_only_the_sku_and_state_it_gives(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, sku, state, listed_stock) VALUES (:id, :sku, 2, 0)"
            ),
            [{"id": i, "sku": f"OLD-{i}"} for i in (1, 2, 3, 4)],
        )

    async with transaction(engine) as conn:
        await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=1, quantity=1, sku="NEW-1"),
                StockObservation(variation_id=2, quantity=1, publication_state=3),
                StockObservation(variation_id=3, quantity=1, sku="OLD-3", publication_state=2),
                StockObservation(variation_id=4, quantity=1),
            ],
            change_type=ChangeType.BULK_SYNC,
        )

    variations = await rows_of(engine, "variation")
    assert [(v["id"], v["sku"], v["state"]) for v in variations] == [
        (1, "NEW-1", 2),
        (2, "OLD-2", 3),
        (3, "OLD-3", 2),
        (4, "OLD-4", 2),
    ]


async def test_rows_kept_as_newer_are_counted_over_every_chunk(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stock, "WRITE_CHUNK", 2)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, listed_stock) VALUES (:id, 4)"),
            [{"id": i} for i in range(1, 6)],
        )
    await insert_stock_rows(
        engine, ", ".join(f"({i}, 1, 4, 0, 4, 4, '2024-01-02 03:04:06')" for i in range(1, 6))
    )

    async with transaction(engine) as conn:
        result = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(
                    variation_id=i, quantity=7, not_changed_since=datetime(2024, 1, 2, 3, 4, 5)
                )
                for i in range(1, 6)
            ],
            change_type=ChangeType.BULK_SYNC,
        )

    assert (result.skipped_newer, result.updated) == (5, 0)
    assert result.skipped_variation_ids == {1, 2, 3, 4, 5}
    assert set(result.rows) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("change_type", list(ChangeType))
async def test_every_observed_variation_gets_its_total_back_whatever_its_row_did(
    engine: AsyncEngine, change_type: ChangeType
) -> None:
    """The watcher, a refresh, an addition: any observation re-sums, even an unchanged one."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO variation (id, listed_stock) VALUES (1, 5), (2, 8), (3, 99)")
        )
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock, last_api_quantity, deleted_at) VALUES "
                "(1, 1, 4, 0, 4, 4, NULL), (1, 4, 8, 0, 8, NULL, NULL), "
                "(2, 1, 3, 0, 3, 3, NULL), (2, 4, 5, 0, 5, NULL, NULL), "
                "(3, 1, 3, 0, 3, 3, NULL), (3, 4, 40, 0, 40, NULL, '2026-01-01 00:00:00')"
            )
        )
    observations = [
        StockObservation(variation_id=i, quantity=q) for i, q in ((1, 4), (2, 3), (3, 3))
    ]

    async with transaction(engine) as conn:
        written = await write_observations(
            conn, marketplace_id=1, observations=observations, change_type=change_type
        )

    assert (written.updated, written.unchanged, written.resummed) == (0, 3, 2)
    async with engine.connect() as conn:
        totals = dict(
            (
                await conn.execute(sa.text("SELECT id, listed_stock FROM variation ORDER BY id"))
            ).all()
        )
    assert totals == {1: 12, 2: 8, 3: 3}


async def test_a_soft_deleted_variation_given_to_the_writer_is_not_written(
    engine: AsyncEngine,
) -> None:
    """The writer's own guard, whatever its caller matched: neither its row nor its total."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO variation (id, listed_stock, deleted_at) VALUES "
                "(1, 5, '2026-01-01 00:00:00'), (2, 5, NULL)"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO marketplace_stock (variation_id, marketplace_id, listed_stock, "
                "locked_stock, available_stock, last_api_quantity) VALUES "
                "(1, 1, 5, 0, 5, 5), (2, 1, 5, 0, 5, 5)"
            )
        )

    async with transaction(engine) as conn:
        written = await write_observations(
            conn,
            marketplace_id=1,
            observations=[
                StockObservation(variation_id=1, quantity=2),
                StockObservation(variation_id=2, quantity=2),
            ],
            change_type=ChangeType.BULK_SYNC,
        )

    assert (written.updated, set(written.rows)) == (1, {2})
    async with engine.connect() as conn:
        stock = dict(
            (
                await conn.execute(
                    sa.text("SELECT variation_id, listed_stock FROM marketplace_stock")
                )
            ).all()
        )
        totals = dict((await conn.execute(sa.text("SELECT id, listed_stock FROM variation"))).all())
    assert (stock, totals) == ({1: 5, 2: 2}, {1: 5, 2: 2})
