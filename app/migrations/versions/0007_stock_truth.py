"""Stock truth: the seed's soft-delete columns, a run's re-summed variations and its drift.

`variation.deleted_at` and `marketplace_stock.deleted_at` are the seed application's own
columns: a seed database has them and keeps them as they are; any other database gets them,
nullable, so both behave the same. `stock_sync_logs` gains `variations_resummed` and `drift`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from app.migrations.helpers import ensure_table

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for name in ("variation", "marketplace_stock", "stock_sync_logs"):
        ensure_table(bind, name)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")
