"""Tables (named as in the seed application's schema) and the service's API schemas.

The tables carry only the columns this service reads or writes; a database migrated from
the seed application keeps its other columns, which the service never touches.
All times are naive UTC (every MySQL connection runs with time_zone '+00:00').
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlmodel import Field, SQLModel

# SQLite only auto-increments an INTEGER PRIMARY KEY, so big keys fall back to INTEGER there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UnsignedBigId = (
    sa.BigInteger()
    .with_variant(mysql.BIGINT(unsigned=True), "mysql")
    .with_variant(sa.Integer(), "sqlite")
)
# Change detection needs sub-second resolution (the seed's TIMESTAMP columns are whole seconds).
PreciseTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


class ChangeType(enum.StrEnum):
    BULK_SYNC = "bulk_sync"
    REFRESH = "refresh"
    ADD_QUANTITY = "add_quantity"
    ORDER_SYNC = "order_sync"
    SET_QUANTITY = "set_quantity"


# The largest values of the id columns: INT (variation.id, marketplace_id in the service's
# tables) and BIGINT (stock_sync_logs.id; SQLite's INTEGER is signed 64-bit).
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1

SEED_CHANGE_TYPES = (
    "order_created",
    "order_completed",
    "order_cancelled",
    "topup",
    "manual",
    "reconciliation",
    "api_sync",
    "lock",
    "unlock",
)
ALL_CHANGE_TYPES = (*SEED_CHANGE_TYPES, *(c.value for c in ChangeType))


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"


SEED_RUN_STATUSES = ("running", "completed", "failed", "cancelled")
ALL_RUN_STATUSES = (*SEED_RUN_STATUSES, RunStatus.PARTIAL.value)


class RunTrigger(enum.StrEnum):
    API = "api"
    SCHEDULE = "schedule"
    CLI = "cli"


def utcnow() -> datetime:
    """Naive UTC, the form every time column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class Marketplace(SQLModel, table=True):
    __tablename__ = "marketplace"

    id: int | None = Field(default=None, sa_column=sa.Column(UnsignedBigId, primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(255), nullable=False, unique=True))
    # 0: no scheduled sync, no orders watcher and no API-started bulk sync for this marketplace
    # (the seed's column; read when a sync or poll is due).
    sync_enabled: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.text("1"))
    )
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )


class Variation(SQLModel, table=True):
    __tablename__ = "variation"

    id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True))
    reference_id: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True, index=True)
    )
    reference_uuid: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True, index=True)
    )
    sku: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    state: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    listed_stock: int | None = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=True, server_default="0")
    )
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    # Set by the back office to delete softly: such a variation is neither matched nor written.
    deleted_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )


class MarketplaceStock(SQLModel, table=True):
    __tablename__ = "marketplace_stock"
    __table_args__ = (
        sa.UniqueConstraint(
            "variation_id",
            "marketplace_id",
            name="marketplace_stock_variation_id_marketplace_id_unique",
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(UnsignedBigId, primary_key=True))
    variation_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("variation.id", ondelete="CASCADE"), nullable=False
        )
    )
    marketplace_id: int = Field(
        sa_column=sa.Column(
            UnsignedBigId, sa.ForeignKey("marketplace.id", ondelete="CASCADE"), nullable=False
        )
    )
    listed_stock: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    locked_stock: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    available_stock: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    last_api_quantity: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, nullable=True)
    )
    last_synced_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    # The listing's or offer's own id on this marketplace, as the last bulk sync or live call
    # found it: how live calls name the listing of a marketplace matched by SKU.
    listing_reference: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True)
    )
    # When listed or locked stock last changed, by any writer (kept by database triggers too).
    stock_changed_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    # Set by the back office to delete softly: such a row is neither written nor summed.
    deleted_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )


class MarketplaceStockHistory(SQLModel, table=True):
    __tablename__ = "marketplace_stock_history"

    id: int | None = Field(default=None, sa_column=sa.Column(UnsignedBigId, primary_key=True))
    marketplace_stock_id: int | None = Field(
        default=None, sa_column=sa.Column(UnsignedBigId, nullable=True)
    )
    variation_id: int = Field(sa_column=sa.Column(UnsignedBigId, nullable=False, index=True))
    marketplace_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    listed_stock_before: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    listed_stock_after: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    locked_stock_before: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    locked_stock_after: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    available_stock_before: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    available_stock_after: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    quantity_change: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    change_type: str = Field(
        sa_column=sa.Column(
            sa.Enum(
                *ALL_CHANGE_TYPES, name="change_type", native_enum=True, create_constraint=False
            ),
            nullable=False,
        )
    )
    reference_id: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True)
    )
    notes: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    sync_run_id: int | None = Field(
        default=None, sa_column=sa.Column(UnsignedBigId, nullable=True, index=True)
    )
    idempotency_key: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True)
    )
    # The Back Market order (and order line) an `order_sync` change was made for.
    order_id: int | None = Field(default=None, sa_column=sa.Column(UnsignedBigId, nullable=True))
    order_item_id: int | None = Field(
        default=None, sa_column=sa.Column(UnsignedBigId, nullable=True)
    )
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )


class StockSyncLog(SQLModel, table=True):
    """One row per sync run; the seed's own columns are filled too so its screens keep working."""

    __tablename__ = "stock_sync_logs"

    id: int | None = Field(default=None, sa_column=sa.Column(UnsignedBigId, primary_key=True))
    marketplace_id: int = Field(
        default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1")
    )
    status: str = Field(
        default=RunStatus.RUNNING.value,
        sa_column=sa.Column(
            sa.Enum(
                *ALL_RUN_STATUSES, name="run_status", native_enum=True, create_constraint=False
            ),
            nullable=False,
            server_default="running",
        ),
    )
    total_records: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    synced_count: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    skipped_count: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    error_count: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    error_details: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    summary: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(PreciseTime, nullable=False)
    )
    completed_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    duration_seconds: float | None = Field(
        default=None, sa_column=sa.Column(sa.Float, nullable=True)
    )
    trigger: str = Field(
        default=RunTrigger.API.value,
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="api"),
    )
    dry_run: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    api_calls: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    pages_fetched: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    pages_expected: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    listings_seen: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    matched: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    updated: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    unchanged: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    skipped_newer: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    not_found: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    unknown_listings: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    imported: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    ambiguous_sku: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    markets: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    variations_resummed: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    # The run's `Drift`, as JSON.
    drift: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.TIMESTAMP, nullable=True)
    )


class IdempotencyKey(SQLModel, table=True):
    """What an add-quantity request with an Idempotency-Key did, kept for replays."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("idempotency_key", name="idempotency_keys_key_unique"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    idempotency_key: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    request_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    variation_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    marketplace_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    # in_progress | unknown (sent, no answer) | succeeded
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    previous_quantity: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, nullable=True)
    )
    target_quantity: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, nullable=True)
    )
    response_json: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(PreciseTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=sa.Column(PreciseTime, nullable=False, index=True))


class ListingUpdateBudget(SQLModel, table=True):
    """One row per listing update sent to a marketplace: each account's rolling-hour budget,
    shared by every process."""

    __tablename__ = "backmarket_listing_updates"
    __table_args__ = (
        sa.Index("ix_backmarket_listing_updates_marketplace_sent", "marketplace_id", "sent_at"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    sent_at: datetime = Field(sa_column=sa.Column(PreciseTime, nullable=False, index=True))
    listing_ref: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    # Rows from before marketplaces were told apart were all Back Market's, marketplace 1.
    marketplace_id: int = Field(
        default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1")
    )


class OrderWatch(SQLModel, table=True):
    """The orders watcher's state, one row per feed, shared by every process."""

    __tablename__ = "backmarket_order_watch"

    feed: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    # Back Market's newest `date_modification` whose orders are all written (naive UTC).
    watermark: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    last_poll_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    last_poll_calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    last_poll_orders: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    last_poll_listings: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    last_poll_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )


class OrderLineSeen(SQLModel, table=True):
    """Each marketplace order line the service has acted on, so a repeat is harmless.

    `compensated_at` is set once the line's units were subtracted again because an addition
    in flight had overwritten the sale: by add-quantity itself or, for a line the marketplace
    showed only later, by the watcher. The primary key makes that happen at most once; it is
    per marketplace, whose line ids are their own.
    """

    __tablename__ = "backmarket_order_lines"

    # Lines recorded before marketplaces were told apart were all Back Market's, marketplace 1.
    marketplace_id: int = Field(
        default=1,
        sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False, server_default="1"),
    )
    line_id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    order_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    listing_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    sku: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    variation_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, nullable=True, index=True)
    )
    quantity: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    state: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    order_modified_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    seen_at: datetime = Field(sa_column=sa.Column(PreciseTime, nullable=False))
    compensated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(PreciseTime, nullable=True)
    )
    compensated_by: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(32), nullable=True)
    )


class StockAddition(SQLModel, table=True):
    """One add-quantity's read-to-write window on Back Market, kept so that a sale made inside
    it and shown by Back Market only later is still subtracted (by the watcher)."""

    __tablename__ = "backmarket_stock_additions"

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True))
    variation_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False, index=True))
    marketplace_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    listing_ref: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    # From a margin before the read was sent to a margin after the update's answer came
    # (naive UTC): a sale created inside it may have been overwritten by the update.
    window_start: datetime = Field(sa_column=sa.Column(PreciseTime, nullable=False, index=True))
    window_end: datetime = Field(sa_column=sa.Column(PreciseTime, nullable=False))
    added: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    idempotency_key: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(255), nullable=True)
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """Stored naive UTC → aware UTC for API answers."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def table_of(model: Any) -> sa.Table:
    table: sa.Table = model.__table__
    return table
