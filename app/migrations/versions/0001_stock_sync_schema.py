"""The stock-sync schema, on an empty database or on top of the seed application's tables.

Each table is created when missing. When it exists (the seed application's database), only
what is missing is added: columns, indexes, enum values, the change-time triggers. Nothing
is dropped, renamed or narrowed; enum values are appended, which MySQL/MariaDB do in place.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlmodel import SQLModel

from app.migrations.helpers import add_missing_columns, add_missing_indexes, extend_enum
from app.models import ALL_CHANGE_TYPES, ALL_RUN_STATUSES

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("app.migrations")

TABLE_ORDER = (
    "marketplace",
    "variation",
    "marketplace_stock",
    "marketplace_stock_history",
    "stock_sync_logs",
    "idempotency_keys",
    "backmarket_listing_updates",
)


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLE_ORDER:
        table = SQLModel.metadata.tables[name]
        if not sa.inspect(bind).has_table(name):
            table.create(bind)
            continue
        add_missing_columns(bind, table)
        add_missing_indexes(bind, table)
    if bind.dialect.name in ("mysql", "mariadb"):
        extend_enum(bind, "marketplace_stock_history", "change_type", ALL_CHANGE_TYPES)
        extend_enum(bind, "stock_sync_logs", "status", ALL_RUN_STATUSES)
        _create_mysql_change_triggers(bind)
    else:
        _create_sqlite_change_triggers(bind)
    _ensure_backmarket_marketplace(bind)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")


CHANGED_COLUMNS_MYSQL = (
    "NOT (NEW.listed_stock <=> OLD.listed_stock AND NEW.locked_stock <=> OLD.locked_stock)"
)


def _create_mysql_change_triggers(bind: sa.Connection) -> None:
    existing = set(
        bind.execute(
            sa.text(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
            )
        ).scalars()
    )
    statements = {
        "marketplace_stock_changed_on_update": (
            "CREATE TRIGGER marketplace_stock_changed_on_update BEFORE UPDATE ON marketplace_stock "
            f"FOR EACH ROW BEGIN IF {CHANGED_COLUMNS_MYSQL} THEN "
            "SET NEW.stock_changed_at = UTC_TIMESTAMP(6); END IF; END"
        ),
        "marketplace_stock_changed_on_insert": (
            "CREATE TRIGGER marketplace_stock_changed_on_insert BEFORE INSERT ON marketplace_stock "
            "FOR EACH ROW SET NEW.stock_changed_at = COALESCE(NEW.stock_changed_at, UTC_TIMESTAMP(6))"
        ),
    }
    for name, statement in statements.items():
        if name in existing:
            continue
        try:
            bind.execute(sa.text(statement))
        except sa.exc.DBAPIError as exc:
            # Without TRIGGER privilege the service still stamps its own writes; only changes
            # made by other applications then go unseen by the newer-value guard.
            log.warning(
                "could not create trigger %s (%s); other writers' changes go undetected",
                name,
                exc.orig,
            )


def _create_sqlite_change_triggers(bind: sa.Connection) -> None:
    now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    bind.execute(
        sa.text(
            "CREATE TRIGGER IF NOT EXISTS marketplace_stock_changed_on_update "
            "AFTER UPDATE OF listed_stock, locked_stock ON marketplace_stock "
            "WHEN NEW.listed_stock IS NOT OLD.listed_stock OR NEW.locked_stock IS NOT OLD.locked_stock "
            f"BEGIN UPDATE marketplace_stock SET stock_changed_at = {now} WHERE id = NEW.id; END"
        )
    )
    bind.execute(
        sa.text(
            "CREATE TRIGGER IF NOT EXISTS marketplace_stock_changed_on_insert "
            "AFTER INSERT ON marketplace_stock WHEN NEW.stock_changed_at IS NULL "
            f"BEGIN UPDATE marketplace_stock SET stock_changed_at = {now} WHERE id = NEW.id; END"
        )
    )


def _ensure_backmarket_marketplace(bind: sa.Connection) -> None:
    marketplace = SQLModel.metadata.tables["marketplace"]
    row = bind.execute(
        sa.select(marketplace.c.id, marketplace.c.name).where(marketplace.c.id == 1)
    ).first()
    if row is not None:
        if row.name != "BackMarket":
            log.warning("marketplace 1 is named %r, not 'BackMarket'; left as it is", row.name)
        return
    taken = bind.execute(
        sa.select(marketplace.c.id).where(marketplace.c.name == "BackMarket")
    ).first()
    if taken is not None:
        log.warning("'BackMarket' exists as marketplace %s, not 1; left as it is", taken.id)
        return
    bind.execute(sa.insert(marketplace).values(id=1, name="BackMarket"))
