"""Migrations: the schema built from empty on SQLite and MariaDB, and brought up to date on a
MariaDB database that already holds the seed application's tables and rows.

The seed database is created once for the module (tests/fixtures/seed_schema_mysql.sql), its
schema and rows are captured before and after the migration, and the tests compare the two.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel

from app.db import create_engine, is_mysql
from app.migrate import run_migrations
from app.models import (
    ALL_CHANGE_TYPES,
    ALL_RUN_STATUSES,
    SEED_CHANGE_TYPES,
    SEED_RUN_STATUSES,
    ChangeType,
    MarketplaceStock,
    RunStatus,
    RunTrigger,
    StockSyncLog,
    table_of,
    utcnow,
)
from app.services.stock import StockObservation, write_observations
from tests.conftest import (
    MYSQL_SKIP_REASON,
    TEST_MYSQL_URL,
    mysql_database_url,
    recreate_mysql_database,
)

SEED_SQL = Path(__file__).parent / "fixtures" / "seed_schema_mysql.sql"

# CONTRACT.md, "Database": the tables and the columns the service relies on. A run's
# `finished_at` and `errors` live in the seed's own `completed_at` and `error_details` columns.
CONTRACT_COLUMNS: dict[str, set[str]] = {
    "marketplace": {"id", "name"},
    "variation": {"id", "reference_id", "reference_uuid", "sku", "state", "listed_stock"},
    "marketplace_stock": {
        "id",
        "variation_id",
        "marketplace_id",
        "listed_stock",
        "locked_stock",
        "available_stock",
        "last_api_quantity",
        "last_synced_at",
        "updated_at",
    },
    "marketplace_stock_history": {
        "marketplace_stock_id",
        "variation_id",
        "marketplace_id",
        "listed_stock_before",
        "listed_stock_after",
        "available_stock_before",
        "available_stock_after",
        "quantity_change",
        "change_type",
        "sync_run_id",
        "order_id",
        "order_item_id",
        "created_at",
    },
    "stock_sync_logs": {
        "id",
        "marketplace_id",
        "trigger",
        "status",
        "dry_run",
        "started_at",
        "completed_at",
        "duration_seconds",
        "api_calls",
        "pages_fetched",
        "pages_expected",
        "listings_seen",
        "matched",
        "updated",
        "unchanged",
        "skipped_newer",
        "not_found",
        "unknown_listings",
        "imported",
        "error_details",
        "markets",
    },
}
RUN_FIELD_COLUMNS = {"finished_at": "completed_at", "errors": "error_details"}

SEED_TABLES = (
    "admin",
    "marketplace",
    "variation",
    "marketplace_stock",
    "marketplace_stock_history",
    "stock_sync_logs",
)
# The only changes the migration may make to an existing column: values appended to these enums.
EXTENDED_ENUMS = {
    ("marketplace_stock_history", "change_type"): (SEED_CHANGE_TYPES, ALL_CHANGE_TYPES),
    ("stock_sync_logs", "status"): (SEED_RUN_STATUSES, ALL_RUN_STATUSES),
}

requires_mysql = pytest.mark.skipif(TEST_MYSQL_URL is None, reason=MYSQL_SKIP_REASON)


async def drop_mysql_database(url: str) -> None:
    assert TEST_MYSQL_URL is not None
    server = create_engine(TEST_MYSQL_URL)
    async with server.begin() as conn:
        await conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    await server.dispose()


# --- the schema from an empty database, on both backends -----------------------------------


@pytest.fixture(params=["sqlite", "mysql"])
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        yield engine
        await engine.dispose()
        return
    if TEST_MYSQL_URL is None:
        pytest.skip(MYSQL_SKIP_REASON)
    url = mysql_database_url(f"empty_{os.getpid()}")
    await recreate_mysql_database(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()
    await drop_mysql_database(url)


def describe_schema(conn: sa.Connection) -> dict[str, Any]:
    """Every table's columns, indexes, unique constraints and foreign keys, comparable with ==."""
    inspector = sa.inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (uq["name"], tuple(uq["column_names"]))
                for uq in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    str(fk.get("options")),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
        }
    return schema


async def trigger_names(conn: AsyncConnection) -> set[str]:
    if is_mysql(conn):
        query = (
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
        )
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return set((await conn.execute(sa.text(query))).scalars())


async def schema_and_marketplaces(engine: AsyncEngine) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        schema = await conn.run_sync(describe_schema)
        triggers = await trigger_names(conn)
        marketplaces = (
            await conn.execute(sa.text("SELECT id, name FROM marketplace ORDER BY id"))
        ).all()
    return schema, triggers, [tuple(row) for row in marketplaces]


async def test_migrations_create_every_contract_table_and_column_on_an_empty_database(
    empty_database: AsyncEngine,
) -> None:
    await run_migrations(empty_database)

    async with empty_database.connect() as conn:
        schema = await conn.run_sync(describe_schema)
    for table, columns in CONTRACT_COLUMNS.items():
        assert table in schema, f"table {table} missing"
        present = {column[0] for column in schema[table]["columns"]}
        assert columns <= present, f"{table} lacks {sorted(columns - present)}"


async def test_migrations_create_every_column_of_the_service_tables_on_an_empty_database(
    empty_database: AsyncEngine,
) -> None:
    await run_migrations(empty_database)

    async with empty_database.connect() as conn:
        schema = await conn.run_sync(describe_schema)
    for table in SQLModel.metadata.sorted_tables:
        present = {column[0] for column in schema[table.name]["columns"]}
        assert set(table.columns.keys()) <= present, table.name


async def test_marketplace_stock_rejects_a_second_row_for_the_same_variation_and_marketplace(
    empty_database: AsyncEngine,
) -> None:
    await run_migrations(empty_database)

    async with empty_database.connect() as conn:
        schema = await conn.run_sync(describe_schema)
    stock = schema["marketplace_stock"]
    unique_column_sets = {columns for _name, columns in stock["unique"]} | {
        columns for _name, columns, unique in stock["indexes"] if unique
    }
    assert ("variation_id", "marketplace_id") in unique_column_sets

    async with empty_database.begin() as conn:
        await conn.execute(sa.text("INSERT INTO variation (id) VALUES (7)"))
        await conn.execute(
            sa.text("INSERT INTO marketplace_stock (variation_id, marketplace_id) VALUES (7, 1)")
        )
    with pytest.raises(sa.exc.IntegrityError):
        async with empty_database.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO marketplace_stock (variation_id, marketplace_id) VALUES (7, 1)"
                )
            )


async def test_migrations_create_marketplace_1_named_backmarket(
    empty_database: AsyncEngine,
) -> None:
    await run_migrations(empty_database)

    async with empty_database.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT id, name FROM marketplace"))).all()
    assert [tuple(row) for row in rows] == [(1, "BackMarket")]


async def test_running_migrations_a_second_time_changes_nothing(
    empty_database: AsyncEngine,
) -> None:
    await run_migrations(empty_database)
    first = await schema_and_marketplaces(empty_database)

    await run_migrations(empty_database)

    assert await schema_and_marketplaces(empty_database) == first


async def test_migration_rerun_without_its_version_stamp_changes_nothing(
    empty_database: AsyncEngine,
) -> None:
    """MySQL DDL is not transactional: a start-up killed mid-migration leaves tables, no stamp."""
    await run_migrations(empty_database)
    first = await schema_and_marketplaces(empty_database)
    async with empty_database.begin() as conn:
        await conn.execute(sa.text("DELETE FROM alembic_version"))

    await run_migrations(empty_database)

    assert await schema_and_marketplaces(empty_database) == first


async def test_migrations_add_the_soft_delete_columns_to_a_database_that_lacks_them(
    empty_database: AsyncEngine,
) -> None:
    """A database migrated before the columns existed (not the seed's: it has them) gets them,
    nullable, so soft-deleted rows behave the same on both."""
    await run_migrations(empty_database)
    async with empty_database.begin() as conn:
        for table in ("variation", "marketplace_stock"):
            await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN deleted_at"))
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))

    await run_migrations(empty_database)

    async with empty_database.connect() as conn:
        schema = await conn.run_sync(describe_schema)
    for table in ("variation", "marketplace_stock"):
        columns = {column[0]: column for column in schema[table]["columns"]}
        assert "deleted_at" in columns, table
        assert columns["deleted_at"][2] is True, table


def test_contract_columns_above_are_the_ones_contract_md_lists(shared_dir: Path) -> None:
    contract = (shared_dir / "CONTRACT.md").read_text()
    database_section = contract.split("## Database", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, set[str]] = {}
    for table, cell in re.findall(r"^\| `(\w+)` \| (.+) \|$", database_section, flags=re.M):
        without_remarks = re.sub(r"\([^)]*\)", "", cell)
        names: set[str] = set()
        for token in re.findall(r"`([^`]+)`", without_remarks):
            if "/" in token:
                stem, _, second = token.partition("/")
                first_suffix = stem.rsplit("_", 1)[1]
                names |= {stem, stem.removesuffix(first_suffix) + second}
            elif re.fullmatch(r"\w+", token):
                names.add(token)
        listed[table] = names
    run_fields = re.search(r"^`Run`: `([^`]+)`", contract, flags=re.M)
    assert run_fields is not None
    # `errors[]`, `trigger ("api"|...)`, `markets{market: {...}}`: the field names alone.
    fields = re.sub(r"\([^)]*\)|\{.*\}|\[\]", "", run_fields.group(1)).split(",")
    listed["stock_sync_logs"] = {
        RUN_FIELD_COLUMNS.get(field.strip(), field.strip()) for field in fields
    }

    assert listed == CONTRACT_COLUMNS


# --- the seed application's MariaDB database ------------------------------------------------


@dataclass(frozen=True)
class DatabaseSnapshot:
    tables: dict[str, tuple[Any, ...]]
    columns: dict[tuple[str, str], dict[str, Any]]
    indexes: dict[tuple[str, str], tuple[Any, ...]]
    foreign_keys: dict[tuple[str, str], tuple[Any, ...]]
    checks: dict[tuple[str, str], str]
    triggers: set[str]
    rows: dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class SeedMigration:
    url: str
    before: DatabaseSnapshot
    after: DatabaseSnapshot
    after_second_run: DatabaseSnapshot


def sql_statements(path: Path) -> list[str]:
    """The file's statements: each ends with `;` at the end of a line; `--` lines are comments."""
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
    )
    return [statement for statement in re.split(r";\s*$", text, flags=re.M) if statement.strip()]


async def load_sql_file(engine: AsyncEngine, path: Path) -> None:
    statements = sql_statements(path)
    async with engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


async def snapshot(engine: AsyncEngine) -> DatabaseSnapshot:
    async with engine.connect() as conn:

        async def query(sql: str) -> list[Any]:
            return list((await conn.execute(sa.text(sql))).mappings().all())

        tables = {
            row["TABLE_NAME"]: (row["ENGINE"], row["TABLE_COLLATION"])
            for row in await query(
                "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE()"
            )
        }
        columns = {
            (row["TABLE_NAME"], row["COLUMN_NAME"]): {
                key: value
                for key, value in row.items()
                # COLUMN_KEY only says whether some index starts with the column; indexes
                # are compared on their own below.
                if key not in ("TABLE_NAME", "COLUMN_NAME", "COLUMN_KEY")
            }
            for row in await query(
                "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, "
                "DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, "
                "NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME, COLLATION_NAME, "
                "COLUMN_KEY, EXTRA, COLUMN_COMMENT "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
            )
        }
        index_parts: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        index_kind: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in await query(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART, "
            "INDEX_TYPE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
            "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        ):
            key = (row["TABLE_NAME"], row["INDEX_NAME"])
            index_parts.setdefault(key, []).append((row["COLUMN_NAME"], row["SUB_PART"]))
            index_kind[key] = (row["NON_UNIQUE"], row["INDEX_TYPE"])
        indexes = {key: (*index_kind[key], tuple(parts)) for key, parts in index_parts.items()}

        fk_columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in await query(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_COLUMN_NAME "
            "FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() "
            "AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY TABLE_NAME, CONSTRAINT_NAME, "
            "ORDINAL_POSITION"
        ):
            fk_columns.setdefault((row["TABLE_NAME"], row["CONSTRAINT_NAME"]), []).append(
                (row["COLUMN_NAME"], row["REFERENCED_COLUMN_NAME"])
            )
        foreign_keys = {
            (row["TABLE_NAME"], row["CONSTRAINT_NAME"]): (
                row["REFERENCED_TABLE_NAME"],
                row["UPDATE_RULE"],
                row["DELETE_RULE"],
                tuple(fk_columns[(row["TABLE_NAME"], row["CONSTRAINT_NAME"])]),
            )
            for row in await query(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, UPDATE_RULE, "
                "DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = DATABASE()"
            )
        }
        checks = {
            (row["TABLE_NAME"], row["CONSTRAINT_NAME"]): row["CHECK_CLAUSE"]
            for row in await query(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE "
                "FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
            )
        }
        triggers = await trigger_names(conn)
        rows = {
            table: [dict(row) for row in await query(f"SELECT * FROM `{table}` ORDER BY id")]
            for table in SEED_TABLES
        }
    return DatabaseSnapshot(tables, columns, indexes, foreign_keys, checks, triggers, rows)


async def migrate_seed_database(url: str) -> SeedMigration:
    await recreate_mysql_database(url)
    engine = create_engine(url)
    try:
        await load_sql_file(engine, SEED_SQL)
        before = await snapshot(engine)
        await run_migrations(engine)
        after = await snapshot(engine)
        await run_migrations(engine)
        after_second_run = await snapshot(engine)
    finally:
        await engine.dispose()
    return SeedMigration(url, before, after, after_second_run)


@pytest.fixture(scope="module")
def seed_migration() -> Iterator[SeedMigration]:
    """The seed database, loaded, captured, migrated (twice) and captured again; dropped after."""
    if TEST_MYSQL_URL is None:
        pytest.skip(MYSQL_SKIP_REASON)
    url = mysql_database_url(f"seed_{os.getpid()}")
    try:
        yield asyncio.run(migrate_seed_database(url))
    finally:
        asyncio.run(drop_mysql_database(url))


@pytest.fixture
async def seed_engine(seed_migration: SeedMigration) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(seed_migration.url)
    yield engine
    await engine.dispose()


def enum_values(column_type: str) -> tuple[str, ...]:
    assert column_type.startswith("enum("), column_type
    return tuple(re.findall(r"'((?:[^']|'')*)'", column_type))


@requires_mysql
def test_seed_fixture_holds_the_seed_tables_and_rows(seed_migration: SeedMigration) -> None:
    before = seed_migration.before
    assert set(before.tables) == set(SEED_TABLES)
    assert (
        enum_values(before.columns[("marketplace_stock_history", "change_type")]["COLUMN_TYPE"])
        == SEED_CHANGE_TYPES
    )
    assert (
        enum_values(before.columns[("stock_sync_logs", "status")]["COLUMN_TYPE"])
        == SEED_RUN_STATUSES
    )
    assert [row["name"] for row in before.rows["marketplace"]] == ["BackMarket", "Refurbed"]
    assert {row["status"] for row in before.rows["stock_sync_logs"]} == {"running", "completed"}
    assert all(len(rows) >= 2 for rows in before.rows.values())


@requires_mysql
def test_seed_migration_keeps_every_row_unchanged(seed_migration: SeedMigration) -> None:
    for table, rows_before in seed_migration.before.rows.items():
        rows_after = [
            {column: row[column] for column in rows_before[0]}
            for row in seed_migration.after.rows[table]
        ]
        assert rows_after == rows_before, table


@requires_mysql
def test_seed_migration_keeps_every_column_with_its_type_default_and_nullability(
    seed_migration: SeedMigration,
) -> None:
    after = seed_migration.after.columns
    for key, column_before in seed_migration.before.columns.items():
        assert key in after, f"column {key} lost"
        column_after = dict(after[key])
        if key in EXTENDED_ENUMS:
            seed_values, all_values = EXTENDED_ENUMS[key]
            appended = enum_values(column_after["COLUMN_TYPE"])
            assert appended[: len(seed_values)] == seed_values, key
            assert set(appended) == set(all_values), key
            column_after["COLUMN_TYPE"] = column_before["COLUMN_TYPE"]
        assert column_after == column_before, key


@requires_mysql
def test_seed_migration_keeps_every_table_index_foreign_key_and_check(
    seed_migration: SeedMigration,
) -> None:
    before, after = seed_migration.before, seed_migration.after
    for name, options in before.tables.items():
        assert after.tables.get(name) == options, name
    for key, index in before.indexes.items():
        assert after.indexes.get(key) == index, f"index {key} lost or changed"
    for key, foreign_key in before.foreign_keys.items():
        assert after.foreign_keys.get(key) == foreign_key, f"foreign key {key} lost or changed"
    for key, check in before.checks.items():
        assert after.checks.get(key) == check, f"check {key} lost or changed"
    assert before.foreign_keys[("marketplace_stock", "marketplace_stock_admin_id_foreign")][2] == (
        "SET NULL"
    )


@requires_mysql
def test_seed_migration_adds_the_service_columns_indexes_tables_and_enum_values(
    seed_migration: SeedMigration,
) -> None:
    after = seed_migration.after
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            assert (table.name, column.name) in after.columns, f"{table.name}.{column.name}"
    assert set(
        enum_values(after.columns[("marketplace_stock_history", "change_type")]["COLUMN_TYPE"])
    ) >= {change_type.value for change_type in ChangeType}
    assert set(enum_values(after.columns[("stock_sync_logs", "status")]["COLUMN_TYPE"])) >= {
        status.value for status in RunStatus
    }
    leading_columns = {
        (table, parts[0][0]) for (table, _name), (_u, _t, parts) in after.indexes.items()
    }
    for indexed in (("variation", "reference_id"), ("variation", "reference_uuid")):
        assert indexed in leading_columns, indexed
    assert after.columns[("marketplace_stock", "stock_changed_at")]["DATETIME_PRECISION"] == 6
    assert after.triggers >= {
        "marketplace_stock_changed_on_update",
        "marketplace_stock_changed_on_insert",
    }


@requires_mysql
def test_seed_migration_run_a_second_time_changes_nothing(seed_migration: SeedMigration) -> None:
    assert seed_migration.after_second_run == seed_migration.after


async def history_rows(conn: AsyncConnection, *, variation_id: int) -> list[tuple[Any, ...]]:
    rows = await conn.execute(
        sa.text(
            "SELECT change_type, marketplace_stock_id, marketplace_id, listed_stock_before, "
            "listed_stock_after, quantity_change, sync_run_id FROM marketplace_stock_history "
            "WHERE variation_id = :variation_id AND change_type IN :types ORDER BY id"
        ).bindparams(sa.bindparam("types", expanding=True)),
        {"variation_id": variation_id, "types": [change_type.value for change_type in ChangeType]},
    )
    return [tuple(row) for row in rows]


@requires_mysql
async def test_service_writes_each_of_its_change_types_into_the_migrated_seed_database(
    seed_engine: AsyncEngine,
) -> None:
    for quantity, change_type in zip((11, 12, 13, 14, 15), ChangeType, strict=True):
        async with seed_engine.begin() as conn:
            await write_observations(
                conn,
                marketplace_id=1,
                observations=[StockObservation(variation_id=101, quantity=quantity)],
                change_type=change_type,
                sync_run_id=1,
            )
    async with seed_engine.begin() as conn:
        created = await write_observations(
            conn,
            marketplace_id=4,
            observations=[StockObservation(variation_id=104, quantity=3)],
            change_type=ChangeType.ADD_QUANTITY,
        )
    assert created.created == 1

    async with seed_engine.connect() as conn:
        assert await history_rows(conn, variation_id=101) == [
            ("bulk_sync", 1, 1, 7, 11, 4, 1),
            ("refresh", 1, 1, 11, 12, 1, 1),
            ("add_quantity", 1, 1, 12, 13, 1, 1),
            ("order_sync", 1, 1, 13, 14, 1, 1),
            ("set_quantity", 1, 1, 14, 15, 1, 1),
        ]
        [(change_type, stock_id, *_rest)] = await history_rows(conn, variation_id=104)
        assert change_type == "add_quantity" and stock_id is not None
        stock = (
            (await conn.execute(sa.text("SELECT * FROM marketplace_stock WHERE id = 1")))
            .mappings()
            .one()
        )
        listed = (
            await conn.execute(sa.text("SELECT listed_stock FROM variation WHERE id = 101"))
        ).scalar_one()
    assert (stock["listed_stock"], stock["locked_stock"], stock["available_stock"]) == (15, 1, 14)
    # The seed application's own columns of the row are left as they were.
    assert stock["manual_adjustment"] == 2
    assert stock["formula"] == '{"type": "percentage", "value": 80, "round": "down"}'
    assert stock["buffer_percentage"] == Decimal("10.00")
    assert (stock["min_threshold"], stock["max_threshold"], stock["admin_id"]) == (1, 20, 1)
    assert listed == 15 + 2


@requires_mysql
async def test_service_writes_each_run_status_into_the_migrated_seed_database(
    seed_engine: AsyncEngine,
) -> None:
    logs = table_of(StockSyncLog)
    ids = []
    async with seed_engine.begin() as conn:
        for status in RunStatus:
            result = await conn.execute(
                sa.insert(logs).values(
                    marketplace_id=1,
                    status=status.value,
                    trigger=RunTrigger.SCHEDULE.value,
                    dry_run=True,
                    started_at=utcnow(),
                    completed_at=None if status is RunStatus.RUNNING else utcnow(),
                    api_calls=3,
                    pages_fetched=2,
                    pages_expected=2,
                    markets='{"fr-fr": {"status": "ok", "pages": 2, "listings": 40, "count": 40}}',
                    error_details="[]",
                )
            )
            assert result.inserted_primary_key is not None
            ids.append(result.inserted_primary_key[0])

    async with seed_engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(logs.c.status, logs.c.trigger, logs.c.dry_run, logs.c.pages_fetched)
                .where(logs.c.id.in_(ids))
                .order_by(logs.c.id)
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (status.value, "schedule", True, 2) for status in RunStatus
    ]


async def stock_changed_at(conn: AsyncConnection, stock_id: int) -> datetime | None:
    stock = table_of(MarketplaceStock)
    value: datetime | None = (
        await conn.execute(sa.select(stock.c.stock_changed_at).where(stock.c.id == stock_id))
    ).scalar_one()
    return value


@requires_mysql
async def test_seed_application_stock_updates_stamp_stock_changed_at_to_the_microsecond(
    seed_engine: AsyncEngine,
) -> None:
    """Two updates within one second must still be ordered; the seed's updated_at cannot."""
    laravel_update = sa.text(
        "update `marketplace_stock` set `listed_stock` = :listed, "
        "`available_stock` = :listed - `locked_stock`, `updated_at` = :now where `id` = 4"
    )
    async with seed_engine.begin() as conn:
        assert await stock_changed_at(conn, 4) is None
        await conn.execute(
            sa.text("UPDATE marketplace_stock SET manual_adjustment = 5 WHERE id = 4")
        )
        assert await stock_changed_at(conn, 4) is None

        await conn.execute(laravel_update, {"listed": 5, "now": utcnow()})
        first = await stock_changed_at(conn, 4)
        await conn.execute(laravel_update, {"listed": 6, "now": utcnow()})
        second = await stock_changed_at(conn, 4)

    assert first is not None and second is not None
    assert second > first


@requires_mysql
async def test_seed_application_stock_inserts_stamp_stock_changed_at(
    seed_engine: AsyncEngine,
) -> None:
    async with seed_engine.begin() as conn:
        before = (await conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)"))).scalar_one()
        await conn.execute(
            sa.text(
                "insert into `marketplace_stock` (`variation_id`, `marketplace_id`, "
                "`listed_stock`, `available_stock`, `created_at`, `updated_at`) "
                "values (103, 4, 2, 2, :now, :now)"
            ),
            {"now": utcnow()},
        )
        stamped = (
            await conn.execute(
                sa.text(
                    "SELECT stock_changed_at FROM marketplace_stock "
                    "WHERE variation_id = 103 AND marketplace_id = 4"
                )
            )
        ).scalar_one()
    assert stamped is not None and stamped >= before
