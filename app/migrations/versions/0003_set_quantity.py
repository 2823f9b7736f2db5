"""Set a quantity: history `change_type` `set_quantity`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-20
"""

from __future__ import annotations

from alembic import op

from app.migrations.helpers import extend_enum
from app.models import ALL_CHANGE_TYPES

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        extend_enum(bind, "marketplace_stock_history", "change_type", ALL_CHANGE_TYPES)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")
