"""What every migration does to a table that may already exist: add only what is missing.

Nothing is dropped, renamed or narrowed; enum values are appended, which MySQL/MariaDB do in
place.
"""

from __future__ import annotations

import logging
import re

import sqlalchemy as sa
from alembic import op
from sqlmodel import SQLModel

log = logging.getLogger("app.migrations")


def ensure_table(bind: sa.Connection, name: str) -> None:
    """Create the table from the models when missing, else add its missing columns and indexes."""
    table = SQLModel.metadata.tables[name]
    if not sa.inspect(bind).has_table(name):
        table.create(bind)
        return
    add_missing_columns(bind, table)
    add_missing_indexes(bind, table)


def add_missing_columns(bind: sa.Connection, table: sa.Table) -> None:
    existing = {column["name"] for column in sa.inspect(bind).get_columns(table.name)}
    for column in table.columns:
        if column.name in existing:
            continue
        added = column._copy()
        # A NOT NULL column added to a table with rows needs a default to fill them.
        if not added.nullable and added.server_default is None:
            added.nullable = True
        added.primary_key = False
        added.unique = False
        added.index = False
        added.foreign_keys.clear()
        added.constraints.clear()
        log.info("adding column %s.%s", table.name, column.name)
        op.add_column(table.name, added)


def add_missing_indexes(bind: sa.Connection, table: sa.Table) -> None:
    inspector = sa.inspect(bind)
    covered = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table.name)}
    covered |= {tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table.name)}
    for index in table.indexes:
        columns = tuple(column.name for column in index.columns)
        if columns in covered or any(existing[: len(columns)] == columns for existing in covered):
            continue
        log.info("adding index %s on %s%s", index.name, table.name, columns)
        op.create_index(
            index.name or f"ix_{table.name}_{'_'.join(columns)}", table.name, list(columns)
        )
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            columns = tuple(column.name for column in constraint.columns)
            if columns not in covered:
                log.info("adding unique constraint on %s%s", table.name, columns)
                name = constraint.name if isinstance(constraint.name, str) else None
                op.create_unique_constraint(name, table.name, list(columns))


def extend_enum(bind: sa.Connection, table: str, column: str, wanted: tuple[str, ...]) -> None:
    row = bind.execute(
        sa.text(
            "SELECT COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table AND COLUMN_NAME = :column"
        ),
        {"table": table, "column": column},
    ).one()
    column_type, is_nullable, default = row
    if not str(column_type).lower().startswith("enum("):
        return
    current = re.findall(r"'((?:[^']|'')*)'", str(column_type))
    missing = [value for value in wanted if value not in current]
    if not missing:
        return
    values = ", ".join("'" + value.replace("'", "''") + "'" for value in (*current, *missing))
    null_sql = "NULL" if is_nullable == "YES" else "NOT NULL"
    default_sql = ""
    if default is not None:
        # MariaDB reports the default quoted, MySQL unquoted.
        default_sql = " DEFAULT '" + str(default).strip("'").replace("'", "''") + "'"
    log.info("extending enum %s.%s with %s", table, column, missing)
    bind.execute(
        sa.text(f"ALTER TABLE `{table}` MODIFY `{column}` ENUM({values}) {null_sql}{default_sql}")
    )
