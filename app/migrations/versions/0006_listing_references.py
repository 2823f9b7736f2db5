"""Matching by SKU: the listing or offer id found per (variation, marketplace), and a run's
`ambiguous_sku` count.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10
"""

from __future__ import annotations

from alembic import op

from app.migrations.helpers import ensure_table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # Both columns are additive: `marketplace_stock.listing_reference` (nullable) and
    # `stock_sync_logs.ambiguous_sku` (default 0).
    for name in ("marketplace_stock", "stock_sync_logs"):
        ensure_table(bind, name)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")
