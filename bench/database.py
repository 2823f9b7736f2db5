"""A fresh database per scenario, seeded set-based, and the database's own write floor.

SQLite: a file in the run's work directory. MariaDB: a database `bench_<name>` created and
dropped with the server URL's user (root on the benchmark machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.migrate import run_migrations
from app.models import MarketplaceStock, MarketplaceStockHistory, Variation, table_of
from bench.catalogue import CatalogueEntry

Backend = Literal["sqlite", "mariadb"]
MARKETPLACE_ID = 1
SEED_CHUNK = 5000
AT_REST = datetime(2000, 1, 1)
# Rows a floor statement: what the service's stock writer puts in one upsert
# (app/services/stock.py, WRITE_CHUNK).
FLOOR_CHUNK = 1000

variation_table = table_of(Variation)
stock_table = table_of(MarketplaceStock)
history_table = table_of(MarketplaceStockHistory)

# (variation_id, marketplace_id, listed, locked, available, last_api_quantity)
StockState = tuple[int, int, int, int, int, int | None]


@dataclass
class BenchDatabase:
    backend: Backend
    name: str
    url: str
    engine: AsyncEngine

    @property
    def is_mysql(self) -> bool:
        return self.backend == "mariadb"


def mysql_database_url(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def _run_on_server(server_url: str, statement: str) -> None:
    server = create_engine(
        make_url(server_url).set(database=None).render_as_string(False), pool_size=1
    )
    try:
        async with server.begin() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await server.dispose()


@asynccontextmanager
async def fresh_database(
    backend: Backend, name: str, *, workdir: Path, mysql_server_url: str | None
) -> AsyncIterator[BenchDatabase]:
    """An empty, migrated database that is removed afterwards.

    Named `bench_<name>`, or `<BENCH_DATABASE_PREFIX><name>` so that runs sharing a server
    (several checkouts measured against each other) keep to databases of their own.
    """
    db_name = f"{os.environ.get('BENCH_DATABASE_PREFIX', 'bench_')}{name}"
    if backend == "mariadb":
        if mysql_server_url is None:
            raise ValueError("MariaDB needs --mysql-url")
        await _run_on_server(mysql_server_url, f"DROP DATABASE IF EXISTS `{db_name}`")
        await _run_on_server(mysql_server_url, f"CREATE DATABASE `{db_name}`")
        url = mysql_database_url(mysql_server_url, db_name)
    else:
        path = workdir / f"{db_name}.db"
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(url)
    try:
        await run_migrations(engine)
        yield BenchDatabase(backend=backend, name=db_name, url=url, engine=engine)
    finally:
        await engine.dispose()
        if backend == "mariadb" and mysql_server_url is not None:
            await _run_on_server(mysql_server_url, f"DROP DATABASE IF EXISTS `{db_name}`")


def at_rest_stock_row(entry: CatalogueEntry, *, marketplace_id: int) -> dict[str, Any]:
    return {
        "variation_id": entry.variation_id,
        "marketplace_id": marketplace_id,
        "listed_stock": 0,
        "locked_stock": 0,
        "available_stock": 0,
        "stock_changed_at": AT_REST,
    }


async def seed_catalogue(db: BenchDatabase, catalogue: Sequence[CatalogueEntry]) -> None:
    """One variation and one marketplace_stock row (stock 0) per listing, in bulk INSERTs."""
    for start in range(0, len(catalogue), SEED_CHUNK):
        chunk = catalogue[start : start + SEED_CHUNK]
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.insert(variation_table),
                [
                    {
                        "id": entry.variation_id,
                        "reference_id": str(entry.listing_id),
                        "reference_uuid": entry.uuid,
                        "sku": entry.sku,
                        "listed_stock": 0,
                    }
                    for entry in chunk
                ],
            )
            await conn.execute(
                sa.insert(stock_table),
                [at_rest_stock_row(entry, marketplace_id=MARKETPLACE_ID) for entry in chunk],
            )


async def seed_stock_rows(
    db: BenchDatabase, catalogue: Sequence[CatalogueEntry], *, marketplace_id: int
) -> None:
    """One marketplace_stock row (stock 0, at rest) per variation on another marketplace, so
    its first bulk sync updates rows as every later one does rather than inserting them."""
    for start in range(0, len(catalogue), SEED_CHUNK):
        chunk = catalogue[start : start + SEED_CHUNK]
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.insert(stock_table),
                [at_rest_stock_row(entry, marketplace_id=marketplace_id) for entry in chunk],
            )


async def reset_stock(db: BenchDatabase) -> None:
    """Every stock row back to 0 and never synced, so the next write changes every row.

    The rows are dated long ago, as in a catalogue at rest: the change-time triggers would
    otherwise stamp them "now", and the sync rightly leaves a row alone that changed less
    than its safety margin before the page was read.
    """
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.update(stock_table).values(
                listed_stock=0, available_stock=0, last_api_quantity=None, last_synced_at=None
            )
        )
        # A second statement: the triggers re-stamp stock_changed_at only when stock changes.
        await conn.execute(sa.update(stock_table).values(stock_changed_at=AT_REST))
        await conn.execute(sa.update(variation_table).values(listed_stock=0))
        if db.is_mysql:
            await conn.execute(sa.text("TRUNCATE TABLE marketplace_stock_history"))
        else:
            await conn.execute(sa.delete(history_table))


async def stock_state(db: BenchDatabase) -> list[StockState]:
    """The marketplace_stock table's stock columns, ordered: what two runs must agree on."""
    query = sa.select(
        stock_table.c.variation_id,
        stock_table.c.marketplace_id,
        stock_table.c.listed_stock,
        stock_table.c.locked_stock,
        stock_table.c.available_stock,
        stock_table.c.last_api_quantity,
    ).order_by(stock_table.c.variation_id, stock_table.c.marketplace_id)
    async with db.engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(query)).all()]


async def variation_totals(db: BenchDatabase) -> list[tuple[int, int]]:
    query = sa.select(variation_table.c.id, variation_table.c.listed_stock).order_by(
        variation_table.c.id
    )
    async with db.engine.connect() as conn:
        return [(row[0], row[1]) for row in (await conn.execute(query)).all()]


async def history_by_variation(db: BenchDatabase, change_type: str) -> dict[int, list[int]]:
    """variation_id -> quantity_change of each history row of `change_type`."""
    query = sa.select(history_table.c.variation_id, history_table.c.quantity_change).where(
        history_table.c.change_type == change_type
    )
    changes: dict[int, list[int]] = {}
    async with db.engine.connect() as conn:
        for variation_id, change in (await conn.execute(query)).all():
            changes.setdefault(int(variation_id), []).append(int(change))
    return changes


async def count_rows(db: BenchDatabase, table: sa.Table) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


FLOOR_COLUMNS = (
    "variation_id",
    "marketplace_id",
    "listed_stock",
    "locked_stock",
    "available_stock",
    "last_api_quantity",
    "last_synced_at",
    "stock_changed_at",
    "created_at",
    "updated_at",
)
FLOOR_UPDATED = (
    "listed_stock",
    "available_stock",
    "last_api_quantity",
    "last_synced_at",
    "stock_changed_at",
    "updated_at",
)


def floor_statement(db: BenchDatabase, rows: int) -> str:
    """A plain multi-row upsert of `rows` rows in the driver's own parameter style."""
    mark = "%s" if db.is_mysql else "?"
    row = "(" + ", ".join([mark] * len(FLOOR_COLUMNS)) + ")"
    head = f"INSERT INTO marketplace_stock ({', '.join(FLOOR_COLUMNS)}) VALUES "
    values = ", ".join([row] * rows)
    if db.is_mysql:
        tail = " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in FLOOR_UPDATED)
    else:
        tail = " ON CONFLICT (variation_id, marketplace_id) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in FLOOR_UPDATED
        )
    return head + values + tail


async def write_floor(db: BenchDatabase, states: Sequence[StockState]) -> float:
    """Seconds to upsert `states` as plain multi-row statements, one commit per chunk.

    The chunk is the stock writer's own (FLOOR_CHUNK rows), the driver and engine are the
    service's, and each chunk commits on its own like the service's short transactions.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    statements: dict[int, str] = {}
    started = time.perf_counter()
    for start in range(0, len(states), FLOOR_CHUNK):
        chunk = states[start : start + FLOOR_CHUNK]
        sql = statements.get(len(chunk)) or statements.setdefault(
            len(chunk), floor_statement(db, len(chunk))
        )
        params: list[Any] = []
        for variation_id, marketplace_id, listed, locked, available, api_quantity in chunk:
            params += [
                variation_id,
                marketplace_id,
                listed,
                locked,
                available,
                api_quantity,
                now,
                now,
                now,
                now,
            ]
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(sql, tuple(params))
    return time.perf_counter() - started
