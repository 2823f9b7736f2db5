"""`marketplace.sync_enabled` (the seed's column) where the table lacks it: 1 for every row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op
from sqlmodel import SQLModel

from app.migrations.helpers import add_missing_columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_missing_columns(op.get_bind(), SQLModel.metadata.tables["marketplace"])


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")
