"""The orders watcher: its state, the order lines acted on, additions' windows, `order_sync`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from app.migrations.helpers import ensure_table, extend_enum
from app.models import ALL_CHANGE_TYPES

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # The seed's history table has order_id and order_item_id already; others get them.
    for name in (
        "marketplace_stock_history",
        "backmarket_order_watch",
        "backmarket_order_lines",
        "backmarket_stock_additions",
    ):
        ensure_table(bind, name)
    if bind.dialect.name in ("mysql", "mariadb"):
        extend_enum(bind, "marketplace_stock_history", "change_type", ALL_CHANGE_TYPES)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")
