"""Order lines and the update budget per marketplace.

`backmarket_order_lines` gets `marketplace_id` (1 for every existing row: they were all Back
Market's) and its primary key becomes (marketplace_id, line_id), so that two marketplaces' line
ids never collide. `backmarket_listing_updates` gets `marketplace_id` (1 likewise) and an index
on (marketplace_id, sent_at), so that each account counts its own rolling hour.

Nothing is dropped but the order lines' old primary key. MySQL/MariaDB change it in one ALTER
TABLE (the column added, the old key dropped and the new one added together); SQLite cannot
change a primary key in place, so the table is rebuilt the way SQLite documents (a new table,
every row copied, the old one dropped, the new one renamed, its indexes created), inside the
migration's transaction.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-10
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlmodel import SQLModel

from app.migrations.helpers import ensure_table

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("app.migrations")

ORDER_LINES = "backmarket_order_lines"
PRIMARY_KEY = ["marketplace_id", "line_id"]


def upgrade() -> None:
    bind = op.get_bind()
    ensure_table(bind, "backmarket_listing_updates")
    if not sa.inspect(bind).has_table(ORDER_LINES):
        ensure_table(bind, ORDER_LINES)
        return
    if sa.inspect(bind).get_pk_constraint(ORDER_LINES)["constrained_columns"] == PRIMARY_KEY:
        # Created by this release's models (an empty database): nothing to change.
        ensure_table(bind, ORDER_LINES)
        return
    if bind.dialect.name in ("mysql", "mariadb"):
        _rekey_mysql(bind)
    else:
        _rebuild_sqlite(bind)
    ensure_table(bind, ORDER_LINES)


def downgrade() -> None:
    raise NotImplementedError("stock-sync migrations never drop anything")


def _rekey_mysql(bind: sa.Connection) -> None:
    columns = {column["name"] for column in sa.inspect(bind).get_columns(ORDER_LINES)}
    add = (
        "" if "marketplace_id" in columns else "ADD COLUMN marketplace_id INT NOT NULL DEFAULT 1, "
    )
    log.info("keying %s by (marketplace_id, line_id)", ORDER_LINES)
    bind.execute(
        sa.text(
            f"ALTER TABLE `{ORDER_LINES}` {add}"
            "DROP PRIMARY KEY, ADD PRIMARY KEY (marketplace_id, line_id)"
        )
    )


def _rebuild_sqlite(bind: sa.Connection) -> None:
    model = SQLModel.metadata.tables[ORDER_LINES]
    old_columns = [column["name"] for column in sa.inspect(bind).get_columns(ORDER_LINES)]
    copied = [name for name in old_columns if name in model.columns]
    rebuilt_name = f"{ORDER_LINES}_0004"
    rebuilt = sa.Table(
        rebuilt_name,
        sa.MetaData(),
        *(_without_index(column) for column in model.columns),
    )
    log.info("rebuilding %s keyed by (marketplace_id, line_id)", ORDER_LINES)
    rebuilt.create(bind)
    names = ", ".join(f'"{name}"' for name in copied)
    bind.execute(
        sa.text(f'INSERT INTO "{rebuilt_name}" ({names}) SELECT {names} FROM "{ORDER_LINES}"')
    )
    bind.execute(sa.text(f'DROP TABLE "{ORDER_LINES}"'))
    bind.execute(sa.text(f'ALTER TABLE "{rebuilt_name}" RENAME TO "{ORDER_LINES}"'))
    for index in model.indexes:
        index.create(bind)


def _without_index(column: sa.Column[object]) -> sa.Column[object]:
    copy = column._copy()
    copy.index = False
    return copy
